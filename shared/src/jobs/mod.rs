//! Scheduled jobs as one testable step each, plus the clock and deadline they are given.

pub mod periods;
pub mod refresh;
