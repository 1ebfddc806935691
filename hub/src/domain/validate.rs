//! Submission validation: identifiers, the service's declared fields and the
//! size limits. Every violation names its field (as the API spells it) and
//! the reason; all of them are reported at once.

use super::identifiers::{is_istat_code, validate_fiscal_code, validate_vat_number};
use crate::config::{FieldConfig, FieldType, Limits};
use raccordo_adapters::model::{Applicant, Subject, Submitter};
use serde_json::Value;

/// One offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field in the request (`applicant.person.fiscal_code`).
    pub field: String,
    pub description: String,
}

/// Collects violations.
#[derive(Debug, Default)]
pub struct Violations(pub Vec<Violation>);

impl Violations {
    /// Records one violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How many characters of a caller's value an error message quotes.
pub const QUOTED_CHARS: usize = 64;

/// The longest field path or reason an error reports, in bytes: twenty of
/// each, with the message, stay well under the 8 KiB of details clients
/// read without trouble.
pub const MAX_REPORTED_BYTES: usize = 128;

/// A caller's value as an error message quotes it: its first
/// [`QUOTED_CHARS`] characters, escaped (control characters and quotes
/// become `\n`, `\u{0}`, …), in single quotes, with an ellipsis if cut.
/// Errors must not grow with the input: a 1 MB value in a message makes
/// the reply too large for the caller to read.
pub fn quote(value: &str) -> String {
    format!("'{}'", cut(value))
}

/// [`quote`] without the quotes: for caller-chosen names in field paths.
pub fn cut(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars().take(QUOTED_CHARS) {
        out.extend(c.escape_debug());
    }
    if value.chars().nth(QUOTED_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// `text` with its control characters escaped, cut to
/// [`MAX_REPORTED_BYTES`] (with an ellipsis): for field paths and reasons,
/// which may carry caller-chosen names (form keys).
pub fn bounded(text: &str) -> String {
    let mut escaped = String::new();
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_debug());
        } else {
            escaped.push(c);
        }
        if escaped.len() > MAX_REPORTED_BYTES {
            break;
        }
    }
    cut_to_bytes(&escaped, MAX_REPORTED_BYTES)
}

/// `text` cut at a character boundary to at most `max` bytes, with an
/// ellipsis when cut.
pub fn cut_to_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Validates the identity fields of a submission.
pub fn check_tenant_and_key(v: &mut Violations, tenant_id: &str, idempotency_key: &str) {
    if !is_istat_code(tenant_id) {
        v.add(
            "tenant_id",
            "must be the 6-digit ISTAT code of the municipality",
        );
    }
    if idempotency_key.trim().is_empty() {
        v.add(
            "idempotency_key",
            "is required: reuse the same key when retrying a submission",
        );
    } else if idempotency_key.len() > 128 {
        v.add("idempotency_key", "must be at most 128 characters");
    }
}

/// Validates the applicant (person by codice fiscale, company by partita IVA).
pub fn check_applicant(v: &mut Violations, applicant: Option<&Applicant>) {
    let Some(applicant) = applicant else {
        v.add("applicant", "is required: a person or a company");
        return;
    };
    match &applicant.subject {
        Subject::Person(p) => {
            if let Err(e) = validate_fiscal_code(&p.fiscal_code) {
                v.add(
                    "applicant.person.fiscal_code",
                    format!("is not a valid codice fiscale: {e}"),
                );
            }
        }
        Subject::Company(c) => {
            if let Err(e) = validate_vat_number(&c.vat_number) {
                v.add(
                    "applicant.company.vat_number",
                    format!("is not a valid partita IVA: {e}"),
                );
            }
            if let Some(rep) = &c.representative
                && let Err(e) = validate_fiscal_code(&rep.fiscal_code)
            {
                v.add(
                    "applicant.company.representative.fiscal_code",
                    format!("is not a valid codice fiscale: {e}"),
                );
            }
        }
    }
}

/// Validates the optional submitter.
pub fn check_submitter(v: &mut Violations, submitter: Option<&Submitter>) {
    if let Some(s) = submitter
        && let Err(e) = validate_fiscal_code(&s.person.fiscal_code)
    {
        v.add(
            "submitter.person.fiscal_code",
            format!("is not a valid codice fiscale: {e}"),
        );
    }
}

/// Validates form data against the service's declared fields. Undeclared
/// fields are refused too: a typo must not silently drop data.
pub fn check_form(
    v: &mut Violations,
    data: &serde_json::Map<String, Value>,
    fields: &[FieldConfig],
    limits: &Limits,
) {
    let size = serde_json::to_vec(data).map(|b| b.len()).unwrap_or(0);
    if size > limits.max_data_bytes {
        v.add(
            "data",
            format!(
                "is {size} bytes, more than the limit of {}",
                limits.max_data_bytes
            ),
        );
        return;
    }
    for field in fields {
        let path = format!("data.{}", field.name);
        match data.get(&field.name) {
            None | Some(Value::Null) => {
                if field.required {
                    v.add(path, "is required");
                }
            }
            Some(value) => {
                if let Err(reason) = check_value(value, field) {
                    v.add(path, reason);
                }
            }
        }
    }
    for name in data.keys() {
        if !fields.iter().any(|f| &f.name == name) {
            v.add(
                format!("data.{}", cut(name)),
                "is not a field of this service",
            );
        }
    }
}

/// Checks a vendor result's outcome data against the service's
/// `outcome_data` declaration and types it: text (an XML element, a CSV
/// cell) is read as the declared integer, number or boolean, so the
/// practice holds the same JSON whatever protocol carried it. The first
/// offending field is the error: `outcome_data.NAME: reason`, or an
/// undeclared one (nothing is silently dropped).
pub fn check_outcome_data(
    data: &serde_json::Map<String, Value>,
    fields: &[FieldConfig],
) -> Result<serde_json::Map<String, Value>, String> {
    let mut typed = serde_json::Map::new();
    for (name, value) in data {
        let path = format!("outcome_data.{}", cut(name));
        let Some(field) = fields.iter().find(|f| &f.name == name) else {
            return Err(format!(
                "{path}: is not declared in the service's outcome_data"
            ));
        };
        let value = typed_text(value, field.field_type);
        check_value(&value, field).map_err(|reason| format!("{path}: {reason}"))?;
        typed.insert(name.clone(), value);
    }
    Ok(typed)
}

/// `value` as `ty` when it is text that reads as one (`"12"` for an
/// integer, `"120.50"` for a number, `"true"` for a boolean), or a number
/// in the one JSON form of its type (integers as integers, numbers as
/// floating point), so that the same amount compares equal whichever way
/// it came; else as it is.
fn typed_text(value: &Value, ty: FieldType) -> Value {
    let float = |f: f64| {
        Some(f)
            .filter(|f| f.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
    };
    let whole = |f: f64| (f.fract() == 0.0 && f.abs() < 9e15).then(|| Value::from(f as i64));
    if let Value::Number(n) = value {
        let normal = match ty {
            FieldType::Integer => n
                .as_i64()
                .map(Value::from)
                .or_else(|| n.as_f64().and_then(whole)),
            FieldType::Number => n.as_f64().and_then(float),
            _ => None,
        };
        return normal.unwrap_or_else(|| value.clone());
    }
    let Some(text) = value.as_str().map(str::trim) else {
        return value.clone();
    };
    let parsed = match ty {
        FieldType::Integer => text.parse::<i64>().ok().map(Value::from),
        FieldType::Number => text.parse::<f64>().ok().and_then(float),
        FieldType::Boolean => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        FieldType::String | FieldType::Date | FieldType::Email => None,
    };
    parsed.unwrap_or_else(|| value.clone())
}

fn check_value(value: &Value, field: &FieldConfig) -> Result<(), String> {
    match field.field_type {
        FieldType::String => {
            let s = value.as_str().ok_or("must be a string")?;
            if let Some(p) = &field.pattern {
                // Patterns are checked at config load; a bad one here is a bug.
                let re = regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| e.to_string())?;
                if !re.is_match(s) {
                    return Err(format!("does not match the pattern {p}"));
                }
            }
            Ok(())
        }
        FieldType::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
            Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => Ok(()),
            _ => Err("must be an integer".into()),
        },
        FieldType::Number => value
            .as_f64()
            .map(|_| ())
            .ok_or_else(|| "must be a number".into()),
        FieldType::Boolean => value
            .as_bool()
            .map(|_| ())
            .ok_or_else(|| "must be true or false".into()),
        FieldType::Date => {
            let s = value.as_str().ok_or("must be a date as YYYY-MM-DD")?;
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|_| ())
                .map_err(|_| "must be a date as YYYY-MM-DD".into())
        }
        FieldType::Email => {
            let s = value.as_str().ok_or("must be an e-mail address")?;
            let ok = s.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !s.contains(char::is_whitespace)
            });
            if ok {
                Ok(())
            } else {
                Err("must be an e-mail address".into())
            }
        }
    }
}

/// Why `name` is not a safe plain file name: adapters use it as a file
/// name on vendors' systems, where `..`, separators or control characters
/// would escape or corrupt the target directory.
fn check_file_name(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!(
            "is {} bytes, more than the limit of 255",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("must be a file name, not {}", quote(name)));
    }
    if name.contains(['/', '\\']) {
        return Err("must be a plain file name, without / or \\".into());
    }
    if name.contains(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if name.trim() != name {
        return Err("must not start or end with spaces".into());
    }
    Ok(())
}

/// An attachment as submitted.
#[derive(Debug, Clone)]
pub struct AttachmentInput {
    pub name: String,
    pub media_type: String,
    /// Declared hash, if the caller sent one.
    pub sha256: String,
    pub content: Vec<u8>,
}

/// Validates attachments: count, sizes, names, declared hashes against
/// `digests` (the lower-case hex SHA-256 of each attachment, in order,
/// computed once by the caller, which keeps them for the stored documents).
pub fn check_attachments(
    v: &mut Violations,
    attachments: &[AttachmentInput],
    digests: &[String],
    limits: &Limits,
) {
    if attachments.len() > limits.max_attachments {
        v.add(
            "attachments",
            format!(
                "has {} items, more than the limit of {}",
                attachments.len(),
                limits.max_attachments
            ),
        );
    }
    let mut total = 0usize;
    let mut seen = std::collections::HashMap::new();
    for (i, a) in attachments.iter().enumerate() {
        let path = format!("attachments[{i}]");
        total += a.content.len();
        if a.name.trim().is_empty() {
            v.add(format!("{path}.name"), "is required");
        } else if let Err(reason) = check_file_name(&a.name) {
            v.add(format!("{path}.name"), reason);
        } else if let Some(first) = seen.insert(a.name.as_str(), i) {
            // Adapters write attachments by name (file drop, SOAP
            // multipart): a second one would replace the first.
            v.add(
                format!("{path}.name"),
                format!("is also the name of attachments[{first}]"),
            );
        }
        if a.media_type.trim().is_empty() {
            v.add(
                format!("{path}.media_type"),
                "is required (e.g. application/pdf)",
            );
        }
        if a.content.is_empty() {
            v.add(format!("{path}.content"), "is empty");
        }
        if a.content.len() > limits.max_attachment_bytes {
            v.add(
                format!("{path}.content"),
                format!(
                    "is {} bytes, more than the limit of {}",
                    a.content.len(),
                    limits.max_attachment_bytes
                ),
            );
        }
        if !a.sha256.is_empty() {
            let actual = digests.get(i).map_or("", String::as_str);
            if !a.sha256.eq_ignore_ascii_case(actual) {
                v.add(format!("{path}.sha256"), "does not match the content");
            }
        }
    }
    if total > limits.max_total_attachment_bytes {
        v.add(
            "attachments",
            format!(
                "total {total} bytes, more than the limit of {}",
                limits.max_total_attachment_bytes
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, t: FieldType, required: bool, pattern: Option<&str>) -> FieldConfig {
        FieldConfig {
            name: name.into(),
            field_type: t,
            required,
            pattern: pattern.map(str::to_string),
            description: String::new(),
        }
    }

    #[test]
    fn form_fields_are_checked_by_type_pattern_and_presence() {
        let fields = vec![
            field("foglio", FieldType::Integer, true, None),
            field("cap", FieldType::String, true, Some("[0-9]{5}")),
            field("dal", FieldType::Date, false, None),
            field("mq", FieldType::Number, false, None),
            field("email", FieldType::Email, false, None),
        ];
        let data = serde_json::json!({"cap": "2412", "dal": "2026-02-30", "mq": "tanti", "extra": 1, "email": "x@"});
        let mut v = Violations::default();
        check_form(
            &mut v,
            data.as_object().unwrap(),
            &fields,
            &Limits::default(),
        );
        let got: Vec<_> = v.0.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(
            got,
            [
                "data.foglio",
                "data.cap",
                "data.dal",
                "data.mq",
                "data.email",
                "data.extra"
            ]
        );
        assert!(v.0[1].description.contains("[0-9]{5}"));
    }

    #[test]
    fn outcome_data_is_typed_by_its_declaration() {
        let fields = vec![
            field("importo_dovuto", FieldType::Number, false, None),
            field("rate", FieldType::Integer, false, None),
            field("pagato", FieldType::Boolean, false, None),
            field("scadenza", FieldType::Date, false, None),
            field("numero", FieldType::String, false, Some("C-[0-9]+")),
        ];
        let data = serde_json::json!({"importo_dovuto": " 120.50", "rate": "3", "pagato": "false",
            "scadenza": "2026-12-16", "numero": "C-12"});
        let typed = check_outcome_data(data.as_object().unwrap(), &fields).unwrap();
        assert_eq!(
            Value::Object(typed),
            serde_json::json!({"importo_dovuto": 120.5, "rate": 3, "pagato": false,
                "scadenza": "2026-12-16", "numero": "C-12"})
        );
        // JSON values are taken as they are.
        let data = serde_json::json!({"importo_dovuto": 7, "rate": 2});
        assert!(check_outcome_data(data.as_object().unwrap(), &fields).is_ok());
    }

    #[test]
    fn bad_outcome_data_names_the_field() {
        let fields = vec![
            field("importo_dovuto", FieldType::Number, false, None),
            field("scadenza", FieldType::Date, false, None),
            field("numero", FieldType::String, false, Some("C-[0-9]+")),
        ];
        for (data, want) in [
            (
                serde_json::json!({"importo_dovuto": "tanti"}),
                "outcome_data.importo_dovuto: must be a number",
            ),
            (
                serde_json::json!({"scadenza": "16/12/2026"}),
                "outcome_data.scadenza: must be a date as YYYY-MM-DD",
            ),
            (
                serde_json::json!({"numero": "X"}),
                "outcome_data.numero: does not match the pattern C-[0-9]+",
            ),
            (
                serde_json::json!({"sconosciuto": 1}),
                "outcome_data.sconosciuto: is not declared in the service's outcome_data",
            ),
        ] {
            let e = check_outcome_data(data.as_object().unwrap(), &fields).unwrap_err();
            assert_eq!(e, want);
        }
    }

    #[test]
    fn valid_form_passes() {
        let fields = vec![field("foglio", FieldType::Integer, true, None)];
        let data = serde_json::json!({"foglio": 12});
        let mut v = Violations::default();
        check_form(
            &mut v,
            data.as_object().unwrap(),
            &fields,
            &Limits::default(),
        );
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn unsafe_file_names_are_refused() {
        for name in [
            ".",
            "..",
            "a/b",
            "a\\b",
            "a\0b",
            "a\nb",
            " a",
            "a ",
            &"x".repeat(256),
        ] {
            assert!(check_file_name(name).is_err(), "{name:?}");
        }
        for name in ["a.pdf", "..a", "pianta piano terra.pdf", &"x".repeat(255)] {
            assert!(check_file_name(name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn attachments_are_checked() {
        let limits = Limits {
            max_attachment_bytes: 4,
            ..Limits::default()
        };
        let a = |name: &str, content: &[u8], sha: &str| AttachmentInput {
            name: name.into(),
            media_type: "text/plain".into(),
            sha256: sha.into(),
            content: content.to_vec(),
        };
        let mut v = Violations::default();
        let attachments = [
            a("../x", b"ok", ""),
            a("big.txt", b"12345", ""),
            a("h.txt", b"ab", "00"),
        ];
        let digests: Vec<_> = attachments
            .iter()
            .map(|a| raccordo_adapters::model::sha256_hex(&a.content))
            .collect();
        check_attachments(&mut v, &attachments, &digests, &limits);
        let got: Vec<_> = v.0.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(
            got,
            [
                "attachments[0].name",
                "attachments[1].content",
                "attachments[2].sha256"
            ]
        );
    }
}
