//! Test helpers: a manager over memory storage whose factory knows no components.

use std::sync::Arc;
use std::time::Duration;

use deltaforge_config::{Catalog, PipelineSpec};
use deltaforge_core::{ConfigProblem, Pipeline, PipelineError, SourceError};
use deltaforge_storage::{MemoryBackend, StorageBackend};
use serde_json::{Map, Value};

use crate::manager::{ManagerConfig, PipelineFactory, PipelineManager};

struct Nothing;

impl Catalog for Nothing {
    fn source_types(&self) -> Vec<&'static str> {
        vec![]
    }
    fn sink_types(&self) -> Vec<&'static str> {
        vec![]
    }
    fn processor_types(&self) -> Vec<&'static str> {
        vec![]
    }
    fn check_source(&self, kind: &str, _: &Map<String, Value>) -> Result<(), ConfigProblem> {
        Err(ConfigProblem::new("", format!("unknown source type {kind:?}")))
    }
    fn check_sink(&self, kind: &str, _: &Map<String, Value>) -> Result<(), ConfigProblem> {
        Err(ConfigProblem::new("", format!("unknown sink type {kind:?}")))
    }
    fn check_processor(&self, kind: &str, _: &Map<String, Value>) -> Result<(), ConfigProblem> {
        Err(ConfigProblem::new("", format!("unknown processor type {kind:?}")))
    }
}

impl PipelineFactory for Nothing {
    fn catalog(&self) -> &dyn Catalog {
        self
    }
    fn build(&self, _: &PipelineSpec, _: Arc<dyn StorageBackend>) -> Result<Pipeline, PipelineError> {
        Err(PipelineError::Source(SourceError::Fatal("no components in tests".into())))
    }
}

/// A manager with no pipelines over memory storage.
pub(crate) fn manager() -> PipelineManager {
    PipelineManager::new(
        Arc::new(Nothing),
        ManagerConfig {
            storage: Arc::new(MemoryBackend::new()),
            leases: None,
            instance_id: "test".into(),
            stop_wait: Duration::from_secs(1),
            api_env: deltaforge_config::EnvAccess::from_list(&[], "allow it"),
        },
    )
}
