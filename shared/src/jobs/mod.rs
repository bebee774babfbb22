//! Scheduled jobs as one testable step each, plus what every job shares: validating what
//! triggered it, and the lease that keeps two runs of one job from overlapping.

pub mod lease;
pub mod metrics;
pub mod offer_expiry;
pub mod periods;
pub mod refresh;
pub mod trigger;
