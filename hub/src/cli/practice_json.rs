//! Practices as JSON: the API's canonical proto3 JSON mapping, the same
//! that grpcurl, the gRPC gateways and docs/api.md use, read and written
//! through the API's own descriptors (so it cannot drift from the proto).
//!
//! Reading accepts both spellings of field names (`tenantId` and
//! `tenant_id`), enum values by name, 64-bit integers as numbers or
//! strings, bytes as base64 and timestamps in RFC 3339. Writing gives
//! lowerCamelCase names, leaves out fields at their default values, and
//! timestamps in UTC.

use anyhow::Context;
use base64::Engine;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use raccordo_proto::v1 as pb;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The API's descriptors, decoded once.
fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("the API's own descriptor set")
    })
}

fn descriptor(name: &str) -> MessageDescriptor {
    pool()
        .get_message_by_name(&format!("raccordo.v1.{name}"))
        .unwrap_or_else(|| panic!("raccordo.v1.{name} is in the API"))
}

/// A message in its canonical JSON form.
pub fn to_json<T: prost::Message>(message_name: &str, message: &T) -> Value {
    let mut dynamic = DynamicMessage::new(descriptor(message_name));
    dynamic
        .transcode_from(message)
        .expect("a message of the API transcodes to its own descriptor");
    let options = SerializeOptions::new()
        .stringify_64_bit_integers(true)
        .skip_default_fields(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("JSON can hold any message")
}

/// Reads a message from its canonical JSON form; the error names the
/// field and the reason.
pub fn from_json<T: prost::Message + Default>(
    message_name: &str,
    json: &Value,
) -> anyhow::Result<T> {
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(json, &mut track);
    let dynamic =
        serde::de::DeserializeSeed::deserialize(descriptor(message_name), de).map_err(|e| {
            let path = track.path().to_string();
            if path == "." {
                anyhow::anyhow!("{e}")
            } else {
                anyhow::anyhow!("{path}: {e}")
            }
        })?;
    Ok(dynamic.transcode_to()?)
}

/// A practice to submit, read from a JSON file (`-`: standard input).
///
/// The file is a `SubmitPracticeRequest` in the API's JSON (as in
/// docs/api.md), with two conveniences: `idempotency_key` may be left out
/// (a fresh UUID is used, so running the command twice submits twice), and
/// an attachment may give `path` (a file, relative to the JSON file)
/// instead of `content`. The shorthand of earlier versions
/// (`"applicant": {"type": "person", …}`, `"channel": {"kind": …}`,
/// `content_base64`) is still read.
pub fn read_submission(file: &Path) -> anyhow::Result<pb::SubmitPracticeRequest> {
    let (text, base) = if file == Path::new("-") {
        (
            std::io::read_to_string(std::io::stdin())?,
            PathBuf::from("."),
        )
    } else {
        (
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?,
            file.parent().map(Path::to_path_buf).unwrap_or_default(),
        )
    };
    let mut json: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", file.display()))?;
    submission_from_json(&mut json, &base).with_context(|| file.display().to_string())
}

/// The request in `json`, after the conveniences of [`read_submission`];
/// attachment paths are relative to `base`.
pub fn submission_from_json(
    json: &mut Value,
    base: &Path,
) -> anyhow::Result<pb::SubmitPracticeRequest> {
    let Value::Object(fields) = json else {
        anyhow::bail!("must be a JSON object (a SubmitPracticeRequest)");
    };
    shorthand_to_canonical(fields);
    if let Some(Value::Array(attachments)) = fields.get_mut("attachments") {
        for (i, a) in attachments.iter_mut().enumerate() {
            let Value::Object(a) = a else { continue };
            let Some(path) = a.remove("path") else {
                continue;
            };
            let path = path
                .as_str()
                .with_context(|| format!("attachments[{i}].path: must be a string"))?;
            if a.contains_key("content") {
                anyhow::bail!("attachments[{i}]: give either path or content, not both");
            }
            let bytes = std::fs::read(base.join(path))
                .with_context(|| format!("attachments[{i}].path: cannot read {path}"))?;
            a.insert(
                "content".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            );
        }
    }
    let mut request: pb::SubmitPracticeRequest = from_json("SubmitPracticeRequest", json)?;
    for a in &mut request.attachments {
        a.size_bytes = a.content.len() as u64;
    }
    if request.idempotency_key.is_empty() {
        request.idempotency_key = uuid::Uuid::now_v7().to_string();
    }
    Ok(request)
}

/// Rewrites the earlier shorthand into the canonical form, in place: the
/// applicant's `type` and flattened fields, the channel's `kind`, and
/// `content_base64`. A canonical document is left as it is.
fn shorthand_to_canonical(fields: &mut serde_json::Map<String, Value>) {
    if let Some(Value::Object(applicant)) = fields.get_mut("applicant")
        && let Some(Value::String(kind)) = applicant.remove("type")
    {
        let contacts = applicant.remove("contacts");
        let subject = std::mem::take(applicant);
        applicant.insert(kind.to_ascii_lowercase(), Value::Object(subject));
        if let Some(contacts) = contacts {
            applicant.insert("contacts".into(), contacts);
        }
    }
    if let Some(Value::Object(channel)) = fields.get_mut("channel")
        && let Some(kind) = channel.remove("kind")
    {
        channel.insert("channel".into(), kind);
    }
    if let Some(Value::Array(attachments)) = fields.get_mut("attachments") {
        for a in attachments {
            if let Value::Object(a) = a
                && let Some(content) = a.remove("content_base64")
            {
                a.insert("content".into(), content);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_canonical_form_and_the_shorthand_give_the_same_request() {
        let mut canonical = json!({
            "tenantId": "016024", "service_code": "CERT",
            "idempotencyKey": "k-1",
            "applicant": {"person": {"fiscalCode": "RSSMRA45D25F205N", "given_name": "Mario"},
                          "contacts": {"email": "m@example.it"}},
            "channel": {"channel": "DESK", "operatorId": "op-1"},
            "data": {"copie": 1, "uso": "BOLLO"},
            "attachments": [{"name": "a.txt", "mediaType": "text/plain", "content": "aGk="}]
        });
        let mut shorthand = json!({
            "tenant_id": "016024", "service_code": "CERT", "idempotency_key": "k-1",
            "applicant": {"type": "person", "fiscal_code": "RSSMRA45D25F205N", "given_name": "Mario",
                          "contacts": {"email": "m@example.it"}},
            "channel": {"kind": "DESK", "operator_id": "op-1"},
            "data": {"copie": 1, "uso": "BOLLO"},
            "attachments": [{"name": "a.txt", "media_type": "text/plain", "content_base64": "aGk="}]
        });
        let a = submission_from_json(&mut canonical, Path::new(".")).unwrap();
        let b = submission_from_json(&mut shorthand, Path::new(".")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.attachments[0].content, b"hi");
        assert_eq!(a.attachments[0].size_bytes, 2);
        assert_eq!(a.channel.unwrap().channel, pb::Channel::Desk as i32);
    }

    #[test]
    fn a_wrong_field_is_named() {
        let mut bad = json!({"tenantId": "016024", "applicant": {"person": {"fiscalCod": "X"}}});
        let e = submission_from_json(&mut bad, Path::new(".")).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("applicant.person") && e.contains("fiscalCod"),
            "{e}"
        );
        let mut bad = json!({"channel": {"channel": "POSTA"}});
        let e = format!(
            "{:#}",
            submission_from_json(&mut bad, Path::new(".")).unwrap_err()
        );
        assert!(e.contains("channel.channel") && e.contains("POSTA"), "{e}");
    }

    #[test]
    fn a_practice_is_written_in_the_canonical_form() {
        let practice = pb::Practice {
            id: "p-1".into(),
            tenant_id: "016024".into(),
            status: pb::AdministrativeStatus::Approved as i32,
            received_at: Some(prost_types::Timestamp {
                seconds: 1_780_000_000,
                nanos: 0,
            }),
            outcome: Some(pb::Outcome {
                documents: vec![pb::Attachment {
                    name: "c.pdf".into(),
                    size_bytes: 50,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let json = to_json("Practice", &practice);
        assert_eq!(json["tenantId"], "016024");
        assert_eq!(json["status"], "APPROVED");
        assert_eq!(json["receivedAt"], "2026-05-28T20:26:40Z");
        assert_eq!(json["outcome"]["documents"][0]["sizeBytes"], "50");
        assert!(json.get("mode").is_none(), "defaults are left out: {json}");
        let back: pb::Practice = from_json("Practice", &json).unwrap();
        assert_eq!(back, practice);
    }
}
