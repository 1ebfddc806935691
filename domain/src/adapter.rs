//! The contract between the hub and a protocol adapter: what a delivery
//! carries, what a vendor's answer and failure mean, and how late results
//! come back. The `Adapter` trait itself (which also mounts HTTP routes)
//! lives in the adapters crate.
//!
//! The hub owns durability, retries, the state machine and the practice's
//! events; an adapter owns one thing: turning a [`DeliveryRequest`] into a
//! vendor call and the vendor's answer into a [`VendorReply`] or a classified
//! [`DeliveryError`]. Adapters whose vendors answer later (callbacks, reply
//! queues, result files, polling) report through the [`ResultSink`] the hub
//! hands them at start.

use crate::message::NormalizedMessage;
use crate::model::{AdminStatus, Document, ExternalRef, Operation};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What the hub asks an adapter to deliver.
#[derive(Debug, Clone)]
pub struct DeliveryRequest {
    /// The normalized message (its `message_id` is the operation id).
    pub message: Arc<NormalizedMessage>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Route variables from the configuration (`routes.vars`), for templates.
    pub route_vars: Arc<Map<String, Value>>,
    /// The W3C `traceparent` to send with this attempt (the caller's trace,
    /// a new span), so the vendor's logs join the caller's trace.
    pub traceparent: Option<String>,
}

impl DeliveryRequest {
    /// The stable id of this delivery, identical on every attempt.
    pub fn operation_id(&self) -> &str {
        &self.message.message_id
    }

    /// Submission or withdrawal.
    pub fn operation(&self) -> Operation {
        self.message.operation
    }
}

/// The back office's answer, already mapped to canonical terms.
#[derive(Debug, Clone, Default)]
pub struct VendorReply {
    /// The administrative status the vendor reports, if it reports one.
    /// `None` means "accepted, no status yet".
    pub status: Option<AdminStatus>,
    /// The vendor's own code for that status or outcome.
    pub vendor_code: Option<String>,
    /// A human-readable reason (for rejections especially).
    pub reason: Option<String>,
    /// Protocol numbers, the vendor's practice id, …
    pub external_refs: Vec<ExternalRef>,
    /// Outcome documents (a certificate, a receipt).
    pub documents: Vec<Document>,
    /// Outcome data the front office needs (the amount due, a
    /// certificate's number and validity, an appointment slot), by field
    /// name; empty when the vendor sent none. The hub checks it against the
    /// service's `outcome_data` declaration before applying it, and merges
    /// it into what earlier results set.
    pub outcome_data: Map<String, Value>,
    /// When it happened according to the vendor.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The vendor accepted the request but the result must be fetched
    /// later (ModI `NONBLOCK_PULL_*`): the hub keeps the job and calls
    /// [`Adapter::poll`] on a durable schedule.
    pub follow_up: Option<FollowUp>,
}

/// What the hub needs to poll for a deferred result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUp {
    /// Opaque to the hub (a status URL, a correlation id); stored with the job.
    pub token: String,
    /// When to poll first.
    pub poll_after: Duration,
    /// Give up this long after the request was accepted.
    pub max_wait: Duration,
}

/// One poll of a deferred result.
#[derive(Debug, Clone)]
pub struct PollRequest {
    /// The delivery's operation id.
    pub operation_id: String,
    pub operation: Operation,
    /// The [`FollowUp::token`] (or the latest one a poll returned).
    pub token: String,
    /// Polls done before this one.
    pub polls: u32,
}

/// What a poll found.
#[derive(Debug, Clone)]
pub enum PollOutcome {
    /// Still working. `progress` carries an intermediate report (protocol
    /// number, "in progress") to apply now; `token` replaces the stored one.
    Pending {
        progress: Option<VendorReply>,
        token: Option<String>,
        poll_after: Duration,
    },
    /// Finished: the final reply, applied like a synchronous one.
    Done(VendorReply),
}

/// How the hub must treat a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// Try again later (connection refused, 5xx, 429, …).
    Transient,
    /// Retrying cannot help (malformed request, unknown resource, bad mapping).
    Permanent,
    /// The back office refused the practice on its merits.
    Rejection,
    /// The request may have been received but no answer came: re-send with
    /// the same operation id.
    OutcomeUnknown,
}

impl FailureClass {
    /// The class's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Rejection => "rejection",
            Self::OutcomeUnknown => "outcome_unknown",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed delivery, classified.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{class}: {reason}")]
pub struct DeliveryError {
    pub class: FailureClass,
    /// What went wrong, for the event log and the operator. Never carries
    /// personal data from the practice.
    pub reason: String,
    /// The vendor's own error code, when it sent one.
    pub vendor_code: Option<String>,
    /// The vendor asked to wait this long before retrying (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl DeliveryError {
    /// A failure of the given class.
    pub fn new(class: FailureClass, reason: impl Into<String>) -> Self {
        Self {
            class,
            reason: reason.into(),
            vendor_code: None,
            retry_after: None,
        }
    }

    /// Shorthand for [`FailureClass::Transient`].
    pub fn transient(reason: impl Into<String>) -> Self {
        Self::new(FailureClass::Transient, reason)
    }

    /// Shorthand for [`FailureClass::Permanent`].
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self::new(FailureClass::Permanent, reason)
    }
}

/// An error building an adapter from its configuration.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct AdapterError {
    /// The configuration key at fault, relative to the adapter instance.
    pub key: String,
    pub reason: String,
}

impl AdapterError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// An adapter instance's state, as operators and load balancers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterHealth {
    /// Working normally.
    Up,
    /// Delivering, but something needs attention (a breaker probing, a
    /// consumer reconnecting); the reason says what.
    Degraded(String),
    /// Cannot deliver now (breaker open, broker unreachable); deliveries
    /// wait in the outbox until it recovers.
    Down(String),
}

impl AdapterHealth {
    /// `up`, `degraded` or `down`.
    pub fn state(&self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Degraded(_) => "degraded",
            Self::Down(_) => "down",
        }
    }

    /// Why it is not up.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Up => None,
            Self::Degraded(r) | Self::Down(r) => Some(r),
        }
    }
}

/// How an asynchronous result names its practice.
#[derive(Debug, Clone, PartialEq)]
pub enum Correlation {
    /// The hub's practice id.
    PracticeId(String),
    /// The delivery's operation id (what the vendor received as `message_id`).
    OperationId(String),
    /// A reference the vendor assigned earlier (kind, value).
    ExternalRef { kind: String, value: String },
}

/// A result that arrived after the delivery (callback, reply message, file).
#[derive(Debug, Clone)]
pub struct InboundResult {
    /// The adapter instance that received it.
    pub adapter: String,
    /// The tenant, when the channel tells it; otherwise resolved from the
    /// correlation.
    pub tenant_id: Option<String>,
    pub correlation: Correlation,
    pub reply: VendorReply,
    /// What makes this result distinct (a callback's id, an AMQP
    /// `message_id`, a result file's content hash and row): a second result
    /// with the same receipt for the same adapter instance changes nothing
    /// and is answered as the first was ([`InboundOutcome::Duplicate`] for
    /// one applied or pending, the same [`InboundError::Anomaly`] for an
    /// anomaly). `None` applies every time, so channels that can redeliver
    /// must set it.
    ///
    /// A result that arrives while the delivery it answers is still in
    /// flight (the vendor called back before its acknowledgement reached
    /// the hub) is stored and answered [`InboundOutcome::Pending`]; it is
    /// applied, in arrival order, in the transaction that records the end
    /// of that attempt, after the acknowledgement: the practice's events
    /// keep the order in which the vendor acted.
    pub receipt: Option<String>,
}

/// What applying an inbound result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundOutcome {
    /// Stored now.
    Applied,
    /// Stored earlier under the same receipt; nothing changed.
    Duplicate,
    /// Stored now, to be applied when the attempt that delivered the
    /// request it answers ends: the vendor answered before the hub recorded
    /// its acknowledgement (see [`InboundResult`]). The sender must not
    /// send it again.
    Pending,
}

impl InboundOutcome {
    /// `applied`, `duplicate` or `pending`, for answers to vendors and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Pending => "pending",
        }
    }
}

/// Why a result was recorded as an anomaly instead of being applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnomalyClass {
    /// The practice is concluded and the result says something new about
    /// it (another status, reference or document).
    Late,
    /// The result contradicts the practice as earlier results left it: a
    /// status the state machine does not allow from the current one, or a
    /// second, different protocol number or vendor id from the same system.
    Contradictory,
}

impl AnomalyClass {
    /// Every class.
    pub const ALL: [AnomalyClass; 2] = [AnomalyClass::Late, AnomalyClass::Contradictory];

    /// `late` or `contradictory`: metrics labels, answers to vendors, logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Late => "late",
            Self::Contradictory => "contradictory",
        }
    }
}

impl fmt::Display for AnomalyClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AnomalyClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown anomaly class '{s}'"))
    }
}

/// A result recorded on its practice as an `ANOMALY` event, not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    pub class: AnomalyClass,
    /// What arrived and why it was not applied: the event's reason, told
    /// to the vendor that sent it. It may quote the vendor's own data, so
    /// it is never logged.
    pub reason: String,
}

/// Why an inbound result was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InboundError {
    /// No practice matches the correlation: the sender should not retry.
    #[error("no practice matches {0}")]
    Uncorrelated(String),
    /// The result is not acceptable in the practice's current state.
    #[error("{0}")]
    Refused(String),
    /// The result was recorded as an anomaly on its practice (now, or
    /// earlier under the same receipt) and not applied: the sender should
    /// not retry, but learn that it was not applied.
    #[error("recorded as an anomaly ({}): {}", .0.class, .0.reason)]
    Anomaly(Anomaly),
    /// The hub could not store it now: the sender should retry.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

/// The hub's side of the inbound channel: results are applied in one
/// transaction (status change, events, documents) before this returns `Ok`,
/// so an adapter acknowledges to the vendor only what is stored.
#[async_trait]
pub trait ResultSink: Send + Sync + 'static {
    /// Applies a result; at most once per distinct receipt.
    async fn apply(&self, result: InboundResult) -> Result<InboundOutcome, InboundError>;

    /// Whether this hub instance runs the singleton `name` now: inbound
    /// work that must run on one instance of a cluster at a time (scanning
    /// a shared folder), asked before each run. A hub alone always does.
    async fn holds(&self, _name: &str) -> bool {
        true
    }
}
