//! Domain errors → gRPC status, in one place.

use super::malformed::MAX_MESSAGE_BYTES;
use crate::domain::validate::{Violation, bounded, cut_to_bytes};
use crate::practices::HubError;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

impl From<HubError> for Status {
    fn from(e: HubError) -> Self {
        match e {
            HubError::Invalid(violations) => invalid_request(&violations),
            HubError::NotFound(m) => Status::not_found(m),
            HubError::AlreadyExists(m) => Status::already_exists(m),
            HubError::FailedPrecondition(m) => Status::failed_precondition(m),
            HubError::Unavailable(m) => Status::unavailable(m),
            HubError::Busy(m) => busy(Code::Unavailable, m),
            HubError::DataLoss(m) => Status::data_loss(m),
        }
    }
}

/// How many violations a refusal lists; the rest are counted in one more
/// entry. A request with thousands of bad fields must not get an answer
/// too large for its client to read.
pub const MAX_VIOLATIONS: usize = 20;

/// `INVALID_ARGUMENT` with a `google.rpc.BadRequest` listing the first
/// [`MAX_VIOLATIONS`] violations (each bounded) and how many more there are.
fn invalid_request(violations: &[Violation]) -> Status {
    let mut listed: Vec<(String, String)> = violations
        .iter()
        .take(MAX_VIOLATIONS)
        .map(|v| (bounded(&v.field), bounded(&v.description)))
        .collect();
    if violations.len() > MAX_VIOLATIONS {
        listed.push((
            "(request)".into(),
            format!(
                "and {} more violations not listed",
                violations.len() - MAX_VIOLATIONS
            ),
        ));
    }
    let mut details = ErrorDetails::new();
    let mut summary = String::new();
    for (field, description) in listed {
        if !summary.is_empty() {
            summary.push_str("; ");
        }
        summary.push_str(&format!("{field}: {description}"));
        details.add_bad_request_violation(field, description);
    }
    Status::with_error_details(
        Code::InvalidArgument,
        cut_to_bytes(&summary, MAX_MESSAGE_BYTES),
        details,
    )
}

/// A required request field that is missing or malformed.
pub fn invalid(field: &str, description: &str) -> Status {
    HubError::Invalid(vec![Violation {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_lists_a_bounded_number_of_bounded_violations() {
        let violations: Vec<Violation> = (0..5000)
            .map(|i| Violation {
                field: format!("data.{}", "k".repeat(10_000 + i)),
                description: "è\u{0}".repeat(100_000),
            })
            .collect();
        let status = Status::from(HubError::Invalid(violations));
        assert!(status.message().len() < 2048, "{}", status.message().len());
        assert!(status.details().len() < 8192, "{}", status.details().len());
        let listed = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(listed.len(), MAX_VIOLATIONS + 1);
        assert_eq!(
            listed[MAX_VIOLATIONS].description,
            "and 4980 more violations not listed"
        );
    }
}
