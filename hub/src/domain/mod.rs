//! The canonical model's rules, free of transport and storage: identifiers,
//! the two state machines, submission validation and the retry policy.

pub mod apply;
pub mod identifiers;
pub mod practice;
pub mod retry;
pub mod status;
pub mod validate;
