//! Raccordo's adapters: how a canonical practice leaves the hub in a vendor's
//! dialect and how the vendor's answer comes back as a canonical outcome.
//!
//! - [`model`]: the canonical types adapters see (applicant, statuses, outcome).
//! - [`message`]: the **normalized message** (`raccordo.practice/v1`), the
//!   vendor-facing form of a practice.
//! - [`adapter`]: the [`Adapter`] trait every protocol implements, the
//!   delivery request and reply, and the failure classes the hub acts on.
//! - [`template`]: the request-body template engine shared by all adapters.
//! - [`rest`]: the REST adapter (AgID ModI `BLOCK_REST`).
//! - [`amqp`]: the AMQP adapter (RabbitMQ, publisher confirms, reply queue).

pub mod adapter;
pub mod amqp;
pub mod message;
pub mod model;
pub mod rest;
pub mod template;

pub use adapter::{
    Adapter, AdapterError, AdapterHealth, DeliveryError, DeliveryRequest, FailureClass,
    InboundOutcome, InboundResult, ResultSink, VendorReply,
};
pub use message::NormalizedMessage;
