//! Typing a configuration while collecting every problem, not the first.
//!
//! serde stops at the first error. Each section (and each entry of a
//! keyed section or of `[[routes]]`) is typed on its own, and when typing
//! fails the offending key is taken out and the entry typed again, until it
//! types or nothing more can be taken out. What is left is a configuration
//! without the faulty keys, on which the checks between sections can
//! still run.

use super::document::{EnvOverride, join};
use super::suggest::did_you_mean;
use std::collections::HashSet;

/// A problem found while typing: the dotted key and the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
    /// The problem is the key itself (unknown), not its value.
    pub at_key: bool,
}

/// A typing error: the key inside the value being typed, and serde's message.
pub type TypeError = (String, String);

/// Upper bound of retries for one entry: each takes out one key.
const MAX_ROUNDS: usize = 256;

/// Types `value` (found at `prefix`) with `parse`, recording every problem
/// in `out` and taking each faulty key out of `value`; gives the entry
/// typed without them, if it types at all.
pub fn entry<T>(
    prefix: &str,
    value: &mut toml::Value,
    env: &[EnvOverride],
    out: &mut Vec<Problem>,
    parse: impl Fn(&toml::Value) -> Result<T, TypeError>,
) -> Option<T> {
    let mut removed: HashSet<String> = HashSet::new();
    let mut retyped: HashSet<String> = HashSet::new();
    for _ in 0..MAX_ROUNDS {
        let (inner, message) = match parse(value) {
            Ok(typed) => return Some(typed),
            Err(e) => e,
        };
        let inner = if inner == "." { String::new() } else { inner };
        let key = join(prefix, &inner);
        // A key taken out is now missing (an adapter's `kind`, which its
        // own parser requires): its problem was reported already, and the
        // entry cannot be typed without it.
        if removed.contains(&key) {
            return None;
        }
        // A variable whose text was read as a number or a boolean: try it
        // as the text it is before blaming it.
        if let Some(e) = env.iter().find(|e| e.key == key)
            && retyped.insert(key.clone())
            && let Some(slot) = lookup(value, &inner)
            && !slot.is_str()
        {
            *slot = toml::Value::String(e.raw.clone());
            continue;
        }
        if let Some(field) = quoted_after(&message, "missing field ") {
            if !removed.contains(&join(&key, field)) {
                out.push(Problem {
                    key: join(&key, field),
                    reason: "is required".into(),
                    at_key: true,
                });
            }
        } else if quoted_after(&message, "unknown field ").is_some() {
            let field = last_level(&inner);
            out.push(Problem {
                key: key.clone(),
                reason: format!(
                    "unknown key{}{}",
                    did_you_mean(field, expected(&message)),
                    allowed_list(&message, "keys")
                ),
                at_key: true,
            });
        } else if let Some(variant) = quoted_after(&message, "unknown variant ") {
            out.push(Problem {
                key: key.clone(),
                reason: format!(
                    "'{variant}' is not an allowed value{}{}",
                    did_you_mean(variant, expected(&message)),
                    allowed_list(&message, "values")
                ),
                at_key: false,
            });
        } else {
            out.push(Problem {
                key: key.clone(),
                reason: message,
                at_key: false,
            });
        }
        if inner.is_empty() || !remove(value, &inner) {
            return None;
        }
        removed.insert(key);
    }
    None
}

/// The text between backticks after `marker` (serde's messages quote
/// names so: "unknown field `x`, expected one of `a`, `b`").
fn quoted_after<'m>(message: &'m str, marker: &str) -> Option<&'m str> {
    let rest = &message[message.find(marker)? + marker.len()..];
    let rest = rest.strip_prefix('`')?;
    Some(&rest[..rest.find('`')?])
}

/// The allowed spellings serde lists after "expected".
fn expected(message: &str) -> Vec<&str> {
    let Some(at) = message.find("expected") else {
        return Vec::new();
    };
    message[at..].split('`').skip(1).step_by(2).collect()
}

/// ` (allowed keys: a, b)`, or nothing if serde listed none.
fn allowed_list(message: &str, what: &str) -> String {
    let allowed = expected(message);
    if allowed.is_empty() {
        return if message.contains("there are no fields") {
            format!(" (this table has no {what})")
        } else {
            String::new()
        };
    }
    format!(" (allowed {what}: {})", allowed.join(", "))
}

/// The last level of a dotted key, without an index.
fn last_level(key: &str) -> &str {
    let key = key.split('[').next().unwrap_or(key);
    key.rsplit('.').next().unwrap_or(key)
}

/// Splits `a.b[2].c` into levels `a`, `b`, `[2]`, `c`.
fn levels(key: &str) -> Vec<Level<'_>> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            if open > 0 {
                out.push(Level::Key(&rest[..open]));
            }
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let close = stripped.find(']').unwrap_or(stripped.len());
                match stripped[..close].parse() {
                    Ok(i) => out.push(Level::Index(i)),
                    Err(_) => out.push(Level::Key(&stripped[..close])),
                }
                rest = stripped.get(close + 1..).unwrap_or("");
            }
        } else {
            out.push(Level::Key(rest));
        }
    }
    out
}

enum Level<'k> {
    Key(&'k str),
    Index(usize),
}

fn lookup<'v>(value: &'v mut toml::Value, key: &str) -> Option<&'v mut toml::Value> {
    let mut here = value;
    for level in levels(key) {
        here = match level {
            Level::Key(k) => here.as_table_mut()?.get_mut(k)?,
            Level::Index(i) => here.as_array_mut()?.get_mut(i)?,
        };
    }
    Some(here)
}

/// Takes out the value at `key`. An element of an array takes the whole
/// array with it: taking out one element would renumber the others.
fn remove(value: &mut toml::Value, key: &str) -> bool {
    let mut levels = levels(key);
    while matches!(levels.last(), Some(Level::Index(_))) {
        levels.pop();
    }
    let Some(Level::Key(last)) = levels.pop() else {
        return false;
    };
    let mut here = value;
    for level in levels {
        let next = match level {
            Level::Key(k) => here.as_table_mut().and_then(|t| t.get_mut(k)),
            Level::Index(i) => here.as_array_mut().and_then(|a| a.get_mut(i)),
        };
        match next {
            Some(n) => here = n,
            None => return false,
        }
    }
    here.as_table_mut().and_then(|t| t.remove(last)).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Route {
        service: String,
        #[serde(default)]
        mode: raccordo_domain::mode::Mode,
        #[serde(default)]
        max_attempts: Option<u32>,
        #[serde(default)]
        tenants: Vec<String>,
    }

    fn typed(v: &toml::Value) -> Result<Route, TypeError> {
        serde_path_to_error::deserialize(v.clone())
            .map_err(|e| (e.path().to_string(), e.inner().message().to_string()))
    }

    fn problems(text: &str) -> Vec<Problem> {
        let mut value: toml::Value = toml::from_str(text).unwrap();
        let mut out = Vec::new();
        entry("routes[1]", &mut value, &[], &mut out, typed);
        out
    }

    #[test]
    fn every_problem_of_an_entry_is_found_with_a_suggestion() {
        let found = problems(
            "service = \"A\"\nmode = \"defered\"\nmax_atempts = 3\ntenants = [\"1\", 2]\n",
        );
        let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "routes[1].max_atempts",
                "routes[1].mode",
                "routes[1].tenants[1]"
            ],
            "{found:?}"
        );
        assert!(
            found[0].reason.contains("did you mean 'max_attempts'?"),
            "{found:?}"
        );
        assert!(
            found[1].reason.contains("'defered' is not an allowed value: did you mean 'deferred'? (allowed values: sync, deferred, auto)"),
            "{found:?}"
        );
    }

    #[test]
    fn a_missing_key_is_reported_but_not_one_taken_out() {
        let found = problems("mode = \"sync\"\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key, "routes[1].service");
        assert_eq!(found[0].reason, "is required");
        // A service of the wrong type is its own problem, not also a missing one.
        let found = problems("service = 5\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].reason.contains("invalid type"), "{found:?}");
    }

    #[test]
    fn a_variable_read_as_a_number_is_tried_as_text() {
        let mut value: toml::Value = toml::from_str("service = 16024\n").unwrap();
        let env = [EnvOverride {
            var: "RACCORDO__X".into(),
            key: "r.service".into(),
            raw: "016024".into(),
        }];
        let mut out = Vec::new();
        let route = entry("r", &mut value, &env, &mut out, typed).expect("typed");
        assert_eq!(route.service, "016024");
        assert!(out.is_empty());
    }
}
