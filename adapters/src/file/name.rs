//! Request file names: a template over a few safe values, then a strict
//! check, so no practice, route variable or template typo can write outside
//! the vendor's folder.
//!
//! Values are sanitised before they reach the template (separators, `..` and
//! control characters become `_`); the rendered name is then *validated*, not
//! repaired: a template that itself produces `../x` is a configuration error,
//! refused when the adapter is built (rendered with a sample delivery) and
//! again on every delivery.

use crate::adapter::DeliveryRequest;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value};

/// Compiled name template.
pub struct NameTemplate {
    env: Environment<'static>,
    /// The same template with undefined values rendering empty: route
    /// variables are not known when the adapter is built.
    sample_env: Environment<'static>,
    max_len: usize,
}

impl std::fmt::Debug for NameTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameTemplate").finish_non_exhaustive()
    }
}

impl NameTemplate {
    /// Compiles `source`; names longer than `max_len` bytes are refused.
    pub fn new(source: &str, max_len: usize) -> Result<Self, String> {
        let make = |undefined| {
            let mut env = Environment::new();
            env.set_fuel(Some(10_000));
            env.set_undefined_behavior(undefined);
            env.add_template_owned("name", source.to_string())
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(env)
        };
        Ok(Self {
            env: make(UndefinedBehavior::Strict)?,
            sample_env: make(UndefinedBehavior::Chainable)?,
            max_len,
        })
    }

    /// The file name for `request`, validated.
    pub fn render(&self, request: &DeliveryRequest) -> Result<String, String> {
        self.render_in(&self.env, request)
    }

    /// Like [`render`](Self::render), with undefined values empty: for the
    /// build-time check with a sample delivery.
    pub fn render_sample(&self, request: &DeliveryRequest) -> Result<String, String> {
        self.render_in(&self.sample_env, request)
    }

    fn render_in(
        &self,
        env: &Environment<'static>,
        request: &DeliveryRequest,
    ) -> Result<String, String> {
        let tmpl = env.get_template("name").map_err(|e| e.to_string())?;
        let name = tmpl
            .render(minijinja::Value::from(minijinja::value::Serde(context(
                request,
            ))))
            .map_err(|e| e.to_string())?;
        validate(&name, self.max_len)?;
        Ok(name)
    }
}

/// What a name template sees. Deliberately small: no applicant data may
/// end up in a file name (folder listings are logged and shared).
fn context(request: &DeliveryRequest) -> Value {
    let m = &request.message;
    let mut ctx = Map::new();
    let mut put = |k: &str, v: &str| {
        ctx.insert(k.into(), Value::String(sanitize_value(v)));
    };
    put("tenant_id", &m.tenant_id);
    put("service_code", &m.service_code);
    put("practice_id", &m.practice_id);
    put("operation_id", request.operation_id());
    put("operation", m.operation.as_str());
    // The submission's date, not today's: a retried delivery keeps its name.
    put("date", &m.submitted_at.format("%Y%m%d").to_string());
    put("time", &m.submitted_at.format("%H%M%S").to_string());
    let route: Map<String, Value> = request
        .route_vars
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), Value::String(sanitize_value(&text)))
        })
        .collect();
    ctx.insert("route".into(), Value::Object(route));
    Value::Object(ctx)
}

/// Makes a value safe inside a file name: path separators, control
/// characters and `..` become `_`.
pub fn sanitize_value(v: &str) -> String {
    let replaced: String = v
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() || c == ':' {
                '_'
            } else {
                c
            }
        })
        .collect();
    let mut out = replaced;
    while out.contains("..") {
        out = out.replace("..", "_");
    }
    out
}

/// Checks a whole file name: one plain component, inside the folder.
pub fn validate(name: &str, max_len: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("renders an empty file name".into());
    }
    if name.contains('/') || name.contains('\\') {
        return Err(format!(
            "renders '{}', which contains a path separator: a file name must stay inside the folder",
            printable(name)
        ));
    }
    if name.contains("..") {
        return Err(format!(
            "renders '{}', which contains '..'",
            printable(name)
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "renders '{}', which contains control characters",
            printable(name)
        ));
    }
    if name.starts_with('.') {
        return Err(format!(
            "renders '{}': names starting with '.' are reserved for temporary files",
            printable(name)
        ));
    }
    if name.trim() != name {
        return Err(format!(
            "renders '{}', with leading or trailing spaces",
            printable(name)
        ));
    }
    if name.len() > max_len {
        return Err(format!(
            "renders a name of {} bytes, above max_name_length ({max_len})",
            name.len()
        ));
    }
    Ok(())
}

fn printable(s: &str) -> String {
    s.chars()
        .take(120)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_escape_the_folder() {
        assert_eq!(sanitize_value("../../etc/passwd"), "____etc_passwd");
        assert_eq!(sanitize_value("a\\b\nc"), "a_b_c");
        assert_eq!(sanitize_value("...."), "__");
    }

    #[test]
    fn names_are_one_plain_component() {
        assert!(validate("016024_TARI_p1.json", 200).is_ok());
        for bad in ["../x", "a/b", "a\\b", "..", ".hidden", "a\u{0}b", " a", ""] {
            assert!(validate(bad, 200).is_err(), "{bad:?} accepted");
        }
        assert!(
            validate(&"a".repeat(201), 200)
                .unwrap_err()
                .contains("max_name_length")
        );
    }
}
