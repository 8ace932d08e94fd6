//! The [`JavascriptProcessor`] the pipeline holds: it starts the engine
//! thread (QuickJS runtimes are not `Send`), hands it each batch by
//! channel and waits for the answer with an outer time bound.
//!
//! It must never touch the engine or the events' contents itself: all of
//! that happens on the engine thread, in `worker`.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use async_trait::async_trait;
use deltaforge_core::{BuildError, ConfigProblem, Event, Processor, ProcessorError};
use tokio::sync::oneshot;

use super::config::JavascriptConfig;
use super::engine::Engine;
use super::worker::{Job, Worker};
use crate::value::error;

/// The `javascript` processor: a handle to its engine thread.
pub struct JavascriptProcessor {
    name: String,
    jobs: mpsc::Sender<Job>,
    timeout: Duration,
}

impl std::fmt::Debug for JavascriptProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JavascriptProcessor").field("name", &self.name).finish_non_exhaustive()
    }
}

impl JavascriptProcessor {
    /// Starts the engine thread and loads the script; config errors name
    /// the field (`script` for syntax errors and a missing `process`).
    pub fn new(cfg: JavascriptConfig) -> Result<Self, BuildError> {
        cfg.check_limits()?;
        let name = cfg.name.clone().unwrap_or_else(|| "javascript".into());
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), ConfigProblem>>();
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let thread_name = format!("js-{name}");
        let worker_name = name.clone();
        // The thread's stack holds the engine's stack limit plus a margin,
        // so QuickJS's own check fires before the real stack runs out.
        std::thread::Builder::new()
            .name(thread_name)
            .stack_size(cfg.thread_stack_bytes())
            .spawn(move || {
                let deadline = Arc::new(AtomicU64::new(0));
                let interrupted = Arc::new(AtomicBool::new(false));
                let engine = match Engine::new(&cfg, deadline.clone(), interrupted.clone()) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut worker = Worker { name: worker_name, cfg, engine: Some(engine), deadline, interrupted };
                while let Ok(job) = rx.recv() {
                    let result = worker.run(job.events);
                    let _ = job.reply.send(result);
                }
            })
            .map_err(|e| BuildError::other(format!("cannot start the JavaScript thread: {e}")))?;
        ready_rx.recv().map_err(|_| BuildError::other("the JavaScript thread ended while loading the script"))??;
        Ok(JavascriptProcessor { name, jobs, timeout })
    }
}

#[async_trait]
impl Processor for JavascriptProcessor {
    fn name(&self) -> &str {
        &self.name
    }

    async fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>, ProcessorError> {
        let (reply, rx) = oneshot::channel();
        let gone = || error(&self.name, None, "the JavaScript engine thread has stopped");
        self.jobs.send(Job { events, reply }).map_err(|_| gone())?;
        // The interrupt handler enforces the limit; this outer bound only
        // guards against an engine that stopped answering (the batch, the
        // bisection on error and the engine rebuild each get a budget).
        match tokio::time::timeout(self.timeout * 3 + Duration::from_secs(10), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(error(&self.name, None, "the JavaScript engine did not answer in time")),
        }
    }
}
