//! What happens after a delivery attempt fails: the failure class, the
//! attempt budget and the vendor's `Retry-After` decide.
//!
//! Delays come from backon's exponential builder (with jitter); the retry
//! loop itself is durable (the job table), so only the delay schedule is
//! borrowed, not backon's in-memory loop.

use crate::adapter::FailureClass;
use backon::BackoffBuilder;
use std::time::Duration;

/// The retry schedule of a route.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

/// The next step for a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after the delay (same operation id).
    RetryAfter(Duration),
    /// Give up: the delivery is dead-lettered.
    DeadLetter,
}

impl RetryPolicy {
    /// Decides after attempt number `attempts` (1-based) failed with `class`.
    pub fn decide(
        &self,
        class: FailureClass,
        attempts: u32,
        retry_after: Option<Duration>,
    ) -> RetryDecision {
        match class {
            FailureClass::Permanent => RetryDecision::DeadLetter,
            // A business rejection is an outcome, never retried; callers
            // handle it before asking.
            FailureClass::Rejection => RetryDecision::DeadLetter,
            FailureClass::Transient | FailureClass::OutcomeUnknown
                if attempts >= self.max_attempts =>
            {
                RetryDecision::DeadLetter
            }
            FailureClass::Transient | FailureClass::OutcomeUnknown => {
                let backoff = self.backoff(attempts);
                // Honour the vendor's wish, but never beyond our own ceiling.
                let delay = retry_after.map_or(backoff, |ra| ra.max(backoff).min(self.max_backoff));
                RetryDecision::RetryAfter(delay)
            }
        }
    }

    /// The jittered exponential delay after attempt `attempts`.
    fn backoff(&self, attempts: u32) -> Duration {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempts.saturating_sub(1) as usize)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(60),
    };

    #[test]
    fn permanent_failures_are_never_retried() {
        assert_eq!(
            POLICY.decide(FailureClass::Permanent, 1, None),
            RetryDecision::DeadLetter
        );
    }

    #[test]
    fn transient_failures_back_off_then_dead_letter() {
        let RetryDecision::RetryAfter(d1) = POLICY.decide(FailureClass::Transient, 1, None) else {
            panic!("expected a retry")
        };
        // Jitter adds up to the delay itself: 1 s ≤ d1 < 2 s.
        assert!(
            d1 >= Duration::from_secs(1) && d1 < Duration::from_secs(2),
            "{d1:?}"
        );
        let RetryDecision::RetryAfter(d3) = POLICY.decide(FailureClass::Transient, 3, None) else {
            panic!("expected a retry")
        };
        assert!(d3 >= Duration::from_secs(4), "{d3:?}");
        assert_eq!(
            POLICY.decide(FailureClass::Transient, 4, None),
            RetryDecision::DeadLetter
        );
        assert_eq!(
            POLICY.decide(FailureClass::OutcomeUnknown, 4, None),
            RetryDecision::DeadLetter
        );
    }

    #[test]
    fn retry_after_is_honoured_within_the_ceiling() {
        let d = POLICY.decide(FailureClass::Transient, 1, Some(Duration::from_secs(30)));
        assert_eq!(d, RetryDecision::RetryAfter(Duration::from_secs(30)));
        let d = POLICY.decide(FailureClass::Transient, 1, Some(Duration::from_secs(3600)));
        assert_eq!(d, RetryDecision::RetryAfter(Duration::from_secs(60)));
    }
}
