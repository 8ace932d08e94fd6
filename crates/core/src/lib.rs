//! DeltaForge's core: the event model, positions, the component traits
//! (source, processor, sink), batching, the commit policy, the checkpoint
//! store, the schema registry, the source-agnostic snapshot machinery
//! ([`snapshot`]: config, progress records, DBLog window reconciliation) and
//! the coordinator that ties them together.
//!
//! This crate owns the delivery invariant: no checkpoint, and no position
//! reported to a source server, ever passes an event that the commit
//! policy's sinks have not acknowledged. It must never know about any
//! concrete source, sink or storage engine.

pub mod batch;
pub mod checkpoint;
pub mod component;
pub mod coordinator;
pub mod dlq;
pub mod event;
pub mod policy;
pub mod position;
pub mod processor;
pub mod schema;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod source_error;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use batch::{Batch, BatchConfig, Batcher};
pub use checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
pub use component::{BuildError, ComponentConfig, ConfigProblem};
pub use coordinator::{DeliveryConfig, Pipeline, PipelineError, PipelineStatus, RunSummary, SinkCounts, SinkSlot};
pub use dlq::{DeadLetter, DeadLetterQueue, DlqConfig, DlqError, DlqOverflow};
pub use event::{Columns, Event, NativeEnvelope, Op, Row, SourceMeta};
pub use policy::CommitPolicy;
pub use position::{Position, SourcePosition};
pub use processor::{Processor, ProcessorError};
pub use schema::{SchemaRegistry, SchemaVersion};
pub use sink::{RejectedEvent, Sink, SinkError};
pub use snapshot::{SnapshotConfig, SnapshotMode, SnapshotStore};
pub use source::{ChunkSender, Commit, LagProbe, PipelineClosed, Source, SourceChunk, SourceContext, SourceError};
