//! Reading the configuration file and its environment overrides.

use super::Config;
use std::path::{Path, PathBuf};

/// Prefix of environment overrides: `RACCORDO__STORE__SYNCHRONOUS=normal`
/// sets `store.synchronous`.
pub const ENV_PREFIX: &str = "RACCORDO";

/// A configuration that could not be read: the file, the key and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}{reason}", file.display(), key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default())]
pub struct LoadError {
    pub file: PathBuf,
    /// Dotted path of the offending key, when known.
    pub key: Option<String>,
    pub reason: String,
}

/// Reads `path` (TOML), applies `RACCORDO__*` environment overrides and
/// deserializes. Unknown keys and wrong types are errors naming the key.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let err = |key: Option<String>, reason: String| LoadError {
        file: path.to_path_buf(),
        key,
        reason,
    };
    if !path.is_file() {
        return Err(err(None, "no such file".into()));
    }
    let raw = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .map_err(|e| err(None, e.to_string()))?;
    let mut cfg: Config = serde_path_to_error::deserialize(raw).map_err(|e| {
        let key = e.path().to_string();
        let key = (key != "." && !key.is_empty()).then_some(key);
        err(key, without_location(e.into_inner().to_string()))
    })?;
    for (name, raw) in std::mem::take(&mut cfg.adapters_raw) {
        let adapter = raccordo_adapters::registry::parse(raw).map_err(|(key, reason)| {
            let key = if key.is_empty() {
                format!("adapters.{name}")
            } else {
                format!("adapters.{name}.{key}")
            };
            err(Some(key), without_location(reason))
        })?;
        cfg.adapters.insert(name, adapter);
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    cfg.base_dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    cfg.source = path.to_path_buf();
    Ok(cfg)
}

/// The config crate appends "for key `…`" and "in FILE" to its messages; we
/// already print both in front.
fn without_location(mut reason: String) -> String {
    for marker in [" for key `", " in "] {
        if let Some(i) = reason.find(marker)
            && (marker != " in " || reason[i..].contains(".toml"))
        {
            reason.truncate(i);
        }
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_toml(toml: &str) -> Result<Config, LoadError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raccordo.toml");
        std::fs::write(&path, toml).unwrap();
        load(&path)
    }

    #[test]
    fn an_amqp_adapter_loads_or_is_refused_with_the_feature_to_build() {
        let result = load_toml(
            r#"
[adapters.broker]
kind = "amqp"
url = "amqp://raccordo@127.0.0.1:5672/%2f"
[adapters.broker.submit]
exchange = "practices"
routing_key = "practices.{{ tenant_id }}"
"#,
        );
        if cfg!(feature = "amqp") {
            let cfg = result.expect("loads");
            assert_eq!(cfg.adapters["broker"].kind(), "amqp");
        } else {
            let err = result.map(drop).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("adapters.broker.kind"));
            assert_eq!(
                err.reason,
                "adapter kind amqp is not built into this hub; build with --features amqp"
            );
        }
    }

    #[test]
    fn an_unknown_adapter_kind_lists_the_known_ones() {
        let err = load_toml("[adapters.x]\nkind = \"ftp\"\n")
            .map(drop)
            .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("adapters.x.kind"));
        assert_eq!(
            err.reason,
            "unknown adapter kind 'ftp' (known: rest, file, amqp, soap)"
        );
    }

    #[cfg(feature = "rest")]
    #[test]
    fn errors_inside_an_adapter_table_name_the_key() {
        let err = load_toml(
            "[adapters.v]\nkind = \"rest\"\nbase_url = \"http://127.0.0.1:9\"\n\
             max_concurrency = \"lots\"\n[adapters.v.submit]\npath = \"/p\"\n",
        )
        .map(drop)
        .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("adapters.v.max_concurrency"));
    }
}
