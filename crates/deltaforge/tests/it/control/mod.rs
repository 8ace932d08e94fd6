//! The control plane: the REST API, backfills, failing checkpoint writes,
//! database sources' lag and reset, leases shared between instances,
//! metrics, the API fuzzed by schemathesis, the API's defences against
//! cross-site requests and untrusted specs, and secrets kept out of every
//! API answer and log line.

mod api;
mod backfill;
mod checkpoint_failures;
mod db_sources;
mod leases;
mod metrics;
mod schemathesis;
mod secrets;
mod security;
