//! Domain errors → gRPC status, in one place.

use crate::practices::HubError;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

impl From<HubError> for Status {
    fn from(e: HubError) -> Self {
        match e {
            HubError::Invalid(violations) => {
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                let summary = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                Status::with_error_details(Code::InvalidArgument, summary, details)
            }
            HubError::NotFound(m) => Status::not_found(m),
            HubError::AlreadyExists(m) => Status::already_exists(m),
            HubError::FailedPrecondition(m) => Status::failed_precondition(m),
            HubError::Unavailable(m) => Status::unavailable(m),
            HubError::Busy(m) => busy(Code::Unavailable, m),
            HubError::DataLoss(m) => Status::data_loss(m),
        }
    }
}

/// A required request field that is missing or malformed.
pub fn invalid(field: &str, description: &str) -> Status {
    HubError::Invalid(vec![crate::domain::validate::Violation {
        field: field.into(),
        description: description.into(),
    }])
    .into()
}

/// How long a caller refused because the hub is busy is asked to wait: a
/// full write queue drains in a fraction of a second, and calls in progress
/// finish within their route's deadline; a second spreads the retries of a
/// burst without idling the hub for long.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A refusal because the hub is busy: `code` with a `google.rpc.RetryInfo`
/// and a `retry-after` header (seconds), so that clients that do not read
/// the details still back off.
pub fn busy(code: Code, message: impl Into<String>) -> Status {
    let mut details = ErrorDetails::new();
    details.set_retry_info(Some(RETRY_AFTER));
    let mut status = Status::with_error_details(code, message, details);
    if let Ok(v) = RETRY_AFTER.as_secs().max(1).to_string().parse() {
        status.metadata_mut().insert("retry-after", v);
    }
    status
}
