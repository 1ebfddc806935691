//! Raccordo's adapters: how a canonical practice leaves the hub in a vendor's
//! dialect and how the vendor's answer comes back as a canonical outcome.
//!
//! - [`adapter`]: the [`Adapter`] trait every protocol implements; the data
//!   it exchanges with the hub is the domain crate's adapter contract.
//! - [`model`], [`message`]: the canonical types and the normalized message,
//!   re-exported from the domain crate (`raccordo-domain`).
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
//! - [`registry`]: the adapter kinds, the one list the hub's configuration
//!   and builder read.
//! - [`outcome`]: outcome data and base64 documents in results, shared by
//!   every adapter's result mapping.
//!
//! Each protocol is a cargo feature (`rest`, `soap`, `amqp`, `file`; all on
//! by default). Without `rest`, [`rest`] keeps only its JSON reply mapping,
//! which the AMQP adapter shares.

#![forbid(unsafe_code)]

pub mod adapter;
#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(feature = "file")]
pub mod file;
pub mod http;
#[cfg(feature = "xml")]
pub mod message_xml;
pub mod outcome;
pub mod registry;
#[cfg(feature = "rest")]
pub mod rest;
/// Without the REST adapter: its JSON reply mapping alone, which the AMQP
/// adapter shares (`consume.reply`).
#[cfg(not(feature = "rest"))]
pub mod rest {
    pub mod config;
    pub mod response;
}
#[cfg(feature = "soap")]
pub mod soap;
pub mod template;

pub use adapter::Adapter;
pub use raccordo_domain::{
    AdapterError, AdapterHealth, DeliveryError, DeliveryRequest, FailureClass, FollowUp,
    InboundOutcome, InboundResult, NormalizedMessage, PollOutcome, PollRequest, ResultSink,
    VendorReply, message, model,
};
