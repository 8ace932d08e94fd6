//! The control plane: the REST API, database sources' lag and reset, leases
//! shared between instances, metrics, and the API fuzzed by schemathesis.

mod api;
mod db_sources;
mod leases;
mod metrics;
mod schemathesis;
