//! What the callbacks of the HTTP protocols share: a pushed result is
//! correlated the same way whether it came as JSON (REST) or SOAP.

use crate::adapter::{
    Correlation, InboundError, InboundOutcome, InboundResult, ResultSink, VendorReply,
};
use crate::model::sha256_hex;

/// The external-reference kind under which a vendor's correlation id is stored.
pub const CORRELATION_KIND: &str = "correlation_id";

/// Applies a pushed result named by the vendor's correlation id: as the
/// reference the vendor returned when it accepted the request, else as our
/// operation id (a vendor that adopted it may call back before its
/// acceptance was recorded). The receipt is the vendor's message id, or a
/// hash of correlation and body, so a re-sent callback applies once.
pub async fn apply_correlated(
    sink: &dyn ResultSink,
    adapter: &str,
    correlation: &str,
    reply: VendorReply,
    message_id: Option<&str>,
    body: &[u8],
) -> Result<InboundOutcome, InboundError> {
    let receipt = message_id.map(str::to_string).unwrap_or_else(|| {
        let mut keyed = correlation.as_bytes().to_vec();
        keyed.push(b'\n');
        keyed.extend_from_slice(body);
        sha256_hex(&keyed)
    });
    let mut result = InboundResult {
        adapter: adapter.to_string(),
        tenant_id: None,
        correlation: Correlation::ExternalRef {
            kind: CORRELATION_KIND.into(),
            value: correlation.to_string(),
        },
        reply,
        receipt: Some(receipt),
    };
    let outcome = sink.apply(result.clone()).await;
    if !matches!(outcome, Err(InboundError::Uncorrelated(_))) {
        return outcome;
    }
    result.correlation = Correlation::OperationId(correlation.to_string());
    sink.apply(result).await
}
