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
//! - [`outcome`]: outcome data and base64 documents in results, shared by
//!   every adapter's result mapping.

#![forbid(unsafe_code)]

pub mod adapter;
pub mod amqp;
pub mod file;
pub mod http;
pub mod message_xml;
pub mod outcome;
pub mod rest;
pub mod soap;
pub mod template;

pub use adapter::Adapter;
pub use raccordo_domain::{
    AdapterError, AdapterHealth, DeliveryError, DeliveryRequest, FailureClass, FollowUp,
    InboundOutcome, InboundResult, NormalizedMessage, PollOutcome, PollRequest, ResultSink,
    VendorReply, message, model,
};
