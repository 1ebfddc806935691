//! Request templates, shared by every adapter.
//!
//! Templates are MiniJinja. Their context is the normalized message's fields
//! at the top level (`practice_id`, `applicant.fiscal_code`, `data.*`, …), plus
//! `operation_id` and the route's variables as `route.*`. Output is escaped
//! for the target format by default (JSON or XML), so form data can never
//! break the document; `| safe` opts out where an engineer really means it.

use crate::adapter::DeliveryRequest;
use crate::message::{MESSAGE_FIELDS, NormalizedMessage};
use minijinja::value::{Object, Serde};
use minijinja::{AutoEscape, Environment, Value};
use std::sync::{Arc, OnceLock};

/// The escaping a template's output needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    Json,
    Xml,
    /// A URL path: every value is percent-encoded as one path segment, so
    /// `/pratiche/{{ id }}` cannot be steered elsewhere by a `/` or `?`.
    UrlPath,
    None,
}

impl Escape {
    /// Chooses the escaping from a content type.
    pub fn for_content_type(content_type: &str) -> Self {
        let ct = content_type.to_ascii_lowercase();
        if ct.contains("json") {
            Self::Json
        } else if ct.contains("xml") {
            Self::Xml
        } else {
            Self::None
        }
    }
}

/// Upper bound on template execution steps: a runaway loop in a template
/// fails the delivery instead of spinning a worker.
const FUEL: u64 = 200_000;

/// A set of compiled templates of one adapter instance.
pub struct Templates {
    env: Environment<'static>,
    escapes: std::collections::HashMap<String, Escape>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// An empty set.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        // Escaping follows the suffix `add` gives each template's name.
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".json") {
                AutoEscape::Json
            } else if name.ends_with(".xml") {
                // HTML escaping only emits XML-valid entities and char references.
                AutoEscape::Html
            } else if name.ends_with(".path") {
                AutoEscape::Custom("path".into())
            } else {
                AutoEscape::None
            }
        });
        env.add_filter("fixed", fixed);
        env.set_formatter(|out, state, value| {
            if matches!(state.auto_escape(), AutoEscape::Custom(n) if n == "path") {
                if value.is_safe() {
                    return write!(out, "{value}").map_err(minijinja::Error::from);
                }
                let text = value.to_string();
                return out
                    .write_str(&percent_encode_segment(&text))
                    .map_err(minijinja::Error::from);
            }
            minijinja::escape_formatter(out, state, value)
        });
        Self {
            env,
            escapes: Default::default(),
        }
    }

    /// Compiles `source` under `name` with the given escaping. Errors carry
    /// the template's line.
    pub fn add(&mut self, name: &str, source: String, escape: Escape) -> Result<(), String> {
        self.env
            .add_template_owned(internal_name(name, escape), source)
            .map_err(|e| describe(&e))?;
        self.escapes.insert(name.to_string(), escape);
        Ok(())
    }

    /// Renders `name` for a delivery.
    pub fn render(&self, name: &str, request: &DeliveryRequest) -> Result<String, String> {
        let escape = self
            .escapes
            .get(name)
            .copied()
            .ok_or_else(|| format!("template '{name}' is not defined"))?;
        let tmpl = self
            .env
            .get_template(&internal_name(name, escape))
            .map_err(|e| describe(&e))?;
        tmpl.render(context(request)).map_err(|e| describe(&e))
    }

    /// Renders a one-off string template (paths, header values) without escaping.
    pub fn render_str(&self, source: &str, request: &DeliveryRequest) -> Result<String, String> {
        self.env
            .render_str(source, context(request))
            .map_err(|e| describe(&e))
    }
}

/// `{{ value | fixed(10) }}`: exactly `width` characters, cut or padded
/// with spaces (`fixed(8, "right")` aligns right, `fixed(8, "right", "0")`
/// pads with zeros) — for fixed-width records. Counts characters, not
/// bytes, so accented letters keep columns aligned in any encoding.
fn fixed(
    value: Value,
    width: usize,
    align: Option<String>,
    pad: Option<String>,
) -> Result<String, minijinja::Error> {
    let text = if value.is_undefined() || value.is_none() {
        String::new()
    } else {
        value.to_string()
    };
    let pad = pad.and_then(|p| p.chars().next()).unwrap_or(' ');
    let cut: String = text.chars().take(width).collect();
    let fill: String = std::iter::repeat_n(pad, width - cut.chars().count()).collect();
    match align.as_deref() {
        None | Some("left") => Ok(format!("{cut}{fill}")),
        Some("right") => Ok(format!("{fill}{cut}")),
        Some(other) => Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("fixed: align must be \"left\" or \"right\", not \"{other}\""),
        )),
    }
}

/// The context of one delivery's templates.
fn context(request: &DeliveryRequest) -> Value {
    Value::from_object(DeliveryContext {
        message: Arc::clone(&request.message),
        route_vars: Arc::clone(&request.route_vars),
        values: Default::default(),
    })
}

/// The names a delivery's template context adds to the message's own
/// fields ([`MESSAGE_FIELDS`]).
const EXTRA_FIELDS: [&str; 2] = ["operation_id", "route"];

/// Where `name` sits among the context's fields, if it is one.
fn field_index(name: &str) -> Option<usize> {
    MESSAGE_FIELDS
        .iter()
        .chain(&EXTRA_FIELDS)
        .position(|f| *f == name)
}

/// A delivery's template context, converted field by field when a template
/// first reads it: a constant path, or a body naming three fields, does
/// not convert the whole form (converting it up front for every template
/// was a tenth of a REST delivery's CPU).
#[derive(Debug)]
struct DeliveryContext {
    message: Arc<NormalizedMessage>,
    route_vars: Arc<serde_json::Map<String, serde_json::Value>>,
    /// Each field (see [`field_index`]) once converted; `None` for an
    /// optional field the message does not carry (undefined, as when the
    /// message is serialized without it).
    values: [OnceLock<Option<Value>>; MESSAGE_FIELDS.len() + EXTRA_FIELDS.len()],
}

impl DeliveryContext {
    fn convert(&self, field: &str) -> Option<Value> {
        let m = &*self.message;
        fn serde<T: serde::Serialize>(value: &T) -> Value {
            Value::from(Serde(value))
        }
        Some(match field {
            "schema" => Value::from(m.schema.as_str()),
            "message_id" | "operation_id" => Value::from(m.message_id.as_str()),
            "operation" => serde(&m.operation),
            "practice_id" => Value::from(m.practice_id.as_str()),
            "tenant_id" => Value::from(m.tenant_id.as_str()),
            "service_code" => Value::from(m.service_code.as_str()),
            "applicant" => serde(&m.applicant),
            "submitter" => serde(m.submitter.as_ref()?),
            "channel" => serde(&m.channel),
            "data" => serde(&m.data),
            "attachments" => serde(&m.attachments),
            "submitted_at" => serde(&m.submitted_at),
            "withdrawal_reason" => Value::from(m.withdrawal_reason.as_deref()?),
            // Undefined when empty, as it is absent from the JSON form.
            "outcome_data" if m.outcome_data.is_empty() => return None,
            "outcome_data" => serde(&m.outcome_data),
            "route" => serde(&*self.route_vars),
            _ => return None,
        })
    }
}

impl Object for DeliveryContext {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        let i = field_index(key)?;
        self.values[i].get_or_init(|| self.convert(key)).clone()
    }
}

fn describe(err: &minijinja::Error) -> String {
    // Display appends "(in internal-name:line)"; the caller names the file.
    let msg = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    match err.line() {
        Some(line) => format!("line {line}: {msg}"),
        None => msg,
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn internal_name(name: &str, escape: Escape) -> String {
    match escape {
        Escape::Json => format!("{name}.json"),
        Escape::Xml => format!("{name}.xml"),
        Escape::UrlPath => format!("{name}.path"),
        Escape::None => format!("{name}.txt"),
    }
}

/// Reads a body template configured as `template` (a file, relative to
/// `config_dir`) or `template_inline` (text) in the table `key`, which
/// `needed_by` (e.g. `body = "template"`) asks for. Returns the source and
/// where it came from, so template errors can name the file. Errors name
/// `{key}.template` and say what is wrong.
pub fn template_source(
    key: &str,
    file: Option<&str>,
    inline: Option<&str>,
    config_dir: &std::path::Path,
    needed_by: &str,
) -> Result<(String, String), crate::adapter::AdapterError> {
    use crate::adapter::AdapterError;
    match (file, inline) {
        (Some(path), None) => {
            let full = config_dir.join(path);
            let source = std::fs::read_to_string(&full).map_err(|e| {
                AdapterError::new(
                    format!("{key}.template"),
                    format!("cannot read {}: {e}", full.display()),
                )
            })?;
            Ok((source, full.display().to_string()))
        }
        (None, Some(inline)) => Ok((inline.to_string(), format!("{key}.template_inline"))),
        (None, None) => Err(AdapterError::new(
            format!("{key}.template"),
            format!("{needed_by} needs template (a file) or template_inline"),
        )),
        (Some(_), Some(_)) => Err(AdapterError::new(
            format!("{key}.template"),
            "set either template or template_inline, not both",
        )),
    }
}

/// Where an operation's body template comes from: the `template` (a file)
/// and `template_inline` keys under `key`, read when the body is chosen to
/// be a template (`selector = "template"`: `body`, `format`).
#[derive(Debug, Clone, Copy)]
pub struct BodyTemplate<'a> {
    /// The table the keys are in (`submit`, `outbound`).
    pub key: &'a str,
    /// The key that chooses the body (`body`, `format`).
    pub selector: &'a str,
    /// Whether the selector chose `"template"`.
    pub selected: bool,
    pub file: Option<&'a str>,
    pub inline: Option<&'a str>,
}

impl BodyTemplate<'_> {
    /// Compiles the body template into `templates` under `name` when it is
    /// selected, and refuses template keys set for a body that does not use
    /// them. Errors name `{key}.template` and, for a template that does not
    /// compile, its file (or key) and line.
    pub fn add_to(
        &self,
        templates: &mut Templates,
        name: &str,
        escape: Escape,
        config_dir: &std::path::Path,
    ) -> Result<(), crate::adapter::AdapterError> {
        use crate::adapter::AdapterError;
        let key = self.key;
        if !self.selected {
            if self.file.is_some() || self.inline.is_some() {
                return Err(AdapterError::new(
                    format!("{key}.template"),
                    format!("is set but {} is not \"template\"", self.selector),
                ));
            }
            return Ok(());
        }
        let (source, origin) = template_source(
            key,
            self.file,
            self.inline,
            config_dir,
            &format!("{} = \"template\"", self.selector),
        )?;
        // "file: line N: …" — the engineer opens the file at the line.
        templates
            .add(name, source, escape)
            .map_err(|e| AdapterError::new(format!("{key}.template"), format!("{origin}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{NormalizedMessage, SCHEMA_V1};
    use crate::model::*;
    use std::sync::Arc;

    fn request() -> DeliveryRequest {
        let mut data = serde_json::Map::new();
        data.insert("note".into(), serde_json::json!("a \"quoted\" <b>&</b>"));
        DeliveryRequest {
            message: Arc::new(NormalizedMessage {
                schema: SCHEMA_V1.into(),
                message_id: "op-1".into(),
                operation: Operation::Submit,
                practice_id: "p-1".into(),
                tenant_id: "015146".into(),
                service_code: "CERT".into(),
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
                attachments: vec![],
                submitted_at: chrono::Utc::now(),
                withdrawal_reason: None,
                outcome_data: Default::default(),
            }),
            attempt: 1,
            route_vars: Arc::new(
                serde_json::json!({"code": "X1"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            traceparent: None,
        }
    }

    #[test]
    fn every_context_field_reads_as_the_message_serializes_it() {
        let mut request = request();
        let message = Arc::make_mut(&mut request.message);
        message.submitter = Some(Submitter {
            person: Person {
                fiscal_code: "VRDLGU80A01H501U".into(),
                given_name: "Luigi".into(),
                family_name: "Verdi".into(),
            },
            role: "delegato".into(),
            contacts: Contacts::default(),
        });
        message.withdrawal_reason = Some("errore".into());
        message
            .outcome_data
            .insert("importo_dovuto".into(), serde_json::json!(120.5));
        message.data.insert("n".into(), serde_json::json!(12.5));
        message
            .data
            .insert("rows".into(), serde_json::json!([1, {"a": null}]));
        let serialized = serde_json::to_value(&*request.message).unwrap();
        let serialized = serialized.as_object().unwrap();
        for key in serialized.keys() {
            assert!(field_index(key).is_some(), "{key} is not in the context");
        }
        for field in MESSAGE_FIELDS.iter().chain(&EXTRA_FIELDS) {
            let expected = match *field {
                "operation_id" => serde_json::json!(request.operation_id()),
                "route" => serde_json::Value::Object((*request.route_vars).clone()),
                other => serialized[other].clone(),
            };
            let mut t = Templates::new();
            t.add("t", format!("{{{{ {field} | tojson }}}}"), Escape::None)
                .unwrap();
            let rendered = t.render("t", &request).unwrap();
            let read: serde_json::Value = serde_json::from_str(&rendered).unwrap();
            assert_eq!(read, expected, "{field}");
        }
    }

    #[test]
    fn absent_optional_fields_are_undefined() {
        let mut t = Templates::new();
        t.add(
            "t",
            "{{ submitter is defined }} {{ withdrawal_reason is defined }}".into(),
            Escape::None,
        )
        .unwrap();
        assert_eq!(t.render("t", &request()).unwrap(), "False False");
    }

    #[test]
    fn json_templates_escape_values() {
        let mut t = Templates::new();
        t.add(
            "b",
            r#"{"n": {{ data.note }}, "c": {{ route.code }}}"#.into(),
            Escape::Json,
        )
        .unwrap();
        let out = t.render("b", &request()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["n"], "a \"quoted\" <b>&</b>");
        assert_eq!(v["c"], "X1");
    }

    #[test]
    fn xml_templates_escape_values() {
        let mut t = Templates::new();
        t.add(
            "b",
            "<n>{{ applicant.family_name }} {{ data.note }}</n>".into(),
            Escape::Xml,
        )
        .unwrap();
        let out = t.render("b", &request()).unwrap();
        assert!(out.contains("&lt;b&gt;&amp;&lt;"), "{out}");
        assert!(!out.contains("<b>"));
    }

    #[test]
    fn undefined_variables_are_errors_not_blanks() {
        let mut t = Templates::new();
        t.add("b", "{{ data.missing }}".into(), Escape::None)
            .unwrap();
        assert!(t.render("b", &request()).is_err());
    }

    #[test]
    fn path_templates_encode_each_value_as_one_segment() {
        let mut t = Templates::new();
        t.add(
            "p",
            "/pratiche/{{ applicant.family_name }}/{{ route.code }}".into(),
            Escape::UrlPath,
        )
        .unwrap();
        assert_eq!(
            t.render("p", &request()).unwrap(),
            "/pratiche/D%27Al%C3%B2/X1"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let mut t = Templates::new();
        let err = t
            .add("b", "ok\n{{ broken ".into(), Escape::None)
            .unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }
}
