//! The coordinator: runs one pipeline from its source through batching,
//! processors and sinks to the checkpoint, and owns the delivery invariant.
//!
//! ```text
//! source task ──bounded channel──▶ batcher ──▶ processor task ──▶ sink tasks (concurrent)
//!                                                               │ acks
//!                                       commit policy ◀─────────┘
//!                                             │ satisfied, in batch order
//!                                   checkpoint writer (coalescing)
//!                                             │ durable
//!                                   SourceContext::durable (source may report it)
//! ```
//!
//! **Invariant.** A checkpoint position is handed to the writer only when
//! the batch that carries it, and every batch before it, satisfied the
//! commit policy; the source learns of a position only after the writer's
//! storage call returned. Sinks that the policy needs retry until they
//! succeed (or the pipeline stops); other sinks give a batch up only after
//! it was committed without them and their retries ran out.
//!
//! The coordinator never decides a position is safe by itself: it only
//! forwards the positions sources attached to transaction ends.
//!
//! Beside the data path, a task polls the source's [`LagProbe`] (if any)
//! with the durable checkpoint for `deltaforge_checkpoint_lag_bytes`; it
//! shares nothing with the data path but the `durable` watch it reads.
//!
//! # Modules
//!
//! | module | owns |
//! |---|---|
//! | `pipeline` | [`Pipeline`] and the start of a run |
//! | `run_loop` | moving batches, the commit policy, shutdown |
//! | `source_run` | the source's task and lag probe |
//! | `sink_worker` | one task per sink: delivery, retries, dead letters |
//! | `processor_stage` | the processors' task |
//! | `checkpoint_writer` | writing checkpoints, then publishing them as durable |
//! | `lag` | the lag in bytes (`deltaforge_checkpoint_lag_bytes`) |
//! | `settings` | [`SinkSlot`], [`DeliveryConfig`] |
//! | `outcome` | [`PipelineStatus`], [`SinkCounts`], [`RunSummary`], [`PipelineError`] |
//!
//! This file holds only docs and re-exports; the submodules import each
//! other directly, never through it.

mod checkpoint_writer;
mod lag;
mod outcome;
mod pipeline;
mod processor_stage;
mod run_loop;
mod settings;
mod sink_worker;
mod source_run;

pub use lag::LAG_PROBE_EVERY;
pub use outcome::{PipelineError, PipelineStatus, RunSummary, SinkCounts};
pub use pipeline::Pipeline;
pub use settings::{DeliveryConfig, SinkSlot};
