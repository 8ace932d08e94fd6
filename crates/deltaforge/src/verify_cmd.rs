//! `deltaforge verify`: builds the readers of a pipeline's source and sink
//! and its processors from the spec, runs [`deltaforge_verify::verify`]
//! and prints the report (text or JSON). Exit code 0: equal; 1: different;
//! 2: the verification could not run.
//!
//! This module wires things together only; it must never print a DSN
//! unredacted or a masked value (the report redacts those).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use clap::{Args, ValueEnum};
use deltaforge_common::TablePattern;
use deltaforge_config::{ComponentSpec, PipelineSpec, SinkSpec};
use deltaforge_core::component::parse_config;
use deltaforge_core::{CheckpointStore, Position};
use deltaforge_storage::StorageBackend;
use deltaforge_verify::{
    stream_sink_reader, FileSinkReader, MysqlSourceReader, Options, PostgresSourceReader, SinkContext, SinkProgress,
    SinkReader, SourceReader, Transforms, VerifyError,
};

use crate::registry::Registry;
use crate::storage::StorageArgs;

/// The report's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// One JSON object, for machines.
    Json,
}

/// `deltaforge verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Pipeline spec file, or a directory of *.yaml files.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The pipeline to verify.
    pub pipeline: String,
    /// The sink to compare (its `id`; needed when the pipeline has several).
    #[arg(long)]
    pub sink: Option<String>,
    /// Only these tables (`db.table` patterns with `*`, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Only source rows matching this SQL condition.
    #[arg(long = "where")]
    pub condition: Option<String>,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Skip JavaScript processors (differences they would explain are then expected).
    #[arg(long)]
    pub no_transform: bool,
    /// Source rows per chunk.
    #[arg(long, default_value_t = 2000)]
    pub chunk_size: usize,
    /// Seconds to wait for the sink to catch up before re-checking a difference.
    #[arg(long, default_value_t = 120)]
    pub catch_up_secs: u64,
    /// Table sinks: compare row by row, not by chunk hashes.
    #[arg(long)]
    pub no_hashes: bool,
    /// Table sinks: key values per hashed range (differing ranges are split by 8 down to 256, then read row by row).
    #[arg(long, default_value_t = 10_000)]
    pub hash_rows: u64,
    /// Table sinks: re-deliver the missing and differing rows through the pipeline's backfill, then verify again.
    #[arg(long)]
    pub repair: bool,
    /// With --repair: do not ask for confirmation.
    #[arg(long, requires = "repair")]
    pub yes: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// Runs the command; errors print and give exit code 2.
pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    match verify(&args).await {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(2))
        }
    }
}

async fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let specs = deltaforge_config::load_path(&args.config, &|name| std::env::var(name).ok(), &Registry)
        .map_err(|e| anyhow!("{e}"))?;
    let spec = specs.iter().find(|s| s.name == args.pipeline).ok_or_else(|| {
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        anyhow!("no pipeline {:?} in {} (pipelines: {})", args.pipeline, args.config.display(), names.join(", "))
    })?;
    let only = args
        .tables
        .iter()
        .map(|t| TablePattern::parse(t).map_err(|m| anyhow!("--tables {t:?}: {m}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let storage = crate::storage::open(&args.storage).await?;
    let sink = sink_spec(spec, args.sink.as_deref())?;
    if args.repair && !deltaforge_verify::TABLE_SINKS.contains(&sink.kind.as_str()) {
        bail!(
            "--repair re-delivers rows into table sinks only ({}); sink {:?} is a {} sink: \
             verify it, then backfill or reset the pipeline",
            deltaforge_verify::TABLE_SINKS.join(", "),
            sink.id,
            sink.kind
        );
    }
    let (report, mut first) = verify_once(args, spec, &only, storage.clone()).await?;
    if !args.repair || report.equal {
        print_report(args.output, &report, None)?;
        return Ok(exit_code(&report));
    }
    let keys = crate::verify_repair::keys_to_redeliver(&report)?;
    let mut result = crate::verify_repair::RepairResult {
        keys: keys.values().map(Vec::len).sum(),
        not_repaired_extra: report.tables.iter().map(|t| t.extra as usize).sum(),
        ..Default::default()
    };
    if args.output == OutputFormat::Text {
        print!("{}", report.to_text());
    }
    if result.keys > 0 {
        crate::verify_repair::confirm(args.yes, &spec.name, result.keys, keys.len())?;
        let timeout = Duration::from_secs(args.catch_up_secs.max(30));
        result.requests =
            crate::verify_repair::redeliver(&spec.name, storage.clone(), first.source.as_mut(), &keys, timeout).await?;
    }
    if args.output == OutputFormat::Text {
        print!("{}", result.to_text());
    }
    // A fresh job: the sink reader starts over from the sink as it is now.
    let (after, _) = verify_once(args, spec, &only, storage).await?;
    match args.output {
        OutputFormat::Text => print!("after the repair:\n{}", after.to_text()),
        OutputFormat::Json => print_report(args.output, &report, Some((&result, &after)))?,
    }
    Ok(exit_code(&after))
}

fn exit_code(report: &deltaforge_verify::Report) -> ExitCode {
    if report.equal {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Prints a report; with a repair, JSON output is one object holding the
/// first report, the repair and the report after it.
fn print_report(
    format: OutputFormat,
    report: &deltaforge_verify::Report,
    repair: Option<(&crate::verify_repair::RepairResult, &deltaforge_verify::Report)>,
) -> anyhow::Result<()> {
    match (format, repair) {
        (OutputFormat::Text, _) => print!("{}", report.to_text()),
        (OutputFormat::Json, None) => println!("{}", serde_json::to_string_pretty(report)?),
        (OutputFormat::Json, Some((result, after))) => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "report": report, "repair": result, "after": after }))?
        ),
    }
    Ok(())
}

/// One verification of `spec` as `args` ask; its report, and the job (whose
/// source reader a repair goes on using).
async fn verify_once(
    args: &VerifyArgs,
    spec: &PipelineSpec,
    only: &[TablePattern],
    storage: Arc<dyn StorageBackend>,
) -> anyhow::Result<(deltaforge_verify::Report, Prepared)> {
    let mut job = prepare(spec, args.sink.as_deref(), args.no_transform, storage).await?;
    job.options.only = only.to_vec();
    job.options.condition = args.condition.clone();
    job.options.chunk_size = args.chunk_size.max(1);
    job.options.catch_up_timeout = Duration::from_secs(args.catch_up_secs);
    job.options.hashes = !args.no_hashes;
    job.options.hash_rows = args.hash_rows.max(1);
    if args.repair {
        job.options.max_listed = job.options.max_listed.max(crate::verify_repair::KEYS_PER_REQUEST * 20);
    }
    let terminal = std::io::stderr().is_terminal();
    let progress: deltaforge_verify::ProgressFn = Box::new(move |p| {
        if terminal {
            eprint!("\r\x1b[2K{} {}/{} tables, {} rows: {}", p.phase, p.tables_done, p.tables_total, p.rows, p.table);
        }
    });
    let report = deltaforge_verify::verify(
        job.source.as_mut(),
        job.sink.as_mut(),
        &mut job.transforms,
        Some(&job.progress),
        &job.options,
        progress,
    )
    .await?;
    if terminal {
        eprintln!();
    }
    Ok((report, job))
}

/// Everything a verification of one pipeline and sink needs.
pub struct Prepared {
    /// The source's reader.
    pub source: Box<dyn SourceReader>,
    /// The sink's reader.
    pub sink: Box<dyn SinkReader>,
    /// The pipeline's processors.
    pub transforms: Transforms,
    /// The checkpoint watcher.
    pub progress: CheckpointProgress,
    /// Options, filled from the spec.
    pub options: Options,
}

/// Builds the readers of `spec`'s source and sink `sink_id` (the only sink
/// when `None`), and its processors.
pub async fn prepare(
    spec: &PipelineSpec,
    sink_id: Option<&str>,
    no_transform: bool,
    storage: Arc<dyn StorageBackend>,
) -> anyhow::Result<Prepared> {
    let sink_spec = sink_spec(spec, sink_id)?;
    let sink: Box<dyn SinkReader> = match sink_spec.kind.as_str() {
        "file" => {
            let path = sink_spec
                .config
                .get("path")
                .and_then(|p| p.as_str())
                .ok_or_else(|| anyhow!("sink {}: no path", sink_spec.id))?;
            Box::new(FileSinkReader::new(&sink_spec.id, std::path::Path::new(path))?)
        }
        // Stream and table sinks, and the clear refusals (http, append-mode
        // table sinks, unknown types).
        kind => {
            let ctx = SinkContext {
                sink_id: sink_spec.id.clone(),
                pipeline: spec.name.clone(),
                tenant: spec.tenant.clone(),
                source_id: spec.source.id.clone(),
            };
            stream_sink_reader(kind, &sink_spec.config, &ctx)?
        }
    };
    let source: Box<dyn SourceReader> = match spec.source.kind.as_str() {
        "postgres" => {
            let cfg: deltaforge_source_postgres::PostgresConfig =
                parse_config(&spec.source.config).map_err(|p| anyhow!("source config: {p}"))?;
            let dsn = deltaforge_source_postgres::Dsn::parse(&cfg.dsn).map_err(|e| anyhow!("source dsn: {e}"))?;
            let patterns = cfg.patterns().map_err(|m| anyhow!("source tables: {m}"))?;
            Box::new(PostgresSourceReader::connect(&dsn, patterns).await.context("connecting to the source")?)
        }
        "mysql" => {
            let cfg: deltaforge_source_mysql::MysqlConfig =
                parse_config(&spec.source.config).map_err(|p| anyhow!("source config: {p}"))?;
            Box::new(MysqlSourceReader::connect(cfg).await.context("connecting to the source")?)
        }
        other => {
            bail!("a {other} source has no tables to read back: verify compares PostgreSQL and MySQL/MariaDB sources")
        }
    };
    let mut options = Options::new(&spec.name, &sink_spec.id);
    let mut processors = Vec::new();
    for (i, p) in spec.processors.iter().enumerate() {
        if p.kind == "javascript" && no_transform {
            options.warnings.push(format!(
                "processor {i} (javascript) skipped (--no-transform): differences it would explain are expected"
            ));
            continue;
        }
        if p.kind == "mask" {
            options.masked.extend(masked_columns(p));
        }
        processors.push(Registry.build_processor(p).map_err(|m| anyhow!("processor {i}: {m}"))?);
    }
    Ok(Prepared {
        source,
        sink,
        transforms: Transforms::new(processors, &spec.name, &spec.tenant, &spec.source.id),
        progress: CheckpointProgress {
            store: CheckpointStore::new(storage),
            source_id: spec.source.id.clone(),
            sink_id: sink_spec.id.clone(),
        },
        options,
    })
}

/// The sink `sink_id` of `spec` (the only sink when `None`).
fn sink_spec<'a>(spec: &'a PipelineSpec, sink_id: Option<&str>) -> anyhow::Result<&'a SinkSpec> {
    match sink_id {
        Some(id) => spec.sinks.iter().find(|s| s.id == id).ok_or_else(|| {
            let ids: Vec<&str> = spec.sinks.iter().map(|s| s.id.as_str()).collect();
            anyhow!("pipeline {} has no sink {id:?} (sinks: {})", spec.name, ids.join(", "))
        }),
        None if spec.sinks.len() == 1 => Ok(&spec.sinks[0]),
        None => {
            let ids: Vec<&str> = spec.sinks.iter().map(|s| s.id.as_str()).collect();
            bail!("pipeline {} has several sinks; choose one with --sink ({})", spec.name, ids.join(", "))
        }
    }
}

/// The columns a `mask` processor's rules name, per table pattern.
fn masked_columns(p: &ComponentSpec) -> Vec<(TablePattern, Vec<String>)> {
    let rules = p.config.get("rules").and_then(|r| r.as_array()).cloned().unwrap_or_default();
    rules
        .iter()
        .filter_map(|r| {
            let table = TablePattern::parse(r.get("table")?.as_str()?).ok()?;
            let cols = r.get("columns")?.as_object()?.keys().cloned().collect();
            Some((table, cols))
        })
        .collect()
}

/// The sink's position from the stored checkpoint: its own per-sink
/// position when ahead, else the pipeline's.
pub struct CheckpointProgress {
    store: CheckpointStore,
    source_id: String,
    sink_id: String,
}

#[async_trait]
impl SinkProgress for CheckpointProgress {
    async fn reached(&self) -> Result<Option<Position>, VerifyError> {
        let cp = self
            .store
            .load(&self.source_id)
            .await
            .map_err(|e| VerifyError::Unsupported(format!("reading the checkpoint of {}: {e}", self.source_id)))?;
        Ok(cp.map(|cp| match cp.sinks.get(&self.sink_id) {
            Some(own) if cp.position.is_at_or_before(own) => own.clone(),
            _ => cp.position,
        }))
    }
}

/// Runs the API's verification jobs (`POST /pipelines/{name}/verify`) with
/// the same readers as the command.
pub struct ApiRunner;

impl deltaforge_control::VerifyRunner for ApiRunner {
    fn run(
        &self,
        spec: PipelineSpec,
        storage: Arc<dyn StorageBackend>,
        request: deltaforge_control::VerifyRequest,
        progress: Arc<std::sync::Mutex<serde_json::Value>>,
    ) -> deltaforge_control::verify_jobs::VerifyFuture {
        Box::pin(async move {
            let run = async {
                let only = request
                    .tables
                    .iter()
                    .map(|t| TablePattern::parse(t).map_err(|m| anyhow!("tables {t:?}: {m}")))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let mut job = prepare(&spec, request.sink.as_deref(), request.no_transform, storage).await?;
                job.options.only = only;
                job.options.condition = request.condition.clone();
                job.options.hashes = !request.no_hashes;
                if let Some(n) = request.hash_rows {
                    job.options.hash_rows = n.max(1);
                }
                let report = deltaforge_verify::verify(
                    job.source.as_mut(),
                    job.sink.as_mut(),
                    &mut job.transforms,
                    Some(&job.progress),
                    &job.options,
                    Box::new(move |p| {
                        if let Ok(v) = serde_json::to_value(p) {
                            *progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = v;
                        }
                    }),
                )
                .await?;
                anyhow::Ok((report.equal, serde_json::to_value(&report)?))
            };
            run.await.map_err(|e| format!("{e:#}"))
        })
    }
}
