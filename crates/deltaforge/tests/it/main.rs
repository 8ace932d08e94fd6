//! DeltaForge's integration tests, as one test binary: each module is one
//! scenario area run against the real binary and the real servers
//! (`scripts/services/*.sh`, started on demand by `support::service`).
//!
//! Tests that take a shared server down (or need a quiet machine for their
//! timing) are not here but in the `disruptive` binary; cargo runs test
//! binaries one after another, so they never overlap with these.

// Shared with the `disruptive` binary (`#[path]`).
mod support;

mod console;
mod control;
mod crash;
mod faults;
mod mysql;
mod ops;
mod pg;
mod processors;
mod sinks;
mod snapshot;
mod verify;
