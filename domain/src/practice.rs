//! The practice as the hub stores it, and its events.

use super::status::DeliveryStatus;
use crate::mode::Mode;
use crate::model::{
    AdminStatus, Applicant, ChannelInfo, Document, ExternalRef, Operation, Submitter,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the applicant submitted, besides attachments. Stored as one JSON
/// document; it is also the basis of the normalized message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PracticeContent {
    pub applicant: Applicant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitter: Option<Submitter>,
    #[serde(default)]
    pub channel: ChannelInfo,
    #[serde(default)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// A validated submission, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewPractice {
    pub id: String,
    pub tenant_id: String,
    pub service_code: String,
    pub idempotency_key: String,
    /// SHA-256 over the canonical content and attachments: the same key with
    /// a different hash is a conflicting re-submission.
    pub content_hash: String,
    pub content: PracticeContent,
    pub attachments: Vec<Document>,
    pub mode: Mode,
    pub received_at: DateTime<Utc>,
    pub legal_term_days: u32,
    /// The first delivery.
    pub adapter: String,
    pub max_attempts: u32,
    /// The caller's W3C `traceparent`, continued by every attempt.
    pub traceparent: Option<String>,
}

/// The current delivery of a practice.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryView {
    pub status: DeliveryStatus,
    pub operation_id: String,
    pub operation: Operation,
    pub adapter: String,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub failure_class: Option<String>,
}

/// How a practice ended (or its last reported outcome).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: AdminStatus,
    pub reason: Option<String>,
    pub vendor_code: Option<String>,
    /// Metadata always; bytes only when asked for.
    pub documents: Vec<Document>,
}

/// A stored practice.
#[derive(Debug, Clone, PartialEq)]
pub struct Practice {
    pub id: String,
    pub tenant_id: String,
    pub service_code: String,
    pub idempotency_key: String,
    pub content: PracticeContent,
    /// Metadata always; bytes only when asked for.
    pub attachments: Vec<Document>,
    pub status: AdminStatus,
    pub mode: Mode,
    pub delivery: Option<DeliveryView>,
    pub outcome: Option<Outcome>,
    pub external_refs: Vec<ExternalRef>,
    pub received_at: DateTime<Utc>,
    pub legal_deadline: Option<DateTime<Utc>>,
    pub concluded_at: Option<DateTime<Utc>>,
    /// The outcome data the vendor's results set, merged field by field
    /// (a later result's value replaces an earlier one's); empty if none.
    pub outcome_data: serde_json::Map<String, serde_json::Value>,
}

/// Who caused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventSource {
    Hub,
    Adapter,
    Operator,
    Applicant,
}

impl EventSource {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hub => "hub",
            Self::Adapter => "adapter",
            Self::Operator => "operator",
            Self::Applicant => "applicant",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Hub, Self::Adapter, Self::Operator, Self::Applicant]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    StatusChanged,
    DeliveryChanged,
    /// Recorded, not applied: a change the state machine refused, or a
    /// vendor's result that came late or contradicts an earlier one.
    Anomaly,
    /// A vendor's result set outcome data without changing the status
    /// (with a status change, the data rides on that event).
    OutcomeData,
}

impl EventKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StatusChanged => "status",
            Self::DeliveryChanged => "delivery",
            Self::Anomaly => "anomaly",
            Self::OutcomeData => "outcome_data",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::StatusChanged,
            Self::DeliveryChanged,
            Self::Anomaly,
            Self::OutcomeData,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// One change in a practice's life.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Hub-wide position (for `WatchPractices` cursors).
    pub cursor: i64,
    pub practice_id: String,
    pub tenant_id: String,
    pub service_code: String,
    pub applicant_id: String,
    /// 1, 2, 3 … within the practice.
    pub sequence: i64,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub source: EventSource,
    pub kind: EventKind,
    pub from_status: Option<AdminStatus>,
    pub to_status: Option<AdminStatus>,
    pub from_delivery: Option<DeliveryStatus>,
    pub to_delivery: Option<DeliveryStatus>,
    pub reason: Option<String>,
    pub vendor_code: Option<String>,
    /// Operator id, adapter instance or "hub".
    pub actor: String,
    /// The outcome data the result behind this event set (the fields it
    /// added or changed), on that result's status change or
    /// [`EventKind::OutcomeData`] event.
    pub outcome_data: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Event {
    /// Whether this event put the practice in a terminal status.
    pub fn is_terminal(&self) -> bool {
        self.kind == EventKind::StatusChanged
            && self.to_status.is_some_and(AdminStatus::is_terminal)
    }
}

/// A change to record, before it has a sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    pub source: EventSource,
    pub kind: EventKind,
    pub from_status: Option<AdminStatus>,
    pub to_status: Option<AdminStatus>,
    pub from_delivery: Option<DeliveryStatus>,
    pub to_delivery: Option<DeliveryStatus>,
    pub reason: Option<String>,
    pub vendor_code: Option<String>,
    pub actor: String,
    pub occurred_at: Option<DateTime<Utc>>,
    /// See [`Event::outcome_data`].
    pub outcome_data: Option<serde_json::Map<String, serde_json::Value>>,
}

impl EventDraft {
    /// An administrative status change.
    pub fn status(source: EventSource, actor: &str, from: AdminStatus, to: AdminStatus) -> Self {
        Self {
            source,
            kind: EventKind::StatusChanged,
            from_status: Some(from),
            to_status: Some(to),
            from_delivery: None,
            to_delivery: None,
            reason: None,
            vendor_code: None,
            actor: actor.to_string(),
            occurred_at: None,
            outcome_data: None,
        }
    }

    /// A delivery status change.
    pub fn delivery(
        source: EventSource,
        actor: &str,
        from: Option<DeliveryStatus>,
        to: DeliveryStatus,
    ) -> Self {
        Self {
            source,
            kind: EventKind::DeliveryChanged,
            from_status: None,
            to_status: None,
            from_delivery: from,
            to_delivery: Some(to),
            reason: None,
            vendor_code: None,
            actor: actor.to_string(),
            occurred_at: None,
            outcome_data: None,
        }
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}
