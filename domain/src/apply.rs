//! Planning the effect of a vendor's answer on a practice, as a pure
//! function: the store runs the plan inside its transaction. Keeping this
//! apart makes the rules testable without a database and identical for
//! synchronous replies and asynchronous results.

use super::practice::{EventDraft, EventKind, EventSource};
use super::status::admin_transition_allowed;
use crate::adapter::VendorReply;
use crate::model::AdminStatus;
use chrono::{DateTime, Duration, Utc};

/// What the plan needs to know about the practice.
#[derive(Debug, Clone)]
pub struct StatusState {
    pub status: AdminStatus,
    pub legal_term_days: u32,
}

/// The changes a reply causes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplyPlan {
    /// Events to append (a status change, or an anomaly).
    pub events: Vec<EventDraft>,
    /// The new administrative status, when it changes.
    pub new_status: Option<AdminStatus>,
    /// Set when the practice reaches a terminal status.
    pub concluded_at: Option<DateTime<Utc>>,
    /// Set when the practice is registered: the legal term runs from here.
    pub legal_deadline: Option<DateTime<Utc>>,
}

/// Plans the administrative effect of `reply` reported by `actor`.
pub fn plan_reply(
    state: &StatusState,
    reply: &VendorReply,
    actor: &str,
    now: DateTime<Utc>,
) -> ReplyPlan {
    let mut plan = ReplyPlan::default();
    let Some(to) = reply.status else {
        return plan;
    };
    if to == state.status {
        // Repeated report (a re-sent callback, a re-read file): nothing new.
        return plan;
    }
    let occurred = reply.occurred_at.unwrap_or(now);
    let mut draft = EventDraft::status(EventSource::Adapter, actor, state.status, to);
    draft.vendor_code = reply.vendor_code.clone();
    draft.reason = reply.reason.clone();
    draft.occurred_at = Some(occurred);
    if !admin_transition_allowed(state.status, to) {
        draft.kind = EventKind::Anomaly;
        draft.reason = Some(format!(
            "{actor} reported {to} while the practice is {}: not applied{}",
            state.status,
            reply
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
        plan.events.push(draft);
        return plan;
    }
    plan.events.push(draft);
    plan.new_status = Some(to);
    if to == AdminStatus::Registered {
        plan.legal_deadline = Some(occurred + Duration::days(state.legal_term_days.into()));
    }
    if to.is_terminal() {
        plan.concluded_at = Some(occurred);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: AdminStatus) -> StatusState {
        StatusState {
            status,
            legal_term_days: 30,
        }
    }

    fn reply(status: AdminStatus) -> VendorReply {
        VendorReply {
            status: Some(status),
            vendor_code: Some("V".into()),
            ..VendorReply::default()
        }
    }

    #[test]
    fn registration_starts_the_legal_clock() {
        let now = Utc::now();
        let plan = plan_reply(
            &state(AdminStatus::Submitted),
            &reply(AdminStatus::Registered),
            "a",
            now,
        );
        assert_eq!(plan.new_status, Some(AdminStatus::Registered));
        assert_eq!(plan.legal_deadline, Some(now + Duration::days(30)));
        assert_eq!(plan.concluded_at, None);
        assert_eq!(plan.events[0].vendor_code.as_deref(), Some("V"));
    }

    #[test]
    fn terminal_outcome_concludes() {
        let now = Utc::now();
        let plan = plan_reply(
            &state(AdminStatus::InProgress),
            &reply(AdminStatus::Approved),
            "a",
            now,
        );
        assert_eq!(plan.new_status, Some(AdminStatus::Approved));
        assert_eq!(plan.concluded_at, Some(now));
    }

    #[test]
    fn disallowed_transition_is_an_anomaly_not_a_change() {
        let plan = plan_reply(
            &state(AdminStatus::Withdrawn),
            &reply(AdminStatus::Approved),
            "a",
            Utc::now(),
        );
        assert_eq!(plan.new_status, None);
        assert_eq!(plan.events.len(), 1);
        assert_eq!(plan.events[0].kind, EventKind::Anomaly);
        assert!(
            plan.events[0]
                .reason
                .as_deref()
                .unwrap()
                .contains("WITHDRAWN")
        );
    }

    #[test]
    fn repeated_status_changes_nothing() {
        let plan = plan_reply(
            &state(AdminStatus::Approved),
            &reply(AdminStatus::Approved),
            "a",
            Utc::now(),
        );
        assert_eq!(plan, ReplyPlan::default());
    }
}
