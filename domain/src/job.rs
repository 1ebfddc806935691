//! Deliveries in the outbox: a job's states, a claimed attempt, and how an
//! attempt ended.

use crate::adapter::{DeliveryError, VendorReply};
use crate::model::Operation;
use crate::retry::RetryDecision;
use std::fmt;
use std::str::FromStr;

/// Where a delivery job is in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for its `next_attempt_at`.
    Due,
    /// An attempt is running (claimed by a worker).
    InFlight,
    /// The vendor accepted the work; its result is fetched by polling.
    Polling,
    /// A poll is running.
    PollInFlight,
    /// Finished: the vendor answered (accepted or refused on the merits).
    Done,
    /// Dead-lettered: out of attempts, or a failure retrying cannot fix.
    Dead,
    /// Cancelled (the practice was withdrawn before the vendor answered).
    Cancelled,
}

impl JobState {
    /// Every state, for listings and tests.
    pub const ALL: [JobState; 7] = [
        JobState::Due,
        JobState::InFlight,
        JobState::Polling,
        JobState::PollInFlight,
        JobState::Done,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Due => "due",
            JobState::InFlight => "in_flight",
            JobState::Polling => "polling",
            JobState::PollInFlight => "poll_in_flight",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether a worker is running it now.
    pub fn is_running(self) -> bool {
        matches!(self, JobState::InFlight | JobState::PollInFlight)
    }

    /// Whether the job will not run again by itself.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Dead | JobState::Cancelled)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown job state '{s}'"))
    }
}

/// A delivery handed to a worker.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub operation_id: String,
    pub practice_id: String,
    pub tenant_id: String,
    pub adapter: String,
    pub operation: Operation,
    /// This attempt's number (1-based).
    pub attempt: u32,
    pub max_attempts: u32,
    /// The trace context of the call that created the delivery.
    pub traceparent: Option<String>,
    /// The hub instance whose lease holds this attempt.
    pub owner: String,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum AttemptResult {
    /// The vendor accepted the request; its reply is applied.
    Delivered(VendorReply),
    /// The vendor refused the practice on its merits.
    Rejected(DeliveryError),
    /// The attempt failed; the policy already decided what comes next.
    Failed(DeliveryError, RetryDecision),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_stored_spelling() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        assert!("flying".parse::<JobState>().is_err());
    }
}
