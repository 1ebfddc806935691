//! Building adapter instances from configuration.

use crate::config::AdapterConfig;
use raccordo_adapters::amqp::AmqpAdapter;
use raccordo_adapters::file::FileAdapter;
use raccordo_adapters::rest::RestAdapter;
use raccordo_adapters::soap::SoapAdapter;
use raccordo_adapters::{Adapter, AdapterError};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// A running adapter instance and its delivery limits.
#[derive(Clone)]
pub struct AdapterInstance {
    pub name: String,
    pub adapter: Arc<dyn Adapter>,
    /// Deliveries in flight at once.
    pub max_concurrency: usize,
    /// One permit per delivery in flight, shared by the instance's worker
    /// and by synchronous submissions delivering inline.
    pub slots: Arc<Semaphore>,
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
    fn boxed(a: impl Adapter + 'static, max: usize) -> (Arc<dyn Adapter>, usize) {
        (Arc::new(a), max)
    }
    let (adapter, max_concurrency) = match config {
        AdapterConfig::Rest(c) => {
            let a = RestAdapter::build(name, (**c).clone(), base_dir)?;
            let max = a.max_concurrency();
            boxed(a, max)
        }
        AdapterConfig::File(c) => {
            let a = FileAdapter::build(name, (**c).clone(), base_dir)?;
            let max = a.max_concurrency();
            boxed(a, max)
        }
        AdapterConfig::Amqp(c) => {
            let a = AmqpAdapter::build(name, (**c).clone(), base_dir)?;
            let max = a.max_concurrency();
            boxed(a, max)
        }
        AdapterConfig::Soap(c) => {
            let a = SoapAdapter::build(name, (**c).clone(), base_dir)?;
            let max = a.max_concurrency();
            boxed(a, max)
        }
    };
    Ok(AdapterInstance {
        name: name.to_string(),
        max_concurrency,
        slots: Arc::new(Semaphore::new(max_concurrency)),
        adapter,
    })
}
