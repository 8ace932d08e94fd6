//! The [`FilterProcessor`]: a compiled filter plus the cache that spares
//! it string comparisons between events of the same tables.
//!
//! It must never reorder events: it only removes the ones that do not go on.

use async_trait::async_trait;
use deltaforge_core::{BuildError, Event, Processor, ProcessorError};

use super::config::FilterConfig;
use super::eval::{Cache, CompiledFilter};

/// The `filter` processor.
#[derive(Debug)]
pub struct FilterProcessor {
    name: String,
    filter: CompiledFilter,
    cache: Cache,
}

impl FilterProcessor {
    /// Builds the processor; errors as [`FilterConfig::compile`].
    pub fn new(cfg: FilterConfig) -> Result<Self, BuildError> {
        let filter = cfg.compile()?;
        Ok(FilterProcessor { name: cfg.name.unwrap_or_else(|| "filter".into()), filter, cache: Cache::default() })
    }
}

#[async_trait]
impl Processor for FilterProcessor {
    fn name(&self) -> &str {
        &self.name
    }

    async fn process(&mut self, mut events: Vec<Event>) -> Result<Vec<Event>, ProcessorError> {
        let (filter, cache) = (&self.filter, &mut self.cache);
        events.retain(|e| filter.matches_with(e, Some(cache)) == filter.keep);
        Ok(events)
    }
}
