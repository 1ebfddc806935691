//! Domain errors → gRPC status, in one place.

use crate::practices::HubError;
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
