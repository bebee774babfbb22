//! A circuit breaker for Redis: after repeated failures, skip L2 for a cool-down instead of
//! paying a timeout on every read, then let a single probe decide whether to close again.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::clock::millis;
use crate::model::EpochMillis;

/// The breaker's state at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BreakerState {
    /// Calls go to Redis.
    Closed,
    /// Calls skip Redis until `until`.
    Open {
        /// End of the cool-down.
        until: EpochMillis,
    },
    /// The cool-down is over; one probe call is allowed through.
    HalfOpen,
}

/// Consecutive-failure circuit breaker.
///
/// ## Behavior
/// - Closed: every call is allowed; `threshold` consecutive failures open it.
/// - Open: calls are refused until the cool-down ends.
/// - Half-open: one caller is let through as a probe; its success closes the breaker, its
///   failure re-opens it for another cool-down. A probe that never reports (its future was
///   dropped) is replaced by another after one cool-down, so the breaker cannot stick.
/// - Lock-free: state lives in atomics, so the hot path never blocks.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown_ms: i64,
    consecutive_failures: AtomicU32,
    /// 0 when closed; otherwise the end of the cool-down.
    open_until: AtomicI64,
    /// 0 when no probe is out; otherwise when the probe started.
    probe_started: AtomicI64,
}

impl CircuitBreaker {
    /// A closed breaker that opens after `threshold` consecutive failures for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        CircuitBreaker {
            threshold: threshold.max(1),
            cooldown_ms: millis(cooldown),
            consecutive_failures: AtomicU32::new(0),
            open_until: AtomicI64::new(0),
            probe_started: AtomicI64::new(0),
        }
    }

    /// State at `now`.
    pub fn state(&self, now: EpochMillis) -> BreakerState {
        match self.open_until.load(Ordering::Acquire) {
            0 => BreakerState::Closed,
            until if now < until => BreakerState::Open { until },
            _ => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go to Redis now. In half-open state only one caller gets `true`.
    pub fn allow(&self, now: EpochMillis) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen => {
                let started = self.probe_started.load(Ordering::Acquire);
                let stuck = started != 0 && now - started >= self.cooldown_ms;
                (started == 0 || stuck)
                    && self
                        .probe_started
                        .compare_exchange(started, now.max(1), Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
            }
        }
    }

    /// Records a successful call: closes the breaker.
    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Release);
        self.open_until.store(0, Ordering::Release);
        self.probe_started.store(0, Ordering::Release);
    }

    /// Records a failed call. Returns `true` if this failure opened the breaker.
    pub fn record_failure(&self, now: EpochMillis) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let was_probe = self.probe_started.swap(0, Ordering::AcqRel) != 0;
        if was_probe || failures >= self.threshold {
            let previous = self
                .open_until
                .swap(now + self.cooldown_ms, Ordering::AcqRel);
            return previous == 0 || was_probe;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_after_cooldown() {
        let breaker = CircuitBreaker::new(3, Duration::from_secs(5));
        assert!(breaker.allow(0));
        assert!(!breaker.record_failure(10));
        assert!(!breaker.record_failure(20));
        assert!(breaker.record_failure(30), "third failure opens");
        assert_eq!(breaker.state(31), BreakerState::Open { until: 5_030 });
        assert!(!breaker.allow(5_029));

        // Cool-down over: exactly one probe.
        assert!(breaker.allow(5_030));
        assert!(!breaker.allow(5_031));
        breaker.record_success();
        assert_eq!(breaker.state(5_032), BreakerState::Closed);
        assert!(breaker.allow(5_032));
    }

    #[test]
    fn a_failed_probe_reopens_for_another_cooldown() {
        let breaker = CircuitBreaker::new(1, Duration::from_secs(1));
        breaker.record_failure(0);
        assert!(breaker.allow(1_000));
        assert!(breaker.record_failure(1_001));
        assert_eq!(breaker.state(1_002), BreakerState::Open { until: 2_001 });
    }

    #[test]
    fn success_resets_the_failure_count() {
        let breaker = CircuitBreaker::new(2, Duration::from_secs(1));
        breaker.record_failure(0);
        breaker.record_success();
        assert!(!breaker.record_failure(1));
        assert_eq!(breaker.state(2), BreakerState::Closed);
    }

    #[test]
    fn a_lost_probe_is_replaced_after_a_cooldown() {
        let breaker = CircuitBreaker::new(1, Duration::from_secs(1));
        breaker.record_failure(0);
        assert!(breaker.allow(1_000)); // this probe never reports back
        assert!(!breaker.allow(1_500));
        assert!(breaker.allow(2_000));
    }
}
