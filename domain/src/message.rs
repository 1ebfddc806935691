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
pub const MESSAGE_FIELDS: [&str; 13] = [
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
}
