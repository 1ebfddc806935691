//! The two state machines, as data: which administrative and delivery
//! transitions are allowed. Everything else is refused and recorded as an
//! anomaly by the caller.

use crate::model::AdminStatus;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use AdminStatus::*;

/// Allowed administrative transitions: (from, to).
const ADMIN_TRANSITIONS: &[(AdminStatus, &[AdminStatus])] = &[
    (
        Submitted,
        &[
            Registered, InProgress, Approved, Rejected, Withdrawn, Cancelled,
        ],
    ),
    (
        Registered,
        &[
            InProgress,
            IntegrationRequested,
            Approved,
            Rejected,
            Withdrawn,
            Cancelled,
        ],
    ),
    (
        InProgress,
        &[
            IntegrationRequested,
            Approved,
            Rejected,
            Withdrawn,
            Cancelled,
        ],
    ),
    (
        IntegrationRequested,
        &[Integrated, Rejected, Withdrawn, Cancelled],
    ),
    (
        Integrated,
        &[
            InProgress,
            IntegrationRequested,
            Approved,
            Rejected,
            Withdrawn,
            Cancelled,
        ],
    ),
];

/// Whether the administrative status may go from `from` to `to`.
/// Terminal statuses allow nothing.
pub fn admin_transition_allowed(from: AdminStatus, to: AdminStatus) -> bool {
    ADMIN_TRANSITIONS
        .iter()
        .find(|(f, _)| *f == from)
        .is_some_and(|(_, tos)| tos.contains(&to))
}

/// What the hub's plumbing did with the practice's current delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    Queued,
    Sent,
    Acknowledged,
    Retrying,
    OutcomeUnknown,
    DeadLettered,
    Cancelled,
}

impl DeliveryStatus {
    /// Every status.
    pub const ALL: [DeliveryStatus; 7] = [
        Self::Queued,
        Self::Sent,
        Self::Acknowledged,
        Self::Retrying,
        Self::OutcomeUnknown,
        Self::DeadLettered,
        Self::Cancelled,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Sent => "SENT",
            Self::Acknowledged => "ACKNOWLEDGED",
            Self::Retrying => "RETRYING",
            Self::OutcomeUnknown => "OUTCOME_UNKNOWN",
            Self::DeadLettered => "DEAD_LETTERED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Whether the delivery is finished, for good or not.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            Self::Acknowledged | Self::DeadLettered | Self::Cancelled
        )
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown delivery status '{s}'"))
    }
}

/// Allowed delivery transitions. A settled delivery goes back to `Queued`
/// only for a replay or a new operation (a withdrawal).
const DELIVERY_TRANSITIONS: &[(DeliveryStatus, &[DeliveryStatus])] = {
    use DeliveryStatus as D;
    &[
        (D::Queued, &[D::Sent, D::Cancelled]),
        (
            D::Sent,
            &[
                D::Acknowledged,
                D::Retrying,
                D::OutcomeUnknown,
                D::DeadLettered,
            ],
        ),
        (D::Retrying, &[D::Sent, D::Cancelled, D::DeadLettered]),
        // A late answer to an attempt whose lease ran out is still the
        // vendor's answer to that operation id.
        (
            D::OutcomeUnknown,
            &[D::Sent, D::Cancelled, D::DeadLettered, D::Acknowledged],
        ),
        (D::Acknowledged, &[D::Queued]),
        (D::DeadLettered, &[D::Queued, D::Cancelled, D::Acknowledged]),
        (D::Cancelled, &[D::Queued]),
    ]
};

/// Whether the delivery status may go from `from` to `to`.
pub fn delivery_transition_allowed(from: DeliveryStatus, to: DeliveryStatus) -> bool {
    DELIVERY_TRANSITIONS
        .iter()
        .find(|(f, _)| *f == from)
        .is_some_and(|(_, tos)| tos.contains(&to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_statuses_allow_nothing() {
        for from in AdminStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in AdminStatus::ALL {
                assert!(!admin_transition_allowed(from, to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn nothing_goes_back_to_submitted_and_no_self_loops() {
        for from in AdminStatus::ALL {
            assert!(!admin_transition_allowed(from, Submitted), "{from}");
            assert!(!admin_transition_allowed(from, from), "{from}");
        }
    }

    #[test]
    fn every_open_status_can_be_withdrawn_and_concluded() {
        for from in AdminStatus::ALL.into_iter().filter(|s| !s.is_terminal()) {
            assert!(admin_transition_allowed(from, Withdrawn), "{from}");
            assert!(admin_transition_allowed(from, Rejected), "{from}");
            assert!(admin_transition_allowed(from, Cancelled), "{from}");
        }
    }

    #[test]
    fn integration_cycle() {
        assert!(admin_transition_allowed(Registered, IntegrationRequested));
        assert!(admin_transition_allowed(IntegrationRequested, Integrated));
        assert!(!admin_transition_allowed(IntegrationRequested, Approved));
        assert!(admin_transition_allowed(Integrated, Approved));
    }

    #[test]
    fn exhaustive_delivery_table_matches_intent() {
        use DeliveryStatus as D;
        let allowed: Vec<(D, D)> = D::ALL
            .into_iter()
            .flat_map(|f| D::ALL.into_iter().map(move |t| (f, t)))
            .filter(|(f, t)| delivery_transition_allowed(*f, *t))
            .collect();
        assert_eq!(allowed.len(), 18);
        assert!(delivery_transition_allowed(D::Sent, D::Acknowledged));
        assert!(delivery_transition_allowed(D::DeadLettered, D::Queued));
        assert!(!delivery_transition_allowed(D::Acknowledged, D::Sent));
        assert!(!delivery_transition_allowed(D::Queued, D::Acknowledged));
    }

    #[test]
    fn names_round_trip() {
        for d in DeliveryStatus::ALL {
            assert_eq!(d.as_str().parse::<DeliveryStatus>().unwrap(), d);
        }
    }
}
