//! Planners: every decision about a change to a practice, as a pure
//! function of what the store loaded. A store loads a [`PracticeState`],
//! asks a planner, and persists the returned [`Plan`] in one transaction;
//! it decides nothing itself. So every backend applies the same rules, and
//! the rules are tested without a database.

mod attempt;
mod inbound;
mod submission;
mod withdrawal;

pub use attempt::{plan_attempt, plan_claim};
pub use inbound::{
    Correlated, Known, SINGLE_VALUED_KINDS, Verdict, answered_delivery, pick_correlated,
    plan_report, plan_result,
};
pub use submission::plan_submission;
pub use withdrawal::{JobSnapshot, Withdrawal, plan_replay, plan_withdrawal};

use crate::adapter::VendorReply;
use crate::apply::{StatusState, plan_reply};
use crate::job::JobState;
use crate::model::{AdminStatus, Document, ExternalRef, Operation};
use crate::practice::{EventDraft, EventKind, EventSource};
use crate::status::{DeliveryStatus, delivery_transition_allowed};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// What planners read of a stored practice.
#[derive(Debug, Clone, PartialEq)]
pub struct PracticeState {
    pub status: AdminStatus,
    pub delivery_status: Option<DeliveryStatus>,
    /// The practice's current delivery (the job whose status it shows).
    pub current_operation_id: Option<String>,
    pub legal_term_days: u32,
    /// The outcome data earlier results set (merged).
    pub outcome_data: Map<String, Value>,
}

impl PracticeState {
    /// Whether `operation_id` is the delivery the practice currently shows.
    pub fn is_current(&self, operation_id: &str) -> bool {
        self.current_operation_id.as_deref() == Some(operation_id)
    }
}

/// A request the practice's state does not allow (the caller's mistake,
/// not a failure): answered as a conflict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// What a status change sets besides the status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutcomeChange {
    /// The legal term's new end (set at registration).
    pub legal_deadline: Option<DateTime<Utc>>,
    /// Set when the practice reaches a terminal status.
    pub concluded_at: Option<DateTime<Utc>>,
    /// The new status is the outcome: reason and vendor code are its own.
    pub terminal: bool,
    pub reason: Option<String>,
    pub vendor_code: Option<String>,
}

/// What becomes of a job's last error.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ErrorChange {
    /// Left as it is.
    #[default]
    Keep,
    /// Cleared (the vendor answered).
    Clear,
    /// The attempt's failure: its reason and class.
    Set { reason: String, class: String },
}

/// Polling starts: the vendor accepted the work and said where to ask.
#[derive(Debug, Clone, PartialEq)]
pub struct PollStart {
    pub token: String,
    /// After this the delivery is `OUTCOME_UNKNOWN`.
    pub deadline: DateTime<Utc>,
}

/// A change to an existing job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobUpdate {
    pub operation_id: String,
    pub state: JobState,
    /// When it runs next (unchanged if `None`).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub error: ErrorChange,
    /// A replay starts counting attempts again.
    pub reset_attempts: bool,
    /// Set when polling for the result starts.
    pub poll: Option<PollStart>,
}

impl JobUpdate {
    fn to(operation_id: &str, state: JobState) -> Self {
        Self {
            operation_id: operation_id.to_string(),
            state,
            next_attempt_at: None,
            error: ErrorChange::Keep,
            reset_attempts: false,
            poll: None,
        }
    }
}

/// A delivery to put in the outbox; it becomes the practice's current one.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub operation_id: String,
    pub adapter: String,
    pub operation: Operation,
    /// `Due`, or `InFlight` when the caller delivers it at once.
    pub state: JobState,
    /// Attempts already counted (1 when claimed at creation).
    pub attempts: u32,
    pub max_attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub traceparent: Option<String>,
}

/// A practice's change, decided by a planner; a store applies all of it in
/// one transaction, events last.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The practice's state after the change.
    pub state: PracticeState,
    /// Set with a status change that concludes or moves the deadline.
    pub outcome: Option<OutcomeChange>,
    /// Events to append, in order.
    pub events: Vec<EventDraft>,
    /// The job this change concerns, and what becomes of it.
    pub job: Option<JobUpdate>,
    /// A new delivery (its id is already the state's current operation).
    pub new_job: Option<NewJob>,
    /// References the vendor gave (system and date resolved).
    pub references: Vec<ExternalRef>,
    /// Outcome documents the vendor sent (stored once by content).
    pub documents: Vec<Document>,
}

impl Plan {
    /// A plan that changes nothing yet.
    pub fn from_state(state: PracticeState) -> Self {
        Self {
            state,
            outcome: None,
            events: Vec::new(),
            job: None,
            new_job: None,
            references: Vec::new(),
            documents: Vec::new(),
        }
    }

    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.outcome.is_none()
            && self.events.is_empty()
            && self.job.is_none()
            && self.new_job.is_none()
            && self.references.is_empty()
            && self.documents.is_empty()
    }

    /// Moves the delivery status to `to`, or records an anomaly when the
    /// delivery state machine forbids it. A repeated status is no event.
    pub fn move_delivery(&mut self, to: DeliveryStatus, draft: EventDraft) {
        let from = self.state.delivery_status;
        if from == Some(to) {
            return;
        }
        let mut draft = EventDraft {
            from_delivery: from,
            to_delivery: Some(to),
            kind: EventKind::DeliveryChanged,
            ..draft
        };
        if from.is_some_and(|f| !delivery_transition_allowed(f, to)) {
            draft.kind = EventKind::Anomaly;
            draft.reason = Some(format!(
                "delivery {} -> {to} is not allowed: not applied{}",
                from.map(|f| f.as_str()).unwrap_or("-"),
                draft
                    .reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ));
            self.events.push(draft);
            return;
        }
        self.state.delivery_status = Some(to);
        self.events.push(draft);
    }

    /// Applies a vendor's report: its administrative effect (or an anomaly),
    /// its outcome data, its references and its documents.
    ///
    /// The outcome data it adds or changes ([`new_outcome_data`]) is
    /// merged into the practice's and carried by the report's status
    /// change, or by an [`EventKind::OutcomeData`] event when the status
    /// stays: a watcher sees it with the result that set it. A status the
    /// state machine refuses is an anomaly, and its data is recorded on
    /// that event, not merged.
    pub fn apply_report(&mut self, reply: &VendorReply, actor: &str, now: DateTime<Utc>) {
        let planned = plan_reply(
            &StatusState {
                status: self.state.status,
                legal_term_days: self.state.legal_term_days,
            },
            reply,
            actor,
            now,
        );
        let data = new_outcome_data(&self.state.outcome_data, &reply.outcome_data);
        let first = self.events.len();
        self.events.extend(planned.events);
        if !data.is_empty() {
            match self.events[first..].last_mut() {
                Some(event) => {
                    if event.kind != EventKind::Anomaly {
                        self.state.outcome_data.extend(data.clone());
                    }
                    event.outcome_data = Some(data);
                }
                None => {
                    self.state.outcome_data.extend(data.clone());
                    self.events.push(EventDraft {
                        source: EventSource::Adapter,
                        kind: EventKind::OutcomeData,
                        from_status: None,
                        to_status: None,
                        from_delivery: None,
                        to_delivery: None,
                        reason: None,
                        vendor_code: reply.vendor_code.clone(),
                        actor: actor.to_string(),
                        occurred_at: Some(reply.occurred_at.unwrap_or(now)),
                        outcome_data: Some(data),
                    });
                }
            }
        }
        if let Some(to) = planned.new_status {
            let earlier = self.outcome.take().unwrap_or_default();
            self.outcome = Some(OutcomeChange {
                legal_deadline: planned.legal_deadline.or(earlier.legal_deadline),
                concluded_at: planned.concluded_at.or(earlier.concluded_at),
                terminal: to.is_terminal(),
                reason: reply.reason.clone(),
                vendor_code: reply.vendor_code.clone(),
            });
            self.state.status = to;
        }
        for r in &reply.external_refs {
            self.references.push(ExternalRef {
                kind: r.kind.clone(),
                value: r.value.clone(),
                system: if r.system.is_empty() {
                    actor.to_string()
                } else {
                    r.system.clone()
                },
                issued_at: Some(r.issued_at.or(reply.occurred_at).unwrap_or(now)),
            });
        }
        self.documents.extend(reply.documents.iter().cloned());
    }
}

/// The fields of `reported` that `known` does not hold with the same
/// value: what a result adds to or changes in a practice's outcome data.
pub fn new_outcome_data(
    known: &Map<String, Value>,
    reported: &Map<String, Value>,
) -> Map<String, Value> {
    reported
        .iter()
        .filter(|(name, value)| known.get(*name) != Some(*value))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A practice in `status` whose current delivery `op-1` is `delivery`.
    pub fn state(status: AdminStatus, delivery: DeliveryStatus) -> PracticeState {
        PracticeState {
            status,
            delivery_status: Some(delivery),
            current_operation_id: Some("op-1".into()),
            legal_term_days: 30,
            outcome_data: Map::new(),
        }
    }
}
