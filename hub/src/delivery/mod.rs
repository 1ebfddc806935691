//! Delivery: draining the durable job table towards the adapters.
//!
//! One worker per adapter instance claims due jobs (bounded by the
//! instance's concurrency), runs each attempt, and records the result with
//! the retry policy's decision. Jobs are rows, so a restart resumes them;
//! the operation id never changes, so vendors can discard duplicates.
//! Every attempt runs under a lease of this hub instance ([`Leases`]),
//! renewed while it runs: an attempt that ends without a result, or an
//! instance that stops, leaves the job to lease expiry, which makes it due
//! again.
//!
//! A synchronous submission skips the queue when its adapter has a free
//! slot: the job is stored already claimed and delivered by the submission
//! itself ([`deliver`]), through the same attempt-and-record path. Other
//! submissions hand their first message to the worker in memory
//! ([`PreparedMessages`]), with the store as the fallback.

mod lease;
mod message;
mod poll;
mod prepared;
#[cfg(test)]
mod tests;
mod worker;

pub use lease::{Held, Leases, spawn_keeper};
pub use message::{build_message, submission_message};
pub use prepared::PreparedMessages;
pub(crate) use worker::deliver;
pub use worker::{Workers, spawn_workers};
