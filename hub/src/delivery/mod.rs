//! Delivery: draining the durable job table towards the adapters.
//!
//! One worker per adapter instance claims due jobs (bounded by the
//! instance's concurrency), runs each attempt, and records the result with
//! the retry policy's decision. Jobs are rows, so a restart resumes them;
//! the operation id never changes, so vendors can discard duplicates.

mod message;
mod poll;
mod worker;

pub use message::build_message;
pub use worker::{Workers, spawn_workers};
