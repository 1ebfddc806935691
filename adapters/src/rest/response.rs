//! From a vendor's HTTP reply to a [`VendorReply`] or a classified failure.

use super::config::ResponseMapping;
use crate::adapter::{DeliveryError, FailureClass, VendorReply};
use crate::model::{Document, ExternalRef};
use base64::Engine;
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// Maps a 2xx body with the configured pointers. `system` names the adapter
/// instance in the external references it reports.
pub fn map_success(
    mapping: &ResponseMapping,
    body: &[u8],
    system: &str,
) -> Result<VendorReply, DeliveryError> {
    let json: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| DeliveryError::permanent(format!("vendor reply is not valid JSON: {e}")))?
    };
    let text_at = |ptr: &Option<String>| -> Option<String> {
        ptr.as_deref()
            .and_then(|p| json.pointer(p))
            .and_then(scalar_text)
    };

    let vendor_code = text_at(&mapping.status_pointer);
    let status = match (&vendor_code, &mapping.status_pointer) {
        (Some(code), Some(ptr)) => Some(*mapping.status_map.get(code).ok_or_else(|| {
            DeliveryError::permanent(format!(
                "vendor status '{code}' at {ptr} has no entry in response.status_map"
            ))
        })?),
        _ => Some(mapping.default_status),
    };

    let mut refs = Vec::new();
    if let Some(protocol) = text_at(&mapping.protocol_pointer) {
        refs.push(ExternalRef {
            kind: "protocol".into(),
            value: protocol,
            system: system.into(),
            issued_at: None,
        });
    }
    if let Some(reference) = text_at(&mapping.reference_pointer) {
        refs.push(ExternalRef {
            kind: "vendor_id".into(),
            value: reference,
            system: system.into(),
            issued_at: None,
        });
    }

    let documents = match mapping
        .documents_pointer
        .as_deref()
        .and_then(|p| json.pointer(p))
    {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_document(item, i))
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(DeliveryError::permanent(format!(
                "vendor reply: {} is not an array of documents",
                mapping.documents_pointer.as_deref().unwrap_or_default()
            )));
        }
    };

    Ok(VendorReply {
        status,
        vendor_code,
        reason: text_at(&mapping.reason_pointer),
        external_refs: refs,
        documents,
        occurred_at: None,
    })
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_document(item: &Value, index: usize) -> Result<Document, DeliveryError> {
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| item.get(*n).and_then(Value::as_str))
            .map(str::to_string)
    };
    let bad = |what: &str| DeliveryError::permanent(format!("vendor document #{index}: {what}"));
    let content =
        field(&["content_base64", "content"]).ok_or_else(|| bad("missing content_base64"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(content.trim())
        .map_err(|e| bad(&format!("content_base64 is not base64: {e}")))?;
    let name = field(&["name", "filename"]).unwrap_or_else(|| format!("document-{}", index + 1));
    let media_type = field(&["media_type", "mime_type", "content_type"])
        .unwrap_or_else(|| "application/octet-stream".into());
    Ok(Document::new(name, media_type, bytes))
}

/// Classifies a non-2xx reply (BLOCK_REST): 408, 429 and 5xx are transient,
/// other 4xx permanent. RFC 7807 problem details (or the `{code, message}`
/// shape of the SUAP specifications) become the reason and the vendor code.
pub fn classify_failure(status: u16, retry_after: Option<Duration>, body: &[u8]) -> DeliveryError {
    let class = if status == 408 || status == 429 || status >= 500 {
        FailureClass::Transient
    } else {
        FailureClass::Permanent
    };
    let (detail, code) = problem_details(body);
    let reason = match detail {
        Some(d) => format!("HTTP {status}: {d}"),
        None => format!("HTTP {status}"),
    };
    DeliveryError {
        class,
        reason,
        vendor_code: code,
        retry_after,
    }
}

/// Extracts a readable summary and an error code from a problem+json body.
fn problem_details(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let text = |k: &str| obj.get(k).and_then(scalar_text);
    let summary: Vec<String> = ["title", "detail", "message"]
        .iter()
        .filter_map(|k| text(k))
        .collect();
    let summary = (!summary.is_empty()).then(|| truncate(&summary.join(": "), 500));
    (summary, text("code").or_else(|| text("type")))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AdminStatus;

    fn mapping() -> ResponseMapping {
        ResponseMapping {
            status_pointer: Some("/esito".into()),
            status_map: [
                ("OK".to_string(), AdminStatus::Approved),
                ("KO".to_string(), AdminStatus::Rejected),
            ]
            .into(),
            reason_pointer: Some("/motivo".into()),
            protocol_pointer: Some("/protocollo/numero".into()),
            reference_pointer: Some("/id".into()),
            documents_pointer: Some("/documenti".into()),
            ..ResponseMapping::default()
        }
    }

    #[test]
    fn maps_status_refs_and_documents() {
        let body = br#"{"esito":"OK","id":77,"protocollo":{"numero":"2026/1234"},
            "documenti":[{"name":"cert.pdf","media_type":"application/pdf","content_base64":"aGVsbG8="}]}"#;
        let reply = map_success(&mapping(), body, "anagrafe").unwrap();
        assert_eq!(reply.status, Some(AdminStatus::Approved));
        assert_eq!(reply.vendor_code.as_deref(), Some("OK"));
        assert_eq!(reply.external_refs[0].value, "2026/1234");
        assert_eq!(reply.external_refs[1].value, "77");
        assert_eq!(reply.documents[0].content, b"hello");
        assert_eq!(reply.documents[0].meta.size_bytes, 5);
    }

    #[test]
    fn unmapped_vendor_status_is_permanent_and_named() {
        let err = map_success(&mapping(), br#"{"esito":"BOH"}"#, "x").unwrap_err();
        assert_eq!(err.class, FailureClass::Permanent);
        assert!(
            err.reason.contains("'BOH'") && err.reason.contains("/esito"),
            "{}",
            err.reason
        );
    }

    #[test]
    fn missing_status_uses_the_default() {
        let reply = map_success(&mapping(), b"{}", "x").unwrap();
        assert_eq!(reply.status, Some(AdminStatus::Registered));
        let reply = map_success(&mapping(), b"", "x").unwrap();
        assert_eq!(reply.status, Some(AdminStatus::Registered));
    }

    #[test]
    fn non_json_reply_is_permanent() {
        let err = map_success(&mapping(), b"<html>", "x").unwrap_err();
        assert_eq!(err.class, FailureClass::Permanent);
    }

    #[test]
    fn failure_classes_follow_block_rest() {
        assert_eq!(
            classify_failure(503, None, b"").class,
            FailureClass::Transient
        );
        assert_eq!(
            classify_failure(429, None, b"").class,
            FailureClass::Transient
        );
        assert_eq!(
            classify_failure(400, None, b"").class,
            FailureClass::Permanent
        );
        assert_eq!(
            classify_failure(404, None, b"").class,
            FailureClass::Permanent
        );
        assert_eq!(
            classify_failure(422, None, b"").class,
            FailureClass::Permanent
        );
    }

    #[test]
    fn problem_json_becomes_reason_and_code() {
        let err = classify_failure(
            422,
            None,
            br#"{"type":"https://x/err","title":"Dati non validi","detail":"campo foglio mancante","code":"ERROR_400_001"}"#,
        );
        assert_eq!(
            err.reason,
            "HTTP 422: Dati non validi: campo foglio mancante"
        );
        assert_eq!(err.vendor_code.as_deref(), Some("ERROR_400_001"));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
