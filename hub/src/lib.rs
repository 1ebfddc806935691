//! Raccordo: an integration hub between the front offices of Italian
//! municipalities and their vendors' back-office systems.
//!
//! A practice enters through the gRPC API ([`grpc`]), is validated and
//! stored with its delivery job in one transaction ([`practices`],
//! [`store`]), is delivered by per-adapter workers ([`delivery`]) through the
//! adapters of `raccordo-adapters`, and every change becomes an event
//! ([`bus`]) that watchers follow live. `docs/architecture.md` follows one
//! practice through these modules.

#![forbid(unsafe_code)]

pub mod adapters;
pub mod bus;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod grpc;
pub mod http;
pub mod inbound;
pub mod metrics;
pub mod offload;
pub mod practices;
pub mod security;
pub mod server;
pub mod simulator;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod trace;
