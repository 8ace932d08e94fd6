//! `deltaforge dlq list|redrive PIPELINE`: inspect a pipeline's dead-letter
//! queue and deliver its events again once the cause is fixed.
//!
//! Redrive takes the dead letters oldest first. An event a sink rejected is
//! delivered to that sink again; an event a processor failed on goes through
//! the pipeline's processors and then to every sink. Each dead letter is
//! removed only after its delivery succeeded; the first failure stops the
//! redrive and leaves it (and every later one) in place, so order is kept
//! and nothing is lost. Redriving while the pipeline runs is allowed: the
//! redriven events then arrive after newer ones.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use deltaforge_config::PipelineSpec;
use deltaforge_core::{DeadLetterQueue, Event, Processor, Sink};
use deltaforge_storage::StorageBackend;

use crate::registry::Registry;

fn find<'a>(specs: &'a [PipelineSpec], name: &str) -> anyhow::Result<&'a PipelineSpec> {
    match specs.iter().find(|s| s.name == name) {
        Some(s) => Ok(s),
        None => {
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            bail!("no pipeline named {name:?} in the config (pipelines: {})", names.join(", "))
        }
    }
}

fn queue(spec: &PipelineSpec, storage: Arc<dyn StorageBackend>) -> DeadLetterQueue {
    DeadLetterQueue::new(storage, &spec.name, spec.dlq.clone().unwrap_or_default())
}

/// Prints the dead letters of a pipeline, one JSON object per line.
pub async fn list(specs: &[PipelineSpec], name: &str, storage: Arc<dyn StorageBackend>) -> anyhow::Result<ExitCode> {
    let spec = find(specs, name)?;
    let letters = queue(spec, storage).list(usize::MAX).await?;
    if letters.is_empty() {
        eprintln!("the dead-letter queue of {name:?} is empty");
    }
    for (id, letter) in letters {
        println!("{}", serde_json::json!({"queue_id": id, "letter": letter}));
    }
    Ok(ExitCode::SUCCESS)
}

/// Delivers the dead letters again, in order.
pub async fn redrive(specs: &[PipelineSpec], name: &str, storage: Arc<dyn StorageBackend>) -> anyhow::Result<ExitCode> {
    let spec = find(specs, name)?;
    let done = redrive_spec(spec, storage, None).await?;
    println!("redrove {done} dead letter(s) of {name:?}");
    Ok(ExitCode::SUCCESS)
}

/// Delivers `spec`'s dead letters again through its own sinks and
/// processors: the letter `only`, or every letter oldest first (the CLI
/// and `POST /pipelines/{name}/dlq/redrive`). Returns how many left the queue.
pub async fn redrive_spec(
    spec: &PipelineSpec,
    storage: Arc<dyn StorageBackend>,
    only: Option<u64>,
) -> anyhow::Result<u64> {
    let queue = queue(spec, storage.clone());
    let registry = Registry;
    let mut sinks: Vec<(String, Box<dyn Sink>)> = Vec::new();
    for s in &spec.sinks {
        let sink =
            registry.build_sink(spec, s, Some(&storage)).map_err(|e| anyhow::anyhow!("building sink {}: {e}", s.id))?;
        sinks.push((s.id.clone(), sink));
    }
    let mut processors = Vec::new();
    for p in &spec.processors {
        processors
            .push(registry.build_processor(p).map_err(|e| anyhow::anyhow!("building processor {}: {e}", p.kind))?);
    }
    let result = redrive_letters(&queue, &mut sinks, &mut processors, only).await;
    for (_, sink) in sinks.iter_mut() {
        let _ = sink.close().await;
    }
    result
}

async fn redrive_letters(
    queue: &DeadLetterQueue,
    sinks: &mut [(String, Box<dyn Sink>)],
    processors: &mut [Box<dyn Processor>],
    only: Option<u64>,
) -> anyhow::Result<u64> {
    let mut done = 0u64;
    loop {
        let mut batch = queue.list(500).await?;
        if let Some(wanted) = only {
            batch.retain(|(id, _)| *id == wanted);
            if batch.is_empty() && done == 0 {
                bail!("no dead letter {wanted} in the queue (list it again: it may have been redriven already)");
            }
        }
        if batch.is_empty() {
            return Ok(done);
        }
        for (id, letter) in batch {
            let event = Event::from_native(&letter.event)
                .map_err(|e| anyhow::anyhow!("dead letter {id} is unreadable: {e}"))?;
            let key = event.idempotency_key();
            let mut events = vec![event];
            let targets: Vec<usize> = match &letter.sink {
                Some(sink_id) => match sinks.iter().position(|(id, _)| id == sink_id) {
                    Some(i) => vec![i],
                    None => bail!(
                        "dead letter {id} ({key}) was rejected by sink {sink_id:?}, which the pipeline no longer has"
                    ),
                },
                None => {
                    for p in processors.iter_mut() {
                        events = p.process(events).await.with_context(|| format!("redriving {key}"))?;
                    }
                    (0..sinks.len()).collect()
                }
            };
            for i in targets {
                let (sink_id, sink) = &mut sinks[i];
                sink.deliver(&events)
                    .await
                    .map_err(|e| anyhow::anyhow!("redriving {key} to sink {sink_id} failed (it stays queued): {e}"))?;
            }
            queue.ack(id).await?;
            done += 1;
        }
        if only.is_some() {
            return Ok(done);
        }
    }
}
