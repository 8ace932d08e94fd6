//! `deltaforge`: the binary. Parses the command line, sets up logging and
//! storage, and hands pipelines to the runner. All engine logic lives in the
//! library crates; this crate only wires them together.

mod api_client;
mod backup_cmd;
mod cli;
mod dlq_cmd;
#[cfg(test)]
mod envelope_golden_tests;
mod failpoint;
mod help_cmd;
mod ops_cmd;
mod registry;
mod runner;
mod schema_cmd;
mod storage;
mod verify_cmd;
mod verify_repair;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc (without transparent huge pages, which raised peak RSS by a
/// third) instead of the system allocator: events are many small,
/// short-lived allocations made on one thread and freed on another (source →
/// batcher → sink), where glibc's malloc spent a third of a snapshot's CPU
/// time (`perf`), consolidating and unlinking chunks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::execute(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
