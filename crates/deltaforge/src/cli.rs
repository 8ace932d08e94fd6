//! Command-line interface: `run` (pipelines with the REST API and metrics),
//! `validate` and `checkpoints`, and logging set-up (`--log-format text|json`,
//! `--log-level` or `RUST_LOG`). It parses and dispatches only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use deltaforge_config::PipelineSpec;
use deltaforge_core::CheckpointStore;

use crate::registry::Registry;
use crate::storage::StorageArgs;

/// DeltaForge: change data capture from MySQL/MariaDB and PostgreSQL to
/// files, Kafka, Redis, NATS and HTTP, with checkpoints saved only after
/// delivery.
#[derive(Debug, Parser)]
#[command(name = "deltaforge", version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("DELTAFORGE_GIT_COMMIT"), ")"), about)]
pub struct Cli {
    /// Log level (overridden by RUST_LOG).
    #[arg(long, global = true, default_value = "info", env = "DELTAFORGE_LOG_LEVEL")]
    pub log_level: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text", env = "DELTAFORGE_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipelines of a config file or directory.
    Run {
        /// Pipeline spec file, or a directory of *.yaml files.
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        storage: StorageArgs,
        /// Seconds to keep delivering in-flight batches after SIGINT/SIGTERM
        /// (and after a stop, pause or delete through the API).
        #[arg(long, default_value_t = 10)]
        shutdown_grace_secs: u64,
        #[command(flatten)]
        control: crate::runner::ControlArgs,
    },
    /// Check a config offline (opens no connection): exit 0 when valid.
    Validate {
        /// Pipeline spec file, or a directory of *.yaml files.
        #[arg(long, short)]
        config: PathBuf,
        /// Also check that each source and sink is reachable and set up.
        #[arg(long)]
        connect: bool,
    },
    /// Inspect or redrive a pipeline's dead-letter queue.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Write an online, checked copy of the SQLite storage (safe while
    /// pipelines run).
    Backup {
        /// The copy to write (must not exist unless --force).
        #[arg(long)]
        to: PathBuf,
        /// Replace an existing file at --to.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Put a backup in place of the SQLite storage (engine stopped); the
    /// current file is kept as <name>.before-restore-<time>.
    Restore {
        /// The backup to restore.
        #[arg(long)]
        from: PathBuf,
        /// Replace an existing storage file (it is kept, renamed).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Inspect or reset stored checkpoints (offline).
    Checkpoints {
        #[command(subcommand)]
        action: CheckpointAction,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Show a running instance's health, readiness and pipelines (REST API client).
    Status {
        #[command(flatten)]
        api: crate::ops_cmd::ApiArgs,
    },
    /// List, show, pause, resume, restart or reset pipelines of a running instance (REST API client).
    Pipelines {
        #[command(subcommand)]
        action: crate::ops_cmd::PipelinesAction,
        #[command(flatten)]
        api: crate::ops_cmd::ApiArgs,
    },
    /// Compare a sink's contents with the source, row by row per primary key
    /// (exit 0: equal, 1: different, 2: error).
    Verify(crate::verify_cmd::VerifyArgs),
    /// Print a shell completion script (e.g. `deltaforge completions bash > /etc/bash_completion.d/deltaforge`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the JSON Schema of a pipeline spec, for editor completion
    /// (`deltaforge schema > docs/pipeline.schema.json`).
    Schema,
    /// Print the man page (roff; `deltaforge man | man -l -`).
    Man {
        /// Write one page per command into this directory instead.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Print a pipeline's dead letters, oldest first (JSON lines).
    List {
        /// Pipeline name.
        pipeline: String,
        /// Pipeline spec file or directory.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Deliver a pipeline's dead letters again, in order, removing each once delivered.
    Redrive {
        /// Pipeline name.
        pipeline: String,
        /// Pipeline spec file or directory (the sinks to redrive to).
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CheckpointAction {
    /// List every stored checkpoint.
    List,
    /// Print one checkpoint as JSON.
    Show {
        /// The source id (the pipeline's `spec.source.config.id`).
        source_id: String,
    },
    /// Delete a checkpoint (server untouched): the pipeline starts over like
    /// a new one (datagen: event 1; MySQL: the binlog's current end;
    /// PostgreSQL: its slot's position). The API's DELETE
    /// /pipelines/{name}/checkpoint also prepares database servers.
    Reset {
        /// The source id.
        source_id: String,
    },
}

/// Sets up `tracing` from the flags and `RUST_LOG`.
pub fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log_level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Loads and validates a config path.
pub fn load_config(path: &std::path::Path) -> Result<Vec<PipelineSpec>, deltaforge_config::ConfigErrors> {
    deltaforge_config::load_path(path, &|name| std::env::var(name).ok(), &Registry)
}

/// Runs the chosen command; returns the process exit code.
pub async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config, storage, shutdown_grace_secs, control } => {
            let specs = match load_config(&config) {
                Ok(s) => s,
                Err(errors) => {
                    eprintln!("{errors}");
                    return Ok(ExitCode::from(2));
                }
            };
            let store = crate::storage::open(&storage).await?;
            crate::runner::run(specs, store, std::time::Duration::from_secs(shutdown_grace_secs), control).await
        }
        Command::Validate { config, connect } => match load_config(&config) {
            Ok(specs) => {
                for s in &specs {
                    println!(
                        "ok: pipeline {} ({} source {:?}, {} sink(s), commit policy {})",
                        s.name,
                        s.source.kind,
                        s.source.id,
                        s.sinks.len(),
                        s.commit_policy
                    );
                }
                if connect {
                    println!("note: --connect has nothing to check for datagen, file, stdout and discard components");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                eprintln!("{errors}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Dlq { action, storage } => {
            let (DlqAction::List { config, .. } | DlqAction::Redrive { config, .. }) = &action;
            let specs = match load_config(config) {
                Ok(s) => s,
                Err(errors) => {
                    eprintln!("{errors}");
                    return Ok(ExitCode::from(2));
                }
            };
            let store = crate::storage::open(&storage).await?;
            match action {
                DlqAction::List { pipeline, .. } => crate::dlq_cmd::list(&specs, &pipeline, store).await,
                DlqAction::Redrive { pipeline, .. } => crate::dlq_cmd::redrive(&specs, &pipeline, store).await,
            }
        }
        Command::Backup { to, force, storage } => crate::backup_cmd::backup(&storage, &to, force).await,
        Command::Restore { from, force, storage } => crate::backup_cmd::restore(&storage, &from, force).await,
        Command::Verify(args) => crate::verify_cmd::run(args).await,
        Command::Status { api } => crate::ops_cmd::status(&api).await,
        Command::Pipelines { action, api } => crate::ops_cmd::pipelines(action, &api).await,
        Command::Completions { shell } => crate::help_cmd::completions(shell, <Cli as clap::CommandFactory>::command()),
        Command::Schema => crate::schema_cmd::print(),
        Command::Man { out_dir } => crate::help_cmd::man(out_dir.as_deref(), <Cli as clap::CommandFactory>::command()),
        Command::Checkpoints { action, storage } => {
            let store = CheckpointStore::new(crate::storage::open(&storage).await?);
            match action {
                CheckpointAction::List => {
                    let all = store.list().await.context("listing checkpoints")?;
                    if all.is_empty() {
                        println!("no checkpoints stored");
                    }
                    for (id, cp) in all {
                        match cp {
                            Ok(cp) => println!(
                                "{id}\t{}\t{}",
                                serde_json::to_string(&cp.position)?,
                                cp.written_at.to_rfc3339()
                            ),
                            Err(e) => println!("{id}\tUNREADABLE: {e}"),
                        }
                    }
                    Ok(ExitCode::SUCCESS)
                }
                CheckpointAction::Show { source_id } => match store.load(&source_id).await? {
                    Some(cp) => {
                        println!("{}", serde_json::to_string_pretty(&cp)?);
                        Ok(ExitCode::SUCCESS)
                    }
                    None => {
                        eprintln!(
                            "no checkpoint stored for source id {source_id:?} (see `deltaforge checkpoints list`)"
                        );
                        Ok(ExitCode::from(3))
                    }
                },
                CheckpointAction::Reset { source_id } => {
                    if store.delete(&source_id).await? {
                        println!(
                            "checkpoint of {source_id:?} deleted: its pipeline starts over like a new one at next start \
                             (MySQL: at the binlog's current end; PostgreSQL: from its slot). To re-read a database \
                             from its oldest binlog or a new slot, reset through the API instead"
                        );
                    } else {
                        println!("no checkpoint stored for {source_id:?}; nothing to do");
                    }
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
