//! The canonical model's rules live in the domain crate (`raccordo-domain`);
//! they are re-exported here under their usual paths. Submission validation
//! stays in the hub: it checks a practice (and a vendor's outcome data)
//! against the configured catalogue.

pub use raccordo_domain::{apply, identifiers, practice, retry, status};
pub mod outcome;
pub mod validate;
