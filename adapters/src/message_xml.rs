//! The normalized message as XML (`urn:raccordo:practice:v1`), for vendors
//! that read XML (file drops, SOAP bodies).
//!
//! The document mirrors the JSON form field by field: every JSON member
//! becomes an element of the same name, in the same nesting, with the same
//! presence rules (optional fields are omitted, never empty). Two things
//! differ because XML needs them:
//!
//! - `data` keys are free text chosen by the service catalogue, so each form
//!   field is a `<field name="…" type="…">` element (`type` is `string`,
//!   `number`, `boolean`, `null`, `object` or `array`; objects and arrays
//!   nest `<field>` children, array items without `name`).
//!   `outcome_data` (the outcome data results set so far) is written the
//!   same way.
//! - `attachments` is a list of `<attachment>` elements; an attachment
//!   written as a separate file carries `<file>` with that file's name.
//!
//! The schema is published in `docs/schemas/practice-v1.xsd`. Text is
//! escaped by quick-xml, so form data can never break the document.

use crate::message::NormalizedMessage;
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde_json::{Map, Value};

/// The namespace of the XML form of `raccordo.practice/v1`.
pub const NAMESPACE_V1: &str = "urn:raccordo:practice:v1";

/// Top-level members in document order (the schema accepts any order).
const ORDER: &[&str] = &crate::message::MESSAGE_FIELDS;

/// Writes `message` as an XML document (UTF-8, with declaration).
pub fn to_xml(message: &NormalizedMessage) -> Result<Vec<u8>, String> {
    let value = serde_json::to_value(message).map_err(|e| format!("cannot encode message: {e}"))?;
    let Value::Object(map) = value else {
        return Err("the message is not an object".into());
    };
    to_xml_from_map(&map)
}

/// Writes a message already turned into JSON (an adapter may have adjusted
/// it, e.g. replaced inline attachment content by file names).
pub fn to_xml_from_map(map: &Map<String, Value>) -> Result<Vec<u8>, String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let io = |e: std::io::Error| format!("cannot write XML: {e}");
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(io)?;
    let mut root = BytesStart::new("practice");
    root.push_attribute(("xmlns", NAMESPACE_V1));
    w.write_event(Event::Start(root)).map_err(io)?;
    for key in ORDER {
        let Some(v) = map.get(*key) else { continue };
        match *key {
            // Both hold fields of names the catalogue chose.
            "data" | "outcome_data" => {
                let Value::Object(fields) = v else {
                    return Err(format!("{key} is not an object"));
                };
                w.write_event(Event::Start(BytesStart::new(*key)))
                    .map_err(io)?;
                for (name, value) in fields {
                    write_field(&mut w, Some(name), value).map_err(io)?;
                }
                w.write_event(Event::End(BytesEnd::new(*key))).map_err(io)?;
            }
            "attachments" => {
                let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
                w.write_event(Event::Start(BytesStart::new("attachments")))
                    .map_err(io)?;
                for item in items {
                    write_element(&mut w, "attachment", item).map_err(io)?;
                }
                w.write_event(Event::End(BytesEnd::new("attachments")))
                    .map_err(io)?;
            }
            _ => write_element(&mut w, key, v).map_err(io)?,
        }
    }
    // Members added to the JSON form later still travel (open schema).
    for (key, v) in map {
        if !ORDER.contains(&key.as_str()) && is_xml_name(key) {
            write_element(&mut w, key, v).map_err(io)?;
        }
    }
    w.write_event(Event::End(BytesEnd::new("practice")))
        .map_err(io)?;
    let mut out = w.into_inner();
    out.push(b'\n');
    Ok(out)
}

/// A fixed-name element: objects become child elements, scalars text.
fn write_element(w: &mut Writer<Vec<u8>>, name: &str, v: &Value) -> std::io::Result<()> {
    match v {
        Value::Null => Ok(()),
        Value::Object(map) if map.is_empty() => w.write_event(Event::Empty(BytesStart::new(name))),
        Value::Object(map) => {
            w.write_event(Event::Start(BytesStart::new(name)))?;
            for (k, child) in map {
                if is_xml_name(k) {
                    write_element(w, k, child)?;
                }
            }
            w.write_event(Event::End(BytesEnd::new(name)))
        }
        Value::Array(items) => {
            for item in items {
                write_element(w, name, item)?;
            }
            Ok(())
        }
        scalar => {
            w.create_element(name)
                .write_text_content(BytesText::new(&scalar_text(scalar)))?;
            Ok(())
        }
    }
}

/// A form field of free name: `<field name="…" type="…">`.
fn write_field(w: &mut Writer<Vec<u8>>, name: Option<&str>, v: &Value) -> std::io::Result<()> {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let mut start = BytesStart::new("field");
    if let Some(n) = name {
        start.push_attribute(("name", n));
    }
    start.push_attribute(("type", kind));
    match v {
        Value::Null => w.write_event(Event::Empty(start)),
        Value::Object(map) => {
            w.write_event(Event::Start(start))?;
            for (k, child) in map {
                write_field(w, Some(k), child)?;
            }
            w.write_event(Event::End(BytesEnd::new("field")))
        }
        Value::Array(items) => {
            w.write_event(Event::Start(start))?;
            for item in items {
                write_field(w, None, item)?;
            }
            w.write_event(Event::End(BytesEnd::new("field")))
        }
        scalar => {
            w.write_event(Event::Start(start))?;
            w.write_event(Event::Text(BytesText::new(&scalar_text(scalar))))?;
            w.write_event(Event::End(BytesEnd::new("field")))
        }
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Conservative XML name check (ASCII letters, digits, `_`, `-`, `.`).
fn is_xml_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MessageAttachment, SCHEMA_V1};
    use crate::model::*;
    use quick_xml::Reader;

    fn message() -> NormalizedMessage {
        let mut data = Map::new();
        data.insert("nota".into(), serde_json::json!("a <b>&</b> \"q\""));
        data.insert("mq".into(), serde_json::json!(85.5));
        data.insert("vani".into(), serde_json::json!([1, {"x": true}]));
        NormalizedMessage {
            schema: SCHEMA_V1.into(),
            message_id: "op-1".into(),
            operation: Operation::Submit,
            practice_id: "p-1".into(),
            tenant_id: "016024".into(),
            service_code: "TARI".into(),
            applicant: Applicant {
                subject: Subject::Person(Person {
                    fiscal_code: "RSSMRA45D25F205N".into(),
                    given_name: "Mario".into(),
                    family_name: "D'Alò".into(),
                }),
                contacts: Contacts::default(),
            },
            submitter: None,
            channel: ChannelInfo::default(),
            data,
            attachments: vec![MessageAttachment {
                meta: DocumentMeta {
                    name: "planimetria.pdf".into(),
                    media_type: "application/pdf".into(),
                    size_bytes: 3,
                    sha256: "ab".into(),
                },
                content_base64: Some("YWJj".into()),
            }],
            submitted_at: chrono::Utc::now(),
            withdrawal_reason: None,
            outcome_data: Default::default(),
        }
    }

    /// Every text node, in order, as (element path, text).
    fn texts(xml: &[u8]) -> Vec<(String, String)> {
        let mut reader = Reader::from_reader(xml);
        let mut path: Vec<String> = Vec::new();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            match reader.read_event_into(&mut buf).expect("well-formed XML") {
                Event::Start(e) => {
                    path.push(e.name().as_ref().to_string());
                    out.push((path.join("/"), String::new()));
                }
                Event::End(_) => {
                    path.pop();
                }
                Event::Text(t) => {
                    if let Some((_, s)) = out.last_mut() {
                        s.push_str(&t.xml10_content());
                    }
                }
                Event::GeneralRef(r) => {
                    let name = r.xml10_content().into_owned();
                    let ch = quick_xml::escape::resolve_predefined_entity(&name)
                        .unwrap_or_else(|| panic!("unexpected entity {name}"));
                    if let Some((_, s)) = out.last_mut() {
                        s.push_str(ch);
                    }
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        // Indentation after a child's end lands in the parent's text.
        out.into_iter()
            .map(|(p, s)| (p, s.trim().to_string()))
            .filter(|(_, s)| !s.is_empty())
            .collect()
    }

    #[test]
    fn mirrors_the_json_form_and_escapes_form_data() {
        let xml = to_xml(&message()).unwrap();
        let s = String::from_utf8(xml.clone()).unwrap();
        assert!(
            s.contains(r#"<practice xmlns="urn:raccordo:practice:v1">"#),
            "{s}"
        );
        assert!(
            s.contains(r#"<field name="mq" type="number">85.5</field>"#),
            "{s}"
        );
        assert!(!s.contains("<b>"), "{s}");
        let t = texts(&xml);
        let get = |p: &str| t.iter().find(|(k, _)| k == p).map(|(_, v)| v.clone());
        assert_eq!(get("practice/schema").as_deref(), Some(SCHEMA_V1));
        assert_eq!(get("practice/applicant/type").as_deref(), Some("person"));
        assert_eq!(
            get("practice/applicant/family_name").as_deref(),
            Some("D'Alò")
        );
        assert_eq!(get("practice/data/field").as_deref(), Some("85.5"));
        assert!(t.iter().any(|(_, v)| v == "a <b>&</b> \"q\""), "{t:?}");
        assert_eq!(
            get("practice/attachments/attachment/content_base64").as_deref(),
            Some("YWJj")
        );
        // Optional members without a value are omitted, not empty.
        assert!(!s.contains("submitter") && !s.contains("withdrawal_reason"));
        assert!(!s.contains("outcome_data"), "{s}");
    }

    #[test]
    fn outcome_data_is_written_as_fields_after_the_submission() {
        let mut m = message();
        m.operation = Operation::Withdraw;
        m.outcome_data = serde_json::json!({"importo_dovuto": 120.5, "codice": "A&B"})
            .as_object()
            .cloned()
            .unwrap();
        let s = String::from_utf8(to_xml(&m).unwrap()).unwrap();
        assert!(
            s.contains(r#"<field name="importo_dovuto" type="number">120.5</field>"#),
            "{s}"
        );
        assert!(
            s.contains(r#"<field name="codice" type="string">A&amp;B</field>"#),
            "{s}"
        );
        let data = s.find("<outcome_data>").expect("outcome_data");
        assert!(s.find("<submitted_at>").unwrap() < data, "{s}");
    }
}
