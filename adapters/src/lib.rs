//! Raccordo's adapters: how a canonical practice leaves the hub in a vendor's
//! dialect and how the vendor's answer comes back as a canonical outcome.
//!
//! - [`model`]: the canonical types adapters see (applicant, statuses, outcome).
//! - [`message`]: the **normalized message** (`raccordo.practice/v1`), the
//!   vendor-facing form of a practice.
//! - [`adapter`]: the [`Adapter`] trait every protocol implements, the
//!   delivery request and reply, and the failure classes the hub acts on.
//! - [`template`]: the request-body template engine shared by all adapters.
//! - [`http`]: the HTTP transport shared by HTTP-based adapters (auth, TLS,
//!   circuit breaker, rate limit, pacing headers).
//! - [`rest`]: the REST adapter (AgID ModI `BLOCK_REST`, `NONBLOCK_PUSH_REST`,
//!   `NONBLOCK_PULL_REST`).
//! - [`file`]: the file-drop adapter (request and result files in folders).
//! - [`amqp`]: the AMQP adapter (RabbitMQ, publisher confirms, reply queue).
//! - [`soap`]: the SOAP adapter (ModI `BLOCK_SOAP`, `NONBLOCK_PULL_SOAP`,
//!   `NONBLOCK_PUSH_SOAP`; WS-Security, hardened XML).
//! - [`message_xml`]: the normalized message as XML.

pub mod adapter;
pub mod amqp;
pub mod file;
pub mod http;
pub mod message;
pub mod message_xml;
pub mod model;
pub mod rest;
pub mod soap;
pub mod template;

pub use adapter::{
    Adapter, AdapterError, AdapterHealth, DeliveryError, DeliveryRequest, FailureClass, FollowUp,
    InboundOutcome, InboundResult, PollOutcome, PollRequest, ResultSink, VendorReply,
};
pub use message::NormalizedMessage;
