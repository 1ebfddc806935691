//! Building adapter instances from configuration.

use crate::config::AdapterConfig;
use raccordo_adapters::amqp::AmqpAdapter;
use raccordo_adapters::file::FileAdapter;
use raccordo_adapters::rest::RestAdapter;
use raccordo_adapters::soap::SoapAdapter;
use raccordo_adapters::{Adapter, AdapterError};
use std::path::Path;
use std::sync::Arc;

/// A running adapter instance and its delivery limits.
#[derive(Clone)]
pub struct AdapterInstance {
    pub name: String,
    pub adapter: Arc<dyn Adapter>,
    /// Deliveries in flight at once.
    pub max_concurrency: usize,
}

impl std::fmt::Debug for AdapterInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterInstance")
            .field("name", &self.name)
            .field("kind", &self.adapter.kind())
            .field("max_concurrency", &self.max_concurrency)
            .finish()
    }
}

/// Builds the instance `name`. `base_dir` resolves relative paths.
pub fn build(
    name: &str,
    config: &AdapterConfig,
    base_dir: &Path,
) -> Result<AdapterInstance, AdapterError> {
    match config {
        AdapterConfig::Rest(rest) => {
            let adapter = RestAdapter::build(name, (**rest).clone(), base_dir)?;
            Ok(AdapterInstance {
                name: name.to_string(),
                max_concurrency: adapter.max_concurrency(),
                adapter: Arc::new(adapter),
            })
        }
        AdapterConfig::File(file) => {
            let adapter = FileAdapter::build(name, (**file).clone(), base_dir)?;
            Ok(AdapterInstance {
                name: name.to_string(),
                max_concurrency: adapter.max_concurrency(),
                adapter: Arc::new(adapter),
            })
        }
        AdapterConfig::Amqp(amqp) => {
            let adapter = AmqpAdapter::build(name, (**amqp).clone(), base_dir)?;
            Ok(AdapterInstance {
                name: name.to_string(),
                max_concurrency: adapter.max_concurrency(),
                adapter: Arc::new(adapter),
            })
        }
        AdapterConfig::Soap(soap) => {
            let adapter = SoapAdapter::build(name, (**soap).clone(), base_dir)?;
            Ok(AdapterInstance {
                name: name.to_string(),
                max_concurrency: adapter.max_concurrency(),
                adapter: Arc::new(adapter),
            })
        }
    }
}
