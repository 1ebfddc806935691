//! Building adapter instances from configuration: the kinds and how each
//! builds are the adapter registry's ([`raccordo_adapters::registry`]).

use crate::config::AdapterConfig;
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
    let built = config.build(name, base_dir)?;
    Ok(AdapterInstance {
        name: name.to_string(),
        max_concurrency: built.max_concurrency,
        slots: Arc::new(Semaphore::new(built.max_concurrency)),
        adapter: built.adapter,
    })
}
