//! The configuration as written: the TOML document with the place of every
//! key in the file, and the environment variables that override keys, so
//! that each problem can be blamed on a line of the file or on a variable.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};

/// Prefix of environment overrides: `RACCORDO__STORE__SYNCHRONOUS=normal`
/// sets `store.synchronous`.
pub const ENV_PREFIX: &str = "RACCORDO__";

/// Where a problem is to be fixed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// A line and column of the file, both counted from 1.
    File { line: usize, column: usize },
    /// An environment variable that overrides the key.
    Env { var: String },
    /// Nowhere more precise than the file itself.
    Unknown,
}

/// Byte ranges of a key and of its value in the file.
#[derive(Debug, Clone, Default)]
struct Spans {
    key: Option<Range<usize>>,
    value: Range<usize>,
}

/// A key set by an environment variable.
#[derive(Debug, Clone)]
pub struct EnvOverride {
    /// The variable, e.g. `RACCORDO__HUB__GRPC_LISTEN`.
    pub var: String,
    /// The dotted key it sets, spelt as the file spells existing keys.
    pub key: String,
    /// The variable's text, kept to retry it as a string when a guessed
    /// type (number, boolean) does not fit.
    pub raw: String,
}

/// Where each key of a loaded configuration came from.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    file: PathBuf,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
    text: String,
    spans: BTreeMap<String, Spans>,
    env: Vec<EnvOverride>,
}

impl Origins {
    /// The configuration file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The keys set by environment variables.
    pub fn env_overrides(&self) -> &[EnvOverride] {
        &self.env
    }

    /// Where the problem with `key` is: the variable that set it (or a key
    /// above it), else its value in the file (or its key, with `at_key`),
    /// else the nearest enclosing key that is written in the file.
    pub fn place(&self, key: &str, at_key: bool) -> Place {
        if let Some(e) = self
            .env
            .iter()
            .find(|e| key == e.key || is_below(key, &e.key))
        {
            return Place::Env { var: e.var.clone() };
        }
        let mut candidate = key;
        loop {
            if let Some(spans) = self.spans.get(candidate) {
                let at = match (&spans.key, at_key || candidate != key) {
                    (Some(k), true) => k.start,
                    _ => spans.value.start,
                };
                return self.file_place(at);
            }
            match parent(candidate) {
                Some(p) => candidate = p,
                None => return Place::Unknown,
            }
        }
    }

    /// The line and column of a byte offset.
    pub fn file_place(&self, offset: usize) -> Place {
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset.min(self.text.len()))
            .map_or(1, |s| s.chars().count() + 1);
        Place::File { line, column }
    }
}

/// Whether `key` is a key inside `ancestor` (`a.b[0]` inside `a.b`).
fn is_below(key: &str, ancestor: &str) -> bool {
    key.strip_prefix(ancestor)
        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// The key one level up: `a.b[2]` → `a.b`, `a.b` → `a`, `a` → none.
pub fn parent(key: &str) -> Option<&str> {
    let cut = key.rfind(['.', '['])?;
    Some(&key[..cut])
}

/// A key below `parent` (which may be empty).
pub fn join(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty() || child == ".") {
        (_, true) => parent.to_string(),
        (true, false) => child.to_string(),
        (false, false) if child.starts_with('[') => format!("{parent}{child}"),
        (false, false) => format!("{parent}.{child}"),
    }
}

/// A configuration file's text, parsed: the values and where they are.
pub struct Document {
    pub table: toml::Table,
    pub origins: Origins,
}

/// A syntax error: where, and what.
pub struct SyntaxError {
    pub place: Place,
    pub reason: String,
}

impl Document {
    /// Parses `text` (read from `file`); every syntax error is reported.
    pub fn parse(file: &Path, text: String) -> Result<Self, Vec<SyntaxError>> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let mut origins = Origins {
            file: file.to_path_buf(),
            line_starts,
            text: String::new(),
            spans: BTreeMap::new(),
            env: Vec::new(),
        };
        origins.text = text;
        let (document, errors) = DeTable::parse_recoverable(&origins.text);
        if !errors.is_empty() {
            let mut errors: Vec<SyntaxError> = errors
                .into_iter()
                .map(|e| SyntaxError {
                    place: e
                        .span()
                        .map_or(Place::Unknown, |s| origins.file_place(s.start)),
                    // The parser's message is several lines with a drawing
                    // of the line; its first line says what is wrong.
                    reason: e.message().lines().next().unwrap_or("").to_string(),
                })
                .collect();
            errors.sort_by(|a, b| a.place.cmp(&b.place));
            return Err(errors);
        }
        let mut spans = BTreeMap::new();
        index_table("", document.get_ref(), &mut spans);
        drop(document);
        origins.spans = spans;
        let table = toml::from_str::<toml::Table>(&origins.text).map_err(|e| {
            vec![SyntaxError {
                place: e
                    .span()
                    .map_or(Place::Unknown, |s| origins.file_place(s.start)),
                reason: e.message().lines().next().unwrap_or("").to_string(),
            }]
        })?;
        Ok(Self { table, origins })
    }

    /// Applies `RACCORDO__A__B=value` overrides: each `__` is a level, and
    /// each level matches a key of the file whatever its case (a new key is
    /// lower-case). A value that reads as a boolean or a number is one,
    /// unless the file has a string there.
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        let mut vars: Vec<_> = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name.len() > ENV_PREFIX.len())
            .collect();
        vars.sort();
        for (var, raw) in vars {
            let levels: Vec<&str> = var[ENV_PREFIX.len()..].split("__").collect();
            if levels.iter().any(|l| l.is_empty()) {
                continue;
            }
            let key = set_path(&mut self.table, &levels, &raw);
            self.origins.env.push(EnvOverride { var, key, raw });
        }
    }
}

/// Sets the value at `levels`, creating tables on the way (a value in the
/// way is replaced by a table); returns the dotted key it set.
fn set_path(table: &mut toml::Table, levels: &[&str], raw: &str) -> String {
    let (last, above) = levels.split_last().expect("at least one level");
    let mut key = String::new();
    let mut here = table;
    for level in above {
        let name = spelling(here, level);
        key = join(&key, &name);
        let slot = here
            .entry(name)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !slot.is_table() {
            *slot = toml::Value::Table(toml::Table::new());
        }
        here = slot.as_table_mut().expect("made a table");
    }
    let name = spelling(here, last);
    key = join(&key, &name);
    let value = match here.get(&name) {
        Some(toml::Value::String(_)) => toml::Value::String(raw.to_string()),
        _ => guess_type(raw),
    };
    here.insert(name, value);
    key
}

/// The file's spelling of a level, or the level in lower case.
fn spelling(table: &toml::Table, level: &str) -> String {
    table
        .keys()
        .find(|k| k.eq_ignore_ascii_case(level))
        .cloned()
        .unwrap_or_else(|| level.to_ascii_lowercase())
}

/// `true`/`false`, an integer, a float, else the text.
pub fn guess_type(raw: &str) -> toml::Value {
    if raw.eq_ignore_ascii_case("true") {
        toml::Value::Boolean(true)
    } else if raw.eq_ignore_ascii_case("false") {
        toml::Value::Boolean(false)
    } else if let Ok(i) = raw.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(f) = raw.parse::<f64>()
        && f.is_finite()
    {
        toml::Value::Float(f)
    } else {
        toml::Value::String(raw.to_string())
    }
}

fn index_table(prefix: &str, table: &DeTable<'_>, out: &mut BTreeMap<String, Spans>) {
    for (key, value) in table.iter() {
        let path = join(prefix, key.get_ref());
        out.insert(
            path.clone(),
            Spans {
                key: Some(key.span()),
                value: value.span(),
            },
        );
        index_value(&path, value.get_ref(), out);
    }
}

fn index_value(path: &str, value: &DeValue<'_>, out: &mut BTreeMap<String, Spans>) {
    match value {
        DeValue::Table(t) => index_table(path, t, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                out.insert(
                    item_path.clone(),
                    Spans {
                        key: None,
                        value: item.span(),
                    },
                );
                index_value(&item_path, item.get_ref(), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[hub]\ngrpc_listen = \"127.0.0.1:1\"\n\n[[routes]]\nservice = \"A\"\n\n[[routes]]\nservice = \"B\"\nmode = \"sync\"\n\n[services.CERT_RESIDENZA]\ntitle = \"x\"\n";

    fn doc() -> Document {
        Document::parse(Path::new("a.toml"), TEXT.to_string())
            .ok()
            .unwrap()
    }

    #[test]
    fn every_key_has_its_line_and_column() {
        let d = doc();
        let at = |key, at_key| d.origins.place(key, at_key);
        assert_eq!(
            at("hub.grpc_listen", false),
            Place::File {
                line: 2,
                column: 15
            }
        );
        assert_eq!(
            at("hub.grpc_listen", true),
            Place::File { line: 2, column: 1 }
        );
        assert_eq!(
            at("routes[1].mode", false),
            Place::File { line: 9, column: 8 }
        );
        // A key that is not written: the nearest written key above it.
        assert_eq!(
            at("routes[1].adapter", false).clone(),
            at("routes[1]", false)
        );
        assert!(matches!(
            at("routes[1]", false),
            Place::File { line: 7 | 8, .. }
        ));
        assert_eq!(at("nowhere", false), Place::Unknown);
    }

    #[test]
    fn syntax_errors_are_all_reported_with_their_lines() {
        let errors = Document::parse(Path::new("a.toml"), "a = \nb = 1\nc = [1,\n".to_string())
            .err()
            .unwrap();
        let found: Vec<(Place, &str)> = errors
            .iter()
            .map(|e| (e.place.clone(), e.reason.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    Place::File { line: 1, column: 5 },
                    "string values must be quoted, expected literal string"
                ),
                (
                    Place::File { line: 3, column: 8 },
                    "unclosed array, expected `]`"
                ),
            ]
        );
    }

    #[test]
    fn environment_overrides_match_the_files_keys_and_are_blamed() {
        let mut d = doc();
        d.apply_env([
            (
                "RACCORDO__HUB__GRPC_LISTEN".to_string(),
                "1.2.3.4:5".to_string(),
            ),
            (
                "RACCORDO__SERVICES__CERT_RESIDENZA__LEGAL_TERM_DAYS".to_string(),
                "45".to_string(),
            ),
            (
                "RACCORDO__SERVICES__CERT_RESIDENZA__TITLE".to_string(),
                "016024".to_string(),
            ),
            (
                "RACCORDO_API_KEY".to_string(),
                "not an override".to_string(),
            ),
        ]);
        assert_eq!(d.table["hub"]["grpc_listen"].as_str(), Some("1.2.3.4:5"));
        let cert = &d.table["services"]["CERT_RESIDENZA"];
        assert_eq!(cert["legal_term_days"].as_integer(), Some(45));
        // The file has a string there: it stays one, leading zero and all.
        assert_eq!(cert["title"].as_str(), Some("016024"));
        assert_eq!(
            d.origins.place("hub.grpc_listen", false),
            Place::Env {
                var: "RACCORDO__HUB__GRPC_LISTEN".into()
            }
        );
        assert_eq!(d.origins.env_overrides().len(), 3);
    }
}
