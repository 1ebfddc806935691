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

/// The hub's version and the commit it was built from, as
/// `raccordo --version` prints them: `0.1.0 (1a2b3c4d5e6f)`, with `+dirty`
/// after the hash when the tree had uncommitted changes, or `unknown` when
/// the build had no git checkout to read (`hub/build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("RACCORDO_COMMIT"),
    ")"
);

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
