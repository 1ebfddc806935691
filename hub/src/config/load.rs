//! Reading the configuration file and its environment overrides, and
//! typing it section by section so that every problem is reported at once,
//! each with its place: a line and column of the file, or the environment
//! variable that set the key.

use super::collect::{self, Problem, TypeError};
use super::document::{Document, Origins, Place};
use super::{AdapterConfig, Config, ConfigIssue};
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem of a configuration and where to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct LocatedIssue {
    pub issue: ConfigIssue,
    pub place: Place,
}

impl LocatedIssue {
    /// Where: `FILE:LINE:COLUMN`, or for a key set in the environment
    /// `environment VARIABLE (overrides FILE)`, or the file alone.
    pub fn place_in(&self, file: &Path) -> String {
        let file = file.display();
        match &self.place {
            Place::File { line, column } => format!("{file}:{line}:{column}"),
            Place::Env { var } => format!("environment {var} (overrides {file})"),
            Place::Unknown => file.to_string(),
        }
    }

    /// `PLACE: key: reason`.
    pub fn display(&self, file: &Path) -> String {
        format!("{}: {}", self.place_in(file), self.issue)
    }
}

/// A configuration that could not be read or typed: every problem found.
#[derive(Debug)]
pub struct LoadError {
    pub file: PathBuf,
    pub issues: Vec<LocatedIssue>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", issue.display(&self.file))?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    fn single(file: &Path, reason: String) -> Self {
        Self {
            file: file.to_path_buf(),
            issues: vec![LocatedIssue {
                issue: ConfigIssue {
                    key: String::new(),
                    reason,
                },
                place: Place::Unknown,
            }],
        }
    }
}

/// Reads `path` (TOML), applies `RACCORDO__*` environment overrides and
/// types it; any problem is an error, and the error lists them all.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let (config, issues) = load_lenient(path, std::env::vars())?;
    if issues.is_empty() {
        Ok(config)
    } else {
        Err(LoadError {
            file: path.to_path_buf(),
            issues,
        })
    }
}

/// Like [`load`], but a problem of typing does not stop it: the faulty
/// keys are left out (and entries that cannot be typed without them), the
/// problems are returned with what could be typed, so that the checks
/// between sections can run too. Fails only when there is nothing to type
/// (no file, a syntax error).
pub fn load_lenient(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Config, Vec<LocatedIssue>), LoadError> {
    if !path.is_file() {
        return Err(LoadError::single(path, "no such file".into()));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadError::single(path, format!("cannot read: {e}")))?;
    let mut document = Document::parse(path, text).map_err(|errors| LoadError {
        file: path.to_path_buf(),
        issues: errors
            .into_iter()
            .map(|e| LocatedIssue {
                issue: ConfigIssue {
                    key: String::new(),
                    reason: format!("not valid TOML: {}", e.reason),
                },
                place: e.place,
            })
            .collect(),
    })?;
    document.apply_env(env);
    let (mut config, problems) = type_sections(document.table, document.origins.env_overrides());
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    config.base_dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    config.source = path.to_path_buf();
    config.origins = std::sync::Arc::new(document.origins);
    let issues = problems
        .into_iter()
        .map(|p| LocatedIssue {
            place: config.origins.place(&p.key, p.at_key),
            issue: ConfigIssue {
                key: p.key,
                reason: p.reason,
            },
        })
        .collect();
    Ok((config, issues))
}

/// The sections of the file and how each is typed.
const SECTIONS: &[&str] = &[
    "hub",
    "store",
    "limits",
    "delivery",
    "security",
    "tenants",
    "adapters",
    "services",
    "routes",
    "clients",
    "simulators",
];

fn typed<T: DeserializeOwned>(value: &toml::Value) -> Result<T, TypeError> {
    // The message alone: the path is ours, and toml would add its own.
    serde_path_to_error::deserialize(value.clone())
        .map_err(|e| (e.path().to_string(), e.inner().message().to_string()))
}

/// An adapter table, typed per its `kind` by the adapter registry.
fn typed_adapter(value: &toml::Value) -> Result<AdapterConfig, TypeError> {
    let json = serde_json::to_value(value).map_err(|e| (String::new(), e.to_string()))?;
    raccordo_adapters::registry::parse(json)
}

/// Types every section, entry by entry; entries that do not type are left
/// out of the configuration (and remembered, so that references to them
/// are not reported as references to nothing).
fn type_sections(
    mut table: toml::Table,
    env: &[super::document::EnvOverride],
) -> (Config, Vec<Problem>) {
    let mut out = Vec::new();
    let mut unusable = std::collections::BTreeSet::new();
    let mut route_index = Vec::new();
    let mut adapters = std::collections::BTreeMap::new();

    let keys: Vec<String> = table.keys().cloned().collect();
    for section in keys {
        let value = table.remove(&section).expect("listed key");
        let kept = match section.as_str() {
            "hub" => whole::<super::HubConfig>(&section, value, env, &mut out),
            "store" => whole::<super::StoreConfig>(&section, value, env, &mut out),
            "limits" => whole::<super::Limits>(&section, value, env, &mut out),
            "delivery" => whole::<super::DeliveryConfig>(&section, value, env, &mut out),
            "security" => {
                whole::<crate::security::config::SecurityConfig>(&section, value, env, &mut out)
            }
            "tenants" => {
                keyed::<super::TenantConfig>(&section, value, env, &mut out, &mut unusable)
            }
            "services" => {
                keyed::<super::ServiceConfig>(&section, value, env, &mut out, &mut unusable)
            }
            "clients" => keyed::<crate::security::config::ClientConfig>(
                &section,
                value,
                env,
                &mut out,
                &mut unusable,
            ),
            "simulators" => {
                keyed::<super::SimulatorConfig>(&section, value, env, &mut out, &mut unusable)
            }
            "adapters" => {
                let Some(entries) = table_of(&section, value, &mut out) else {
                    continue;
                };
                for (name, mut raw) in entries {
                    let key = format!("adapters.{name}");
                    match collect::entry(&key, &mut raw, env, &mut out, typed_adapter) {
                        Some(adapter) => {
                            adapters.insert(name, adapter);
                        }
                        None => {
                            unusable.insert(key);
                        }
                    }
                }
                None
            }
            "routes" => {
                let toml::Value::Array(items) = value else {
                    out.push(Problem {
                        key: section.clone(),
                        reason: "must be an array of tables ([[routes]])".into(),
                        at_key: false,
                    });
                    continue;
                };
                let mut kept = Vec::new();
                for (i, mut item) in items.into_iter().enumerate() {
                    let key = format!("routes[{i}]");
                    if collect::entry(&key, &mut item, env, &mut out, typed::<super::RouteConfig>)
                        .is_some()
                    {
                        kept.push(item);
                        route_index.push(i);
                    } else {
                        unusable.insert(key);
                    }
                }
                Some(toml::Value::Array(kept))
            }
            other => {
                out.push(Problem {
                    key: other.to_string(),
                    reason: format!(
                        "unknown section{} (sections: {})",
                        super::suggest::did_you_mean(other, SECTIONS.iter().copied()),
                        SECTIONS.join(", ")
                    ),
                    at_key: true,
                });
                None
            }
        };
        if let Some(kept) = kept {
            table.insert(section, kept);
        }
    }
    // Every entry left types on its own, so the whole does too.
    let mut config: Config = match serde_path_to_error::deserialize(toml::Value::Table(table)) {
        Ok(c) => c,
        Err(e) => {
            out.push(Problem {
                key: e.path().to_string(),
                reason: e.into_inner().to_string(),
                at_key: false,
            });
            toml::from_str("").expect("an empty configuration types")
        }
    };
    config.adapters = adapters;
    config.unusable = unusable;
    if route_index.iter().enumerate().any(|(i, at)| i != *at) {
        config.route_index = route_index;
    }
    (config, out)
}

/// A section typed as one (`[hub]`), without its faulty keys; the
/// section's defaults stand in for one that does not type at all.
fn whole<T: DeserializeOwned>(
    section: &str,
    mut value: toml::Value,
    env: &[super::document::EnvOverride],
    out: &mut Vec<Problem>,
) -> Option<toml::Value> {
    collect::entry(section, &mut value, env, out, typed::<T>).map(|_| value)
}

/// A section of named entries (`[tenants.X]`), each typed on its own.
fn keyed<T: DeserializeOwned>(
    section: &str,
    value: toml::Value,
    env: &[super::document::EnvOverride],
    out: &mut Vec<Problem>,
    unusable: &mut std::collections::BTreeSet<String>,
) -> Option<toml::Value> {
    let entries = table_of(section, value, out)?;
    let mut kept = toml::Table::new();
    for (name, mut raw) in entries {
        let key = format!("{section}.{name}");
        if collect::entry(&key, &mut raw, env, out, typed::<T>).is_some() {
            kept.insert(name, raw);
        } else {
            unusable.insert(key);
        }
    }
    Some(toml::Value::Table(kept))
}

fn table_of(section: &str, value: toml::Value, out: &mut Vec<Problem>) -> Option<toml::Table> {
    match value {
        toml::Value::Table(t) => Some(t),
        _ => {
            out.push(Problem {
                key: section.to_string(),
                reason: format!("must be a table of entries ([{section}.NAME])"),
                at_key: false,
            });
            None
        }
    }
}

impl Config {
    /// Where to fix `issue` (found by [`super::check`] or
    /// [`super::warnings`] on this configuration).
    pub fn locate(&self, issue: ConfigIssue) -> LocatedIssue {
        LocatedIssue {
            place: self.origins.place(&issue.key, false),
            issue,
        }
    }

    /// Where each key came from.
    pub fn origins(&self) -> &Origins {
        &self.origins
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one problem of loading `toml` as a file: (key, reason).
    fn the_problem(toml: &str) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raccordo.toml");
        std::fs::write(&path, toml).unwrap();
        let err = load(&path).map(drop).unwrap_err();
        assert_eq!(err.issues.len(), 1, "{err}");
        let issue = &err.issues[0].issue;
        (issue.key.clone(), issue.reason.clone())
    }

    #[test]
    fn an_amqp_adapter_is_refused_without_its_feature_and_loads_with_it() {
        let toml = r#"
[adapters.broker]
kind = "amqp"
url = "amqp://raccordo@127.0.0.1:5672/%2f"
[adapters.broker.submit]
exchange = "practices"
routing_key = "practices.{{ tenant_id }}"
"#;
        if cfg!(feature = "amqp") {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("raccordo.toml");
            std::fs::write(&path, toml).unwrap();
            let cfg = load(&path).expect("loads");
            assert_eq!(cfg.adapters["broker"].kind(), "amqp");
        } else {
            let (key, reason) = the_problem(toml);
            assert_eq!(key, "adapters.broker.kind");
            assert_eq!(
                reason,
                "adapter kind amqp is not built into this hub; build with --features amqp"
            );
        }
    }

    #[test]
    fn an_unknown_adapter_kind_lists_the_known_ones() {
        let (key, reason) = the_problem("[adapters.x]\nkind = \"ftp\"\n");
        assert_eq!(key, "adapters.x.kind");
        assert!(
            reason.starts_with("unknown adapter kind 'ftp' (known: rest, file, amqp, soap)"),
            "{reason}"
        );
    }
}
