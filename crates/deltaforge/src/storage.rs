//! Opening the configured storage backend (`sqlite`, `memory` or `postgres`).
//! Only opens; never reads or writes what is stored.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use deltaforge_common::redact_dsn;
use deltaforge_storage::{MemoryBackend, StorageBackend};
use deltaforge_storage_postgres::PostgresBackend;
use deltaforge_storage_sqlite::SqliteBackend;

/// Which storage backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// SQLite file (default; single instance).
    Sqlite,
    /// In memory; everything is lost at exit (tests).
    Memory,
    /// PostgreSQL (several instances).
    Postgres,
}

/// Storage options shared by every command.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Storage backend.
    #[arg(long, global = true, value_enum, default_value = "sqlite", env = "DELTAFORGE_STORAGE_BACKEND")]
    pub storage_backend: BackendKind,
    /// SQLite file (parent directories are created).
    #[arg(long, global = true, default_value = "./data/deltaforge.db", env = "DELTAFORGE_STORAGE_PATH")]
    pub storage_path: PathBuf,
    /// PostgreSQL DSN for the postgres backend (tables in schema `deltaforge`;
    /// pipelines then hold leases so that several instances can share it).
    #[arg(long, global = true, env = "DELTAFORGE_STORAGE_DSN", hide_env_values = true)]
    pub storage_dsn: Option<String>,
}

/// Opens the backend the arguments name.
pub async fn open(args: &StorageArgs) -> anyhow::Result<Arc<dyn StorageBackend>> {
    Ok(match args.storage_backend {
        BackendKind::Memory => Arc::new(MemoryBackend::new()),
        BackendKind::Sqlite => Arc::new(
            SqliteBackend::open(&args.storage_path)
                .await
                .with_context(|| format!("opening SQLite storage at {}", args.storage_path.display()))?,
        ),
        BackendKind::Postgres => {
            let Some(dsn) = args.storage_dsn.as_deref() else {
                bail!(
                    "--storage-backend postgres needs --storage-dsn (or DELTAFORGE_STORAGE_DSN), e.g. \
                     postgres://USER:PASSWORD@HOST:5432/DATABASE"
                )
            };
            Arc::new(
                PostgresBackend::connect(dsn)
                    .await
                    .with_context(|| format!("opening PostgreSQL storage at {}", redact_dsn(dsn)))?,
            )
        }
    })
}
