//! DeltaForge's control plane: the pipeline manager, leases for running
//! several instances on shared storage, the REST API and the Prometheus
//! metrics endpoint.
//!
//! * [`manager`] owns every pipeline's spec and supervised task, and the
//!   commands (create/replace/delete, start/stop/pause/resume, checkpoint reset);
//!   [`backfill`] queues on-demand backfills for the running source.
//! * [`lease`] makes each pipeline run on exactly one instance when the
//!   storage is shared, and fences checkpoint writes of an instance that
//!   lost its lease.
//! * [`api`] maps HTTP routes to manager commands; [`openapi`] documents them;
//!   `storage_backup` checks where `POST /storage/backup` may write.
//! * [`metrics`] installs the Prometheus recorder and serves `/metrics`
//!   (its module docs list every metric and the lag-bytes contract for sources).
//!
//! This crate must never know concrete sources or sinks (the binary hands
//! it a [`PipelineFactory`]) and never weakens the delivery invariant: it
//! only starts and stops coordinator runs, and deletes checkpoints only
//! when no run of their pipeline can still write them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod backfill;
pub mod lease;
pub mod manager;
pub mod metrics;
pub mod openapi;
mod storage_backup;
#[cfg(test)]
pub(crate) mod testing;

pub use api::{ApiState, MAX_BODY_BYTES};
pub use lease::LeaseConfig;
pub use manager::{ManagerConfig, ManagerError, PipelineFactory, PipelineManager, PipelineView, Reset, State};
