//! Requests the server cannot decode, and status messages kept small, in one
//! tower layer around every service.
//!
//! tonic's prost codec answers a message it cannot decode (a string that is
//! not UTF-8, nesting past prost's recursion limit, a truncated field) with
//! `INTERNAL`, which tells the caller the hub is at fault and invites a
//! retry of the same bytes. The fault is the request's: [`MalformedLayer`]
//! turns those answers into `INVALID_ARGUMENT` naming the field prost was
//! decoding, for every method of every service at once. It also cuts any
//! status message longer than [`MAX_MESSAGE_BYTES`]: a message that echoes
//! a huge input makes standard clients fail with `RESOURCE_EXHAUSTED`
//! instead of showing the real error.

use crate::domain::validate::{bounded, cut_to_bytes};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The longest status message the hub sends, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// How prost's `DecodeError` starts when displayed (tonic's codec puts it
/// in the status message as it is).
const DECODE_ERROR: &str = "failed to decode Protobuf message: ";

/// `INVALID_ARGUMENT` for a request that does not decode, from prost's
/// description (`Inner.field: Outer.field: reason`, innermost first): the
/// field is the path from the request down to the innermost field named.
pub fn malformed(description: &str) -> Status {
    let description = description
        .strip_prefix(DECODE_ERROR)
        .unwrap_or(description);
    let mut parts: Vec<&str> = description.split(": ").collect();
    let reason = parts.pop().unwrap_or_default();
    // prost lists the fields innermost first.
    let field = parts
        .iter()
        .rev()
        .filter_map(|p| p.split_once('.').map(|(_, field)| field))
        .collect::<Vec<_>>()
        .join(".");
    let field = if field.is_empty() {
        "(request)".to_string()
    } else {
        field
    };
    let reason = bounded(&format!("is not a valid protobuf encoding: {reason}"));
    let field = bounded(&field);
    let mut details = ErrorDetails::new();
    details.add_bad_request_violation(field.clone(), reason.clone());
    Status::with_error_details(Code::InvalidArgument, format!("{field}: {reason}"), details)
}

/// Wraps every service: see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct MalformedLayer;

impl<S> tower_layer::Layer<S> for MalformedLayer {
    type Service = Malformed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Malformed { inner }
    }
}

/// The service [`MalformedLayer`] wraps.
#[derive(Debug, Clone)]
pub struct Malformed<S> {
    inner: S,
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for Malformed<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            // A refused request is answered "trailers only": the status is
            // in the headers, and that is where decoding failures land.
            if let Some(status) = rewrite(response.headers()) {
                let headers = response.headers_mut();
                for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
                    headers.remove(name);
                }
                if status.add_header(headers).is_err() {
                    tracing::error!("cannot write a rewritten status");
                }
            }
            Ok(response)
        })
    }
}

/// The status to send instead of the one in `headers`, if it must change.
fn rewrite(headers: &http::HeaderMap) -> Option<Status> {
    let status = Status::from_header_map(headers)?;
    if status.code() == Code::Internal && status.message().starts_with(DECODE_ERROR) {
        return Some(malformed(status.message()));
    }
    if status.message().len() > MAX_MESSAGE_BYTES {
        return Some(Status::with_details_and_metadata(
            status.code(),
            cut_to_bytes(status.message(), MAX_MESSAGE_BYTES),
            status.details().to_vec().into(),
            status.metadata().clone(),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decode_error_names_the_innermost_field() {
        let s = malformed(
            "failed to decode Protobuf message: Person.fiscal_code: Applicant.person: SubmitPracticeRequest.applicant: invalid string value: data is not UTF-8 encoded",
        );
        assert_eq!(s.code(), Code::InvalidArgument);
        let v = s.get_details_bad_request().unwrap().field_violations;
        assert_eq!(v[0].field, "applicant.person.fiscal_code");
        assert!(
            v[0].description.contains("not UTF-8"),
            "{}",
            v[0].description
        );
    }

    #[test]
    fn a_decode_error_of_the_whole_message_names_the_request() {
        let s = malformed("failed to decode Protobuf message: buffer underflow");
        let v = s.get_details_bad_request().unwrap().field_violations;
        assert_eq!(v[0].field, "(request)");
    }

    #[test]
    fn prost_lists_nested_fields_innermost_first() {
        use prost::Message;
        // applicant (3) { person (1) { fiscal_code (1): 0xff } }
        let bytes = [0x1a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 0xff];
        let e = raccordo_proto::v1::SubmitPracticeRequest::decode(&bytes[..]).unwrap_err();
        let v = malformed(&e.to_string())
            .get_details_bad_request()
            .unwrap()
            .field_violations;
        // prost names the oneof, not its case.
        assert_eq!(v[0].field, "applicant.subject.fiscal_code", "{e}");
    }

    #[test]
    fn prost_displays_decode_errors_as_expected() {
        use prost::Message;
        // A field-2 string (service_code) holding one byte that is not UTF-8.
        let e =
            raccordo_proto::v1::SubmitPracticeRequest::decode(&[0x12, 0x01, 0xff][..]).unwrap_err();
        let s = malformed(&e.to_string());
        let v = s.get_details_bad_request().unwrap().field_violations;
        assert_eq!(v[0].field, "service_code", "{e}");
    }
}
