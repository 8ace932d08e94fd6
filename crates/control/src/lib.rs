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
//! * [`api`] maps HTTP routes to manager commands; [`request_guard`]
//!   refuses foreign hosts, foreign origins and non-JSON/YAML bodies before
//!   any route runs; [`openapi`] documents them;
//!   `storage_backup` checks where `POST /storage/backup` may write.
//! * [`console`] serves the embedded web console at `/`; [`console_api`]
//!   adds the routes it reads (history, dead letters, snapshot progress),
//!   and [`history`] keeps the last hour of samples they chart. All three
//!   exist only with the `console` feature (on by default).
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
mod api_types;
pub mod backfill;
#[cfg(feature = "console")]
pub mod console;
#[cfg(feature = "console")]
pub mod console_api;
#[cfg(feature = "console")]
pub mod history;
pub mod lease;
pub mod manager;
pub mod metrics;
pub mod openapi;
pub mod request_guard;
mod storage_backup;
#[cfg(test)]
pub(crate) mod testing;
pub mod verify_jobs;

pub use api::{ApiState, MAX_BODY_BYTES};
#[cfg(feature = "console")]
pub use history::History;
pub use lease::LeaseConfig;
pub use manager::{
    ManagerConfig, ManagerError, PipelineFactory, PipelineManager, PipelineView, RedriveFuture, Reset, State,
};
pub use request_guard::RequestGuard;
pub use verify_jobs::{VerifyJobs, VerifyRequest, VerifyRunner};
