//! From a vendor's HTTP reply to a [`VendorReply`] or a classified failure.

use super::config::{ErrorClass, ResponseMapping};
use crate::adapter::{DeliveryError, FailureClass, VendorReply};
use crate::http::reply::scalar_text;
pub use crate::http::reply::{classify_failure, parse_retry_after};
use crate::model::{Document, ExternalRef};
use crate::outcome::collect_outcome_data;
use base64::Engine;
use serde_json::{Map, Value};
use std::time::Duration;

/// A mapped reply, plus outcome documents the vendor only linked to.
#[derive(Debug, Clone, Default)]
pub struct Mapped {
    pub reply: VendorReply,
    /// Documents to fetch (URL as written by the vendor) before applying.
    pub remote_documents: Vec<RemoteDocument>,
}

/// An outcome document given by URL.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteDocument {
    pub name: String,
    pub media_type: String,
    pub url: String,
}

/// Maps a final 2xx body with the configured pointers. `system` names the
/// adapter instance in the external references it reports.
pub fn map_success(
    mapping: &ResponseMapping,
    body: &[u8],
    system: &str,
) -> Result<Mapped, DeliveryError> {
    map_body(mapping, body, system, true)
}

/// Maps an intermediate report (a 202, a "still working" poll): the
/// status is taken only when the vendor states one — no default status,
/// no required pointers.
pub fn map_progress(
    mapping: &ResponseMapping,
    body: &[u8],
    system: &str,
) -> Result<Mapped, DeliveryError> {
    map_body(mapping, body, system, false)
}

fn map_body(
    mapping: &ResponseMapping,
    body: &[u8],
    system: &str,
    is_final: bool,
) -> Result<Mapped, DeliveryError> {
    let json: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| DeliveryError::permanent(format!("vendor reply is not valid JSON: {e}")))?
    };
    if is_final {
        for ptr in &mapping.required_pointers {
            if json.pointer(ptr).is_none_or(Value::is_null) {
                return Err(DeliveryError::permanent(format!(
                    "vendor reply has nothing at {ptr} (response.required_pointers)"
                )));
            }
        }
    }
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
        _ if is_final => Some(mapping.default_status),
        _ => None,
    };
    let occurred_at = match (text_at(&mapping.date_pointer), &mapping.date_pointer) {
        (Some(text), Some(ptr)) => Some(parse_date(&text).ok_or_else(|| {
            DeliveryError::permanent(format!(
                "vendor date '{text}' at {ptr} is neither RFC 3339 nor YYYY-MM-DD"
            ))
        })?),
        _ => None,
    };

    let mut refs = Vec::new();
    if let Some(protocol) = text_at(&mapping.protocol_pointer) {
        refs.push(ExternalRef {
            kind: "protocol".into(),
            value: protocol,
            system: system.into(),
            issued_at: occurred_at,
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

    let mut documents = Vec::new();
    let mut remote_documents = Vec::new();
    match mapping
        .documents_pointer
        .as_deref()
        .and_then(|p| json.pointer(p))
    {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match parse_document(item, i)? {
                    Doc::Inline(d) => documents.push(d),
                    Doc::Remote(r) => remote_documents.push(r),
                }
            }
        }
        Some(_) => {
            return Err(DeliveryError::permanent(format!(
                "vendor reply: {} is not an array of documents",
                mapping.documents_pointer.as_deref().unwrap_or_default()
            )));
        }
    };

    for spec in &mapping.base64_documents {
        let text = match json.pointer(&spec.field) {
            None | Some(Value::Null) => continue,
            Some(Value::String(text)) => text,
            Some(_) => {
                return Err(DeliveryError::permanent(format!(
                    "vendor reply: document at {}: not a base64 string",
                    spec.field
                )));
            }
        };
        let document = spec
            .decode(text)
            .map_err(|e| DeliveryError::permanent(format!("vendor reply: {e}")))?;
        documents.extend(document);
    }

    Ok(Mapped {
        reply: VendorReply {
            status,
            vendor_code,
            reason: text_at(&mapping.reason_pointer),
            external_refs: refs,
            documents,
            outcome_data: outcome_data(mapping, &json)?,
            occurred_at,
            follow_up: None,
        },
        remote_documents,
    })
}

/// The reply's outcome data: the members of the object at
/// `outcome_data_pointer`, then each `outcome_data` entry's value, as the
/// vendor wrote it (the hub types it by the service's declaration).
fn outcome_data(
    mapping: &ResponseMapping,
    json: &Value,
) -> Result<Map<String, Value>, DeliveryError> {
    let mut data = Map::new();
    if let Some(ptr) = &mapping.outcome_data_pointer {
        match json.pointer(ptr) {
            None | Some(Value::Null) => {}
            Some(Value::Object(members)) => {
                data.extend(
                    members
                        .iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
            }
            Some(_) => {
                return Err(DeliveryError::permanent(format!(
                    "vendor reply: {ptr} is not an object of outcome data"
                )));
            }
        }
    }
    data.extend(collect_outcome_data(&mapping.outcome_data, |ptr| {
        json.pointer(ptr).cloned()
    }));
    Ok(data)
}

fn parse_date(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    let d = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc())
}

enum Doc {
    Inline(Document),
    Remote(RemoteDocument),
}

fn parse_document(item: &Value, index: usize) -> Result<Doc, DeliveryError> {
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| item.get(*n).and_then(Value::as_str))
            .map(str::to_string)
    };
    let bad = |what: &str| DeliveryError::permanent(format!("vendor document #{index}: {what}"));
    let name = field(&["name", "filename"]).unwrap_or_else(|| format!("document-{}", index + 1));
    let media_type = field(&["media_type", "mime_type", "content_type"])
        .unwrap_or_else(|| "application/octet-stream".into());
    if let Some(content) = field(&["content_base64", "content"]) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(content.trim())
            .map_err(|e| bad(&format!("content_base64 is not base64: {e}")))?;
        return Ok(Doc::Inline(Document::new(name, media_type, bytes)));
    }
    let url = field(&["url", "href"]).ok_or_else(|| bad("has neither content_base64 nor url"))?;
    Ok(Doc::Remote(RemoteDocument {
        name,
        media_type,
        url,
    }))
}

/// Classifies a non-2xx reply (BLOCK_REST rules, then `response.error_map`).
pub fn classify(
    mapping: &ResponseMapping,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> DeliveryError {
    let mut err = classify_failure(status, retry_after, body);
    if let Some(class) = err
        .vendor_code
        .as_ref()
        .and_then(|c| mapping.error_map.get(c))
    {
        err.class = match class {
            ErrorClass::Transient => FailureClass::Transient,
            ErrorClass::Permanent => FailureClass::Permanent,
            ErrorClass::Rejection => FailureClass::Rejection,
        };
    }
    err
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
        let reply = map_success(&mapping(), body, "anagrafe").unwrap().reply;
        assert_eq!(reply.status, Some(AdminStatus::Approved));
        assert_eq!(reply.vendor_code.as_deref(), Some("OK"));
        assert_eq!(reply.external_refs[0].value, "2026/1234");
        assert_eq!(reply.external_refs[1].value, "77");
        assert_eq!(reply.documents[0].content, b"hello");
        assert_eq!(reply.documents[0].meta.size_bytes, 5);
    }

    #[test]
    fn maps_outcome_data_and_a_base64_document() {
        let m = ResponseMapping {
            outcome_data: [
                ("importo_dovuto".to_string(), "/importo".to_string()),
                ("scadenza".to_string(), "/rate/0/scadenza".to_string()),
                ("assente".to_string(), "/manca".to_string()),
            ]
            .into(),
            outcome_data_pointer: Some("/extra".into()),
            base64_documents: vec![crate::outcome::Base64Document {
                field: "/avviso_pdf".into(),
                name: "avviso.pdf".into(),
                media_type: "application/pdf".into(),
                max_bytes: 1024,
            }],
            ..mapping()
        };
        let body = br#"{"esito":"OK","importo":120.5,"rate":[{"scadenza":"2026-12-16"}],
            "extra":{"codice_avviso":"3012","nullo":null},"avviso_pdf":"JVBERi0x"}"#;
        let reply = map_success(&m, body, "tributi").unwrap().reply;
        assert_eq!(
            Value::Object(reply.outcome_data),
            serde_json::json!({"importo_dovuto": 120.5, "scadenza": "2026-12-16", "codice_avviso": "3012"})
        );
        assert_eq!(reply.documents.len(), 1);
        assert_eq!(reply.documents[0].meta.name, "avviso.pdf");
        assert_eq!(reply.documents[0].content, b"%PDF-1");
        let err = map_success(&m, br#"{"esito":"OK","avviso_pdf":"%%%"}"#, "x").unwrap_err();
        assert_eq!(err.class, FailureClass::Permanent);
        assert!(err.reason.contains("/avviso_pdf"), "{}", err.reason);
        let err = map_success(&m, br#"{"esito":"OK","extra":[1]}"#, "x").unwrap_err();
        assert!(err.reason.contains("/extra"), "{}", err.reason);
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
        let reply = map_success(&mapping(), b"{}", "x").unwrap().reply;
        assert_eq!(reply.status, Some(AdminStatus::Registered));
        let reply = map_success(&mapping(), b"", "x").unwrap().reply;
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
    fn progress_reports_take_only_stated_statuses_and_remote_documents_wait() {
        let m = mapping();
        let got = map_progress(&m, br#"{"protocollo":{"numero":"12"}}"#, "x").unwrap();
        assert_eq!(got.reply.status, None);
        assert_eq!(got.reply.external_refs[0].value, "12");
        let got = map_success(
            &m,
            br#"{"esito":"OK","documenti":[{"name":"a.pdf","url":"/doc/1"}]}"#,
            "x",
        )
        .unwrap();
        assert_eq!(got.remote_documents[0].url, "/doc/1");
    }

    #[test]
    fn required_pointers_name_the_missing_one() {
        let m = ResponseMapping {
            required_pointers: vec!["/protocollo/numero".into()],
            ..mapping()
        };
        let err = map_success(&m, br#"{"esito":"OK"}"#, "x").unwrap_err();
        assert_eq!(err.class, FailureClass::Permanent);
        assert!(err.reason.contains("/protocollo/numero"), "{}", err.reason);
    }
}
