//! The adapter kinds, built into this binary or not: the one list that the
//! hub's configuration parser, its builder and `raccordo check` read.
//! Adding a kind is one line in [`KINDS`] (beside its module and its cargo
//! feature); `docs/adapters/README.md` shows how.
//!
//! Each kind is a cargo feature of this crate (all on by default). A kind
//! whose feature was left out stays listed, so a configuration naming it is
//! refused with the reason and the remedy rather than as an unknown word.

use crate::adapter::{Adapter, AdapterError};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

/// A parsed `[adapters.NAME]` table, ready to build instances from.
pub trait AdapterSpec: Debug + Send + Sync + 'static {
    /// The kind it was parsed as (`rest`, `soap`, …).
    fn kind(&self) -> &'static str;

    /// Builds the instance `name` (compiles templates, reads secrets;
    /// connects nothing). `config_dir` resolves relative paths. Errors name
    /// the key inside the instance's table.
    fn build(&self, name: &str, config_dir: &Path) -> Result<BuiltAdapter, AdapterError>;
}

/// A built instance and how many deliveries it runs at once.
#[derive(Clone)]
pub struct BuiltAdapter {
    pub adapter: Arc<dyn Adapter>,
    pub max_concurrency: usize,
}

/// Parses a kind's table (without its `kind` key); errors are the key
/// inside the table and the reason.
type Parse = fn(serde_json::Value) -> Result<Arc<dyn AdapterSpec>, (String, String)>;

/// One adapter kind.
#[derive(Debug)]
pub struct AdapterKind {
    /// The `kind` value in the configuration, also the cargo feature's name.
    pub name: &'static str,
    /// `None` when the kind's feature was not built.
    parse: Option<Parse>,
}

impl AdapterKind {
    /// Whether this binary can run adapters of this kind.
    pub fn is_built(&self) -> bool {
        self.parse.is_some()
    }
}

/// Declares the kinds: `"name" => (module::Adapter, module::config::Config)`,
/// where `Adapter::build(name, Config, config_dir)` builds an instance and
/// `Adapter::max_concurrency()` says how many deliveries it runs at once.
/// An entry is compiled only with the feature of its name.
macro_rules! kinds {
    ($($name:literal => ($adapter:ty, $config:ty),)*) => {
        /// Every kind this crate knows, in the order messages list them.
        pub const KINDS: &[AdapterKind] = &[$(AdapterKind {
            name: $name,
            parse: {
                #[cfg(feature = $name)]
                let parse: Option<Parse> = Some(
                    |raw: serde_json::Value| -> Result<Arc<dyn AdapterSpec>, (String, String)> {
                        let config: $config = typed(raw)?;
                        let spec: Arc<dyn AdapterSpec> = Arc::new(Spec::<$config> {
                            kind: $name,
                            config,
                            build: |name: &str,
                                    config: $config,
                                    dir: &Path|
                             -> Result<BuiltAdapter, AdapterError> {
                                let adapter = <$adapter>::build(name, config, dir)?;
                                let max_concurrency = adapter.max_concurrency();
                                Ok(BuiltAdapter {
                                    adapter: Arc::new(adapter),
                                    max_concurrency,
                                })
                            },
                        });
                        Ok(spec)
                    },
                );
                #[cfg(not(feature = $name))]
                let parse: Option<Parse> = None;
                parse
            },
        }),*];
    };
}

kinds! {
    "rest" => (crate::rest::RestAdapter, crate::rest::config::RestConfig),
    "file" => (crate::file::FileAdapter, crate::file::config::FileConfig),
    "amqp" => (crate::amqp::AmqpAdapter, crate::amqp::config::AmqpConfig),
    "soap" => (crate::soap::SoapAdapter, crate::soap::config::SoapConfig),
}

/// The kind named `name`, built or not.
pub fn kind(name: &str) -> Option<&'static AdapterKind> {
    KINDS.iter().find(|k| k.name == name)
}

/// The names of every known kind, for messages (`rest, file, amqp, soap`).
pub fn kind_names() -> String {
    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// Parses one `[adapters.NAME]` table as its `kind` says. Errors name the
/// key inside the table (empty for the table itself) and the reason: an
/// unknown kind, or one this binary was built without.
pub fn parse(raw: serde_json::Value) -> Result<Arc<dyn AdapterSpec>, (String, String)> {
    let serde_json::Value::Object(mut table) = raw else {
        return Err((String::new(), "must be a table".into()));
    };
    let known = kind_names();
    let name = match table.remove("kind") {
        Some(serde_json::Value::String(k)) => k,
        Some(_) => return Err(("kind".into(), format!("must be a string, one of: {known}"))),
        None => return Err(("kind".into(), format!("is required, one of: {known}"))),
    };
    let Some(kind) = self::kind(&name) else {
        return Err((
            "kind".into(),
            format!("unknown adapter kind '{name}' (known: {known})"),
        ));
    };
    let Some(parse) = kind.parse else {
        return Err((
            "kind".into(),
            format!("adapter kind {name} is not built into this hub; build with --features {name}"),
        ));
    };
    parse(serde_json::Value::Object(table))
}

/// A kind's typed configuration, errors naming the key inside the table.
#[allow(dead_code)] // unused only in a build without any kind
fn typed<C: DeserializeOwned>(raw: serde_json::Value) -> Result<C, (String, String)> {
    serde_path_to_error::deserialize(raw).map_err(|e| {
        let path = e.path().to_string();
        (
            if path == "." { String::new() } else { path },
            e.into_inner().to_string(),
        )
    })
}

/// A parsed table and how its kind builds instances from it.
#[allow(dead_code)] // unused only in a build without any kind
struct Spec<C> {
    kind: &'static str,
    config: C,
    build: fn(&str, C, &Path) -> Result<BuiltAdapter, AdapterError>,
}

impl<C: Debug> Debug for Spec<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The typed configurations hold no secret (only where to read one).
        f.debug_struct("AdapterSpec")
            .field("kind", &self.kind)
            .field("config", &self.config)
            .finish()
    }
}

impl<C: Clone + Debug + Send + Sync + 'static> AdapterSpec for Spec<C> {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn build(&self, name: &str, config_dir: &Path) -> Result<BuiltAdapter, AdapterError> {
        (self.build)(name, self.config.clone(), config_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_is_listed_once_and_names_its_feature() {
        let mut names: Vec<_> = KINDS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        assert_eq!(
            kind("rest").map(AdapterKind::is_built),
            Some(cfg!(feature = "rest"))
        );
        assert_eq!(
            kind("soap").map(AdapterKind::is_built),
            Some(cfg!(feature = "soap"))
        );
        assert_eq!(
            kind("amqp").map(AdapterKind::is_built),
            Some(cfg!(feature = "amqp"))
        );
        assert_eq!(
            kind("file").map(AdapterKind::is_built),
            Some(cfg!(feature = "file"))
        );
    }

    #[test]
    fn unknown_missing_and_mistyped_kinds_name_the_key() {
        let err = |v| parse(v).map(|_| ()).unwrap_err();
        let (key, reason) = err(json!({"kind": "ftp"}));
        assert_eq!(key, "kind");
        assert!(reason.contains("unknown adapter kind 'ftp'"), "{reason}");
        assert!(reason.contains("rest, file, amqp, soap"), "{reason}");
        assert_eq!(err(json!({})).0, "kind");
        assert_eq!(err(json!({"kind": 3})).0, "kind");
        assert_eq!(err(json!("rest")).0, "");
    }

    #[cfg(not(feature = "amqp"))]
    #[test]
    fn a_kind_left_out_of_the_build_is_refused_with_the_remedy() {
        let (key, reason) = parse(json!({"kind": "amqp", "url": "amqp://h"}))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(key, "kind");
        assert_eq!(
            reason,
            "adapter kind amqp is not built into this hub; build with --features amqp"
        );
    }

    #[cfg(feature = "rest")]
    #[test]
    fn a_built_kind_parses_and_errors_name_the_key_inside_the_table() {
        let spec = parse(json!({
            "kind": "rest",
            "base_url": "http://127.0.0.1:9/",
            "submit": {"path": "/p"},
        }))
        .unwrap();
        assert_eq!(spec.kind(), "rest");
        let built = spec.build("vendor", Path::new(".")).unwrap();
        assert_eq!(built.adapter.kind(), "rest");
        let (key, _) = parse(json!({"kind": "rest", "base_url": 1, "submit": {}}))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(key, "base_url");
    }
}
