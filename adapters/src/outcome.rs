//! What every adapter's result mapping shares for outcome data and for
//! outcome documents sent as one base64 field: the configuration of such a
//! document and its decoding, bounded and with errors that name the field.
//!
//! Each adapter finds the field its own way (a JSON pointer in REST and
//! AMQP replies, an XML path in SOAP, a column in result files); what it
//! finds is decoded here. Outcome data values are taken as the vendor
//! wrote them (JSON values as they are, XML and CSV text as strings): the
//! hub checks and types them against the service's declaration.

use crate::model::Document;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The default bound of a document sent as one base64 field: 10 MiB.
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 10 * 1024 * 1024;

/// `[[….base64_documents]]`: an outcome document whose bytes are one
/// base64 field of the result; its name and media type come from here.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base64Document {
    /// Where the base64 text is: a JSON pointer (REST, AMQP), an XML path
    /// (SOAP) or a column (result files). A result without it (or with it
    /// empty) carries no such document.
    pub field: String,
    /// The stored document's file name (`certificato.pdf`).
    pub name: String,
    #[serde(default = "default_media_type")]
    pub media_type: String,
    /// The most bytes the decoded document may have; a larger one refuses
    /// the result.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

fn default_media_type() -> String {
    "application/octet-stream".into()
}

fn default_max_bytes() -> usize {
    DEFAULT_MAX_DOCUMENT_BYTES
}

impl Base64Document {
    /// Checks the configuration; `key` is this entry's configuration key
    /// (`response.base64_documents[0]`).
    pub fn validate(&self, key: &str) -> Result<(), (String, String)> {
        if self.field.trim().is_empty() {
            return Err((format!("{key}.field"), "must name the field".into()));
        }
        if self.name.trim().is_empty() || self.name.contains(['/', '\\']) {
            return Err((
                format!("{key}.name"),
                "must be a plain file name (no / or \\)".into(),
            ));
        }
        if self.media_type.trim().is_empty() {
            return Err((format!("{key}.media_type"), "must not be empty".into()));
        }
        if self.max_bytes == 0 {
            return Err((format!("{key}.max_bytes"), "must be at least 1".into()));
        }
        Ok(())
    }

    /// The document the base64 `text` found at [`field`](Self::field)
    /// holds; `None` when the text is empty. White space (line breaks of
    /// wrapped base64) is ignored. The error names the field and why.
    pub fn decode(&self, text: &str) -> Result<Option<Document>, String> {
        let compact: String = text.split_whitespace().collect();
        if compact.is_empty() {
            return Ok(None);
        }
        // Refused before decoding: base64 is 4 characters per 3 bytes.
        if compact.len() / 4 * 3 > self.max_bytes.saturating_add(3) {
            return Err(format!(
                "document at {}: more than max_bytes ({})",
                self.field, self.max_bytes
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| format!("document at {}: not base64: {e}", self.field))?;
        if bytes.len() > self.max_bytes {
            return Err(format!(
                "document at {}: {} bytes, more than max_bytes ({})",
                self.field,
                bytes.len(),
                self.max_bytes
            ));
        }
        Ok(Some(Document::new(
            self.name.clone(),
            self.media_type.clone(),
            bytes,
        )))
    }
}

/// Outcome data from a mapping of field names to locators: each locator
/// is looked up with `find`, and a field whose value is absent, null or
/// empty text is left out (the result does not speak of it).
pub fn collect_outcome_data(
    fields: &BTreeMap<String, String>,
    mut find: impl FnMut(&str) -> Option<Value>,
) -> Map<String, Value> {
    fields
        .iter()
        .filter_map(|(name, locator)| {
            let value = find(locator)?;
            let empty = match &value {
                Value::Null => true,
                Value::String(s) => s.trim().is_empty(),
                _ => false,
            };
            (!empty).then(|| (name.clone(), value))
        })
        .collect()
}

/// Checks an `outcome_data` mapping (`key` is its configuration key):
/// names as the service catalogue declares them, each with a locator.
pub fn validate_outcome_fields(
    key: &str,
    fields: &BTreeMap<String, String>,
) -> Result<(), (String, String)> {
    for (name, locator) in fields {
        if name.trim().is_empty() || name.contains(char::is_control) {
            return Err((
                format!("{key}.{name}"),
                "must be a field name of the service's outcome_data".into(),
            ));
        }
        if locator.trim().is_empty() {
            return Err((
                format!("{key}.{name}"),
                "must say where the value is".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pdf(max_bytes: usize) -> Base64Document {
        Base64Document {
            field: "/certificato".into(),
            name: "certificato.pdf".into(),
            media_type: "application/pdf".into(),
            max_bytes,
        }
    }

    #[test]
    fn a_base64_field_is_a_named_document() {
        let doc = pdf(100).decode("JVBE\nRi0x").unwrap().unwrap();
        assert_eq!(doc.content, b"%PDF-1");
        assert_eq!(doc.meta.name, "certificato.pdf");
        assert_eq!(doc.meta.media_type, "application/pdf");
        assert_eq!(pdf(100).decode("  ").unwrap(), None);
    }

    #[test]
    fn bad_or_large_base64_names_the_field() {
        let e = pdf(100).decode("not base64!").unwrap_err();
        assert!(
            e.contains("/certificato") && e.contains("not base64"),
            "{e}"
        );
        let e = pdf(4).decode("JVBERi0xLjQK").unwrap_err();
        assert!(
            e.contains("/certificato") && e.contains("max_bytes (4)"),
            "{e}"
        );
        let huge = "A".repeat(4000);
        let e = pdf(10).decode(&huge).unwrap_err();
        assert!(e.contains("max_bytes (10)"), "{e}");
    }

    #[test]
    fn outcome_data_leaves_out_what_the_result_does_not_say() {
        let reply = json!({"importo": 120.5, "vuoto": "", "nullo": null, "n": "A-1"});
        let fields: BTreeMap<String, String> = [
            ("importo_dovuto", "/importo"),
            ("assente", "/manca"),
            ("vuoto", "/vuoto"),
            ("nullo", "/nullo"),
            ("numero", "/n"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let data = collect_outcome_data(&fields, |p| reply.pointer(p).cloned());
        assert_eq!(
            Value::Object(data),
            json!({"importo_dovuto": 120.5, "numero": "A-1"})
        );
    }

    #[test]
    fn an_outcome_field_says_where_its_value_is() {
        let ok: BTreeMap<String, String> = [("importo_dovuto".into(), "/x".into())].into();
        assert!(validate_outcome_fields("response.outcome_data", &ok).is_ok());
        let bad: BTreeMap<String, String> = [("importo".into(), " ".into())].into();
        let (key, _) = validate_outcome_fields("response.outcome_data", &bad).unwrap_err();
        assert_eq!(key, "response.outcome_data.importo");
    }
}
