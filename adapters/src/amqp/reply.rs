//! The reply contract: from a message on the reply queue to an
//! [`InboundResult`], or a reason to dead-letter it.
//!
//! Correlation comes from the `correlation_id` property (the practice id the
//! hub sent as `correlation_id`), else from `practice_id` or `operation_id`
//! in the body. The body is JSON mapped by the same pointers and status
//! table as the REST adapter's replies; without a configured mapping it is
//! the canonical reply (`status`, `reason`, `protocol`, `vendor_id`,
//! `documents`, `outcome_data`, `occurred_at`). The reply's `message_id` is the dedupe
//! receipt, so a redelivered reply applies once.

use crate::adapter::{Correlation, InboundResult};
use crate::model::{AdminStatus, sha256_hex};
use crate::rest::config::ResponseMapping;
use crate::rest::response::map_success;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;

/// Why a reply cannot be applied: it goes to the dead-letter exchange
/// with these as `x-raccordo-reason` and `x-raccordo-detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    /// A fixed code, never the vendor's words (so it may be logged):
    /// `malformed`, `uncorrelated`, `refused`, or `anomaly_late` /
    /// `anomaly_contradictory` (recorded on the practice, not applied).
    pub class: &'static str,
    /// What was wrong, in words that may quote the vendor: only for the
    /// dead-lettered message's header, never for the log.
    pub detail: String,
}

impl Unusable {
    pub(crate) fn malformed(detail: impl Into<String>) -> Self {
        Self {
            class: "malformed",
            detail: detail.into(),
        }
    }
}

/// The mapping of the canonical reply contract.
pub fn canonical_mapping() -> ResponseMapping {
    ResponseMapping {
        status_pointer: Some("/status".into()),
        status_map: AdminStatus::ALL
            .into_iter()
            .map(|s| (s.as_str().to_string(), s))
            .collect(),
        default_status: AdminStatus::Registered,
        reason_pointer: Some("/reason".into()),
        protocol_pointer: Some("/protocol".into()),
        reference_pointer: Some("/vendor_id".into()),
        documents_pointer: Some("/documents".into()),
        date_pointer: None,
        required_pointers: Vec::new(),
        outcome_data: Default::default(),
        outcome_data_pointer: Some("/outcome_data".into()),
        base64_documents: Vec::new(),
        error_map: Default::default(),
    }
}

/// Reads one reply. `adapter` names the instance in the result and in the
/// external references it carries.
pub fn parse(
    adapter: &str,
    mapping: &ResponseMapping,
    properties: &BasicProperties,
    body: &[u8],
) -> Result<InboundResult, Unusable> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| Unusable::malformed(format!("the body is not JSON: {e}")))?;
    if !json.is_object() {
        return Err(Unusable::malformed("the body is not a JSON object"));
    }
    let text = |ptr: &str| {
        json.pointer(ptr)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let correlation = match properties.correlation_id().as_ref() {
        Some(id) if !id.as_str().is_empty() => Correlation::PracticeId(id.to_string()),
        _ => match (text("/practice_id"), text("/operation_id")) {
            (Some(id), _) => Correlation::PracticeId(id),
            (None, Some(op)) => Correlation::OperationId(op),
            (None, None) => {
                return Err(Unusable {
                    class: "uncorrelated",
                    detail:
                        "no correlation_id property and no practice_id or operation_id in the body"
                            .into(),
                });
            }
        },
    };
    let mapped = map_success(mapping, body, adapter).map_err(|e| Unusable::malformed(e.reason))?;
    if !mapped.remote_documents.is_empty() {
        // Fetching would need the vendor's HTTP endpoint and credentials,
        // which an AMQP instance does not have: carry documents inline.
        return Err(Unusable::malformed(
            "documents given by URL are not supported on AMQP replies: send content_base64",
        ));
    }
    let mut reply = mapped.reply;
    if let Some(at) = json.pointer("/occurred_at") {
        let parsed = at
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .ok_or_else(|| Unusable::malformed("occurred_at is not an RFC 3339 date-time"))?;
        reply.occurred_at = Some(parsed.with_timezone(&chrono::Utc));
    }
    let tenant_id =
        header_text(properties.headers().as_ref(), "tenant").or_else(|| text("/tenant_id"));
    let receipt = match properties.message_id().as_ref() {
        Some(id) if !id.as_str().is_empty() => id.to_string(),
        // No id from the vendor: the content itself identifies a redelivery.
        _ => format!("sha256:{}", sha256_hex(body)),
    };
    Ok(InboundResult {
        adapter: adapter.to_string(),
        tenant_id,
        correlation,
        reply,
        receipt: Some(receipt),
    })
}

/// A string header's value.
pub(crate) fn header_text(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    match headers?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props() -> BasicProperties {
        BasicProperties::default()
            .with_correlation_id("p-1".into())
            .with_message_id("r-1".into())
    }

    #[test]
    fn canonical_reply_maps_status_refs_and_receipt() {
        let body = br#"{"status":"APPROVED","reason":"ok","protocol":"2026/7","vendor_id":"V9",
            "occurred_at":"2026-11-23T10:00:00Z"}"#;
        let r = parse("mq", &canonical_mapping(), &props(), body).unwrap();
        assert_eq!(r.correlation, Correlation::PracticeId("p-1".into()));
        assert_eq!(r.receipt.as_deref(), Some("r-1"));
        assert_eq!(r.reply.status, Some(AdminStatus::Approved));
        assert_eq!(r.reply.reason.as_deref(), Some("ok"));
        assert_eq!(r.reply.external_refs[0].value, "2026/7");
        assert_eq!(r.reply.external_refs[1].value, "V9");
        assert!(r.reply.occurred_at.is_some());
    }

    #[test]
    fn correlation_falls_back_to_the_body() {
        let body = br#"{"status":"REGISTERED","operation_id":"op-3"}"#;
        let r = parse(
            "mq",
            &canonical_mapping(),
            &BasicProperties::default(),
            body,
        )
        .unwrap();
        assert_eq!(r.correlation, Correlation::OperationId("op-3".into()));
        assert!(r.receipt.unwrap().starts_with("sha256:"));
    }

    #[test]
    fn unusable_replies_say_why() {
        let m = canonical_mapping();
        let e = parse("mq", &m, &props(), b"not json").unwrap_err();
        assert_eq!(e.class, "malformed");
        let e = parse("mq", &m, &props(), br#"{"status":"BOH"}"#).unwrap_err();
        assert!(e.detail.contains("'BOH'"), "{}", e.detail);
        let e = parse(
            "mq",
            &m,
            &BasicProperties::default(),
            br#"{"status":"APPROVED"}"#,
        )
        .unwrap_err();
        assert_eq!(e.class, "uncorrelated");
        let e = parse(
            "mq",
            &m,
            &props(),
            br#"{"status":"APPROVED","occurred_at":"ieri"}"#,
        )
        .unwrap_err();
        assert!(e.detail.contains("occurred_at"), "{}", e.detail);
    }
}
