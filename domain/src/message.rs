//! The normalized message: the vendor-facing, versioned form of a practice.
//!
//! Every adapter can send it as is (JSON today; XML in the SOAP and file
//! adapters), and every template sees it as its context. Its schema is
//! published in `docs/schemas/practice-v1.schema.json`; a change that is not
//! backwards compatible gets a new `schema` value.

use crate::model::{Applicant, ChannelInfo, DocumentMeta, Operation, Submitter};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The value of [`NormalizedMessage::schema`] for this version.
pub const SCHEMA_V1: &str = "raccordo.practice/v1";

/// The top-level members of a serialized [`NormalizedMessage`], in
/// document order (the XML form writes them in this order; templates see
/// them by these names).
pub const MESSAGE_FIELDS: [&str; 14] = [
    "schema",
    "message_id",
    "operation",
    "practice_id",
    "tenant_id",
    "service_code",
    "applicant",
    "submitter",
    "channel",
    "data",
    "attachments",
    "submitted_at",
    "withdrawal_reason",
    "outcome_data",
];

/// An attachment as carried in the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageAttachment {
    #[serde(flatten)]
    pub meta: DocumentMeta,
    /// Base64 (standard alphabet) of the bytes, when sent inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
}

/// One delivery of a practice to a back office.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalizedMessage {
    /// Always `raccordo.practice/v1` for this version.
    pub schema: String,
    /// The delivery's operation id: stable across retries, so the vendor can
    /// discard duplicates.
    pub message_id: String,
    pub operation: Operation,
    pub practice_id: String,
    /// ISTAT code of the municipality.
    pub tenant_id: String,
    pub service_code: String,
    pub applicant: Applicant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitter: Option<Submitter>,
    pub channel: ChannelInfo,
    /// The form data, as submitted.
    pub data: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub attachments: Vec<MessageAttachment>,
    pub submitted_at: DateTime<Utc>,
    /// For `withdraw`: the applicant's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawal_reason: Option<String>,
    /// The outcome data the back office's results set so far, checked
    /// against the service's declaration (a withdrawal of a registered
    /// practice carries what its registration set); omitted when empty.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub outcome_data: serde_json::Map<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published schemas describe every member the message has: a
    /// member added here and not there would reach vendors undocumented.
    #[test]
    fn the_published_schemas_name_every_member() {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/schemas/practice-v1.schema.json"))
                .expect("the JSON Schema parses");
        let xsd = include_str!("../../docs/schemas/practice-v1.xsd");
        let properties = json["properties"].as_object().expect("properties");
        for member in MESSAGE_FIELDS {
            assert!(
                properties.contains_key(member),
                "JSON Schema lacks {member}"
            );
            assert!(
                xsd.contains(&format!(r#"<xs:element name="{member}""#)),
                "XSD lacks {member}"
            );
        }
        assert_eq!(
            properties.len(),
            MESSAGE_FIELDS.len(),
            "no member the message lacks"
        );
    }
}
