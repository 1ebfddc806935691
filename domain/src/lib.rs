//! Raccordo's domain: what a practice is and every rule that changes it,
//! free of transport and storage.
//!
//! - [`model`]: the canonical types (applicant, statuses, documents, references).
//! - [`message`]: the **normalized message** (`raccordo.practice/v1`), the
//!   vendor-facing form of a practice.
//! - [`adapter`]: the contract between the hub and protocol adapters: the
//!   delivery request and reply, and the failure classes the hub acts on.
//! - [`practice`], [`status`], [`mode`]: a stored practice, its events, and
//!   the two state machines (administrative and delivery).
//! - [`job`]: deliveries in the outbox, their states, how an attempt ended.
//! - [`plan`]: the planners — every decision about a change to a practice,
//!   as a pure function a store then persists in one transaction.
//! - [`apply`], [`retry`]: what a vendor's reply and a failed attempt mean.
//! - [`audit`]: the definition of the audit trail's hash chain.
//! - [`identifiers`]: codice fiscale, partita IVA and ISTAT code checks.
//!
//! Stores persist what these rules decide; adapters speak the contract.

#![forbid(unsafe_code)]

pub mod adapter;
pub mod apply;
pub mod audit;
pub mod identifiers;
pub mod job;
pub mod message;
pub mod mode;
pub mod model;
pub mod plan;
pub mod practice;
pub mod retry;
pub mod status;

pub use adapter::{
    AdapterError, AdapterHealth, Anomaly, AnomalyClass, DeliveryError, DeliveryRequest,
    FailureClass, FollowUp, InboundOutcome, InboundResult, PollOutcome, PollRequest, ResultSink,
    VendorReply,
};
pub use message::NormalizedMessage;
