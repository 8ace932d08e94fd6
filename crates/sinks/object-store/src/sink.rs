//! [`ObjectStoreSink`]: gathers events into one open file per directory
//! (rendered `path`), across batches, and commits a file when it reaches
//! `max_rows` or `max_bytes`, is older than `max_age_ms`, or its table's
//! schema changes; then writes its manifest.
//!
//! Acknowledgement: a batch is held ([`Sink::held_batches`]) while any of
//! its events is in a file not yet committed; the coordinator acknowledges
//! it only afterwards, so the checkpoint never passes a buffered event.
//! Exactly-once files: a file is named by its first and last event
//! position, and the events of a directory at or before the last position
//! its manifests record are skipped on replay, so a replay after a crash
//! neither duplicates nor overlaps a committed file. A data file without a
//! manifest (a crash between the two writes) is deleted when the
//! directory is first seen. A URL prefix must belong to one sink.
//!
//! Start-up cost: nothing is read until an event for a directory arrives;
//! then one read of the directory's progress object ([`crate::progress`]),
//! one more (its pending manifest) when a file was being committed, and
//! for a local target one directory read to delete temporary files. Only
//! a directory written before progress objects existed is listed and its
//! manifests read, once. Each committed file costs one more small write
//! (the progress object) besides the data file and its manifest.
//!
//! A value its column cannot hold exactly refuses its event
//! ([`SinkError::Rejected`], naming the table, the column and why): the
//! coordinator dead-letters it, or stops the pipeline without a dead-letter
//! queue; the rest of the batch is written.
//!
//! This module never retries by itself and never writes checkpoints.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deltaforge_core::{BuildError, Columns, Event, RejectedEvent, SchemaRegistry, Sink, SinkError};
use serde_json::{json, Value};
use tempfile::NamedTempFile;

use crate::config::{Format, ObjectStoreConfig};
use crate::encode::{file_size, AppendError, FileEncoder, JsonlEncoder, ParquetEncoder};
use crate::layout::Layout;
use crate::path::{file_name, manifest_key, position_text, DirCache, PathTemplate};
use crate::progress::{progress_key, DirProgress, EventPos};
use crate::store::{join, Store};

/// A table schema version: `(db, table, version)`.
type LayoutKey = (Arc<str>, Arc<str>, u64);

/// A file being written.
struct OpenFile {
    encoder: FileEncoder,
    layout: Option<Arc<Layout>>,
    schema_version: Option<u64>,
    table: String,
    first: (EventPos, String),
    /// The last event appended (its position text is made when sealing).
    last: EventPos,
    rows: u64,
    /// Encoded (JSON Lines) or estimated (Parquet: written + in-progress) bytes.
    bytes: u64,
    opened: Instant,
    /// The oldest batch with an event in this file.
    oldest_batch: u64,
}

/// A finished file waiting to be committed.
struct SealedFile {
    dir: String,
    name: String,
    tmp: NamedTempFile,
    manifest: Vec<u8>,
    last: EventPos,
    oldest_batch: u64,
    progress_written: bool,
    data_committed: bool,
}

/// Where the current batch's appending stopped, so that a retry of the same
/// batch after a failure appends each event once.
struct Progress {
    first_key: String,
    len: usize,
    done: usize,
    batch: u64,
    /// Events of the batch refused so far (a value that does not fit).
    rejected: Vec<RejectedEvent>,
}

/// The object-storage sink.
pub struct ObjectStoreSink {
    cfg: ObjectStoreConfig,
    path: PathTemplate,
    store: Store,
    schemas: Option<SchemaRegistry>,
    layouts: HashMap<LayoutKey, Arc<Layout>>,
    /// The layout of the last column list seen without a registered schema.
    untyped: Option<(Columns, Arc<Layout>)>,
    /// The last directory rendered (most events go where the last one went).
    last_dir: DirCache,
    open: HashMap<String, OpenFile>,
    sealed: VecDeque<SealedFile>,
    /// Per directory: the last event position its manifests record.
    committed_upto: HashMap<String, Option<EventPos>>,
    next_batch: u64,
    progress: Option<Progress>,
}

impl ObjectStoreSink {
    /// Builds the sink; connects nowhere (the first delivery does).
    pub fn new(cfg: ObjectStoreConfig) -> Result<Self, BuildError> {
        use deltaforge_core::ComponentConfig as _;
        cfg.check()?;
        let path = PathTemplate::parse(&cfg.path).map_err(|e| e.at("path"))?;
        let store = Store::new(&cfg)?;
        Ok(ObjectStoreSink {
            cfg,
            path,
            store,
            schemas: None,
            layouts: HashMap::new(),
            untyped: None,
            last_dir: DirCache::default(),
            open: HashMap::new(),
            sealed: VecDeque::new(),
            committed_upto: HashMap::new(),
            next_batch: 0,
            progress: None,
        })
    }

    fn extension(&self) -> &'static str {
        match (self.cfg.format, self.cfg.compression) {
            (Format::Parquet, _) => "parquet",
            (Format::Jsonl, crate::config::Compression::None) => "jsonl",
            (Format::Jsonl, crate::config::Compression::Gzip) => "jsonl.gz",
            (Format::Jsonl, crate::config::Compression::Zstd) => "jsonl.zst",
        }
    }

    /// The typed layout of an event's table version (Parquet only).
    fn layout_of(&mut self, e: &Event) -> Option<Arc<Layout>> {
        if self.cfg.format != Format::Parquet {
            return None;
        }
        if let (Some(v), Some(reg)) = (e.schema_version, &self.schemas) {
            let key = (e.source.db.clone(), e.source.table.clone(), v);
            if let Some(l) = self.layouts.get(&key) {
                return Some(l.clone());
            }
            let found = reg
                .versions(&e.source.db, &e.source.table)
                .into_iter()
                .find(|s| s.version == v)
                .and_then(|s| Layout::from_schema(&s.schema))
                .map(Arc::new);
            // Remember only hits: the source may register the version later.
            if let Some(l) = found {
                self.layouts.insert(key, l.clone());
                return Some(l);
            }
        }
        let row = e.after.as_ref().or(e.before.as_ref())?;
        // Events of a table share their column list: one layout for it.
        if let Some((columns, layout)) = &self.untyped {
            if Arc::ptr_eq(columns, row.columns()) {
                return Some(layout.clone());
            }
        }
        let layout = Arc::new(Layout::untyped(row.columns()));
        self.untyped = Some((row.columns().clone(), layout.clone()));
        Some(layout)
    }

    /// Learns what a replay must skip in `dir`, from its progress object
    /// (one read, and one more when a file was being committed), and
    /// deletes a data file whose commit a crash interrupted. A directory
    /// without one (new, or written by a version before it) is listed.
    async fn load_dir(&mut self, dir: &str) -> Result<(), SinkError> {
        let progress = self.store.read_optional(&progress_key(dir)).await?;
        let progress = progress.and_then(|body| {
            let p = DirProgress::decode(&body);
            if p.is_none() {
                tracing::warn!(object = %progress_key(dir), "unreadable progress object; listing the manifests instead");
            }
            p
        });
        let upto = match progress {
            None => self.load_dir_by_listing(dir).await?,
            Some(DirProgress { last, pending: None }) => last,
            Some(DirProgress { last, pending: Some((file, pending_last)) }) => {
                if self.store.read_optional(&manifest_key(dir, &file)).await?.is_some() {
                    Some(pending_last)
                } else {
                    tracing::info!(file = %join(dir, &file), "deleting a file whose commit was interrupted (no manifest)");
                    self.store.delete(&join(dir, &file)).await?;
                    last
                }
            }
        };
        if let Store::Local { .. } = self.store {
            // Local temporary files of an interrupted write: one directory read.
            for name in self.store.list(dir).await? {
                if name.starts_with(".deltaforge-") {
                    self.store.delete(&join(dir, &name)).await?;
                }
            }
        }
        self.committed_upto.insert(dir.to_string(), upto);
        Ok(())
    }

    /// The last position the manifests of `dir` record, reading every one,
    /// and deletes data files no manifest lists.
    async fn load_dir_by_listing(&mut self, dir: &str) -> Result<Option<EventPos>, SinkError> {
        let manifest_dir = join("_manifest", dir);
        let mut upto: Option<EventPos> = None;
        let mut listed = std::collections::HashSet::new();
        for name in self.store.list(&manifest_dir).await? {
            let Some(file) = name.strip_suffix(".json") else { continue };
            let body = self.store.read(&join(&manifest_dir, &name)).await?;
            let last =
                serde_json::from_slice::<Value>(&body).ok().and_then(|m| m.get("last").and_then(EventPos::from_json));
            match last {
                Some(last) => {
                    if upto.as_ref().is_none_or(|u| u.at_or_before(&last)) {
                        upto = Some(last);
                    }
                    listed.insert(file.to_string());
                }
                None => tracing::warn!(manifest = %join(&manifest_dir, &name), "unreadable manifest ignored"),
            }
        }
        let ext = self.extension();
        for name in self.store.list(dir).await? {
            if name.ends_with(&format!(".{ext}")) && !listed.contains(&name) {
                tracing::info!(file = %join(dir, &name), "deleting a file no manifest lists (left by an interrupted commit)");
                self.store.delete(&join(dir, &name)).await?;
            }
        }
        Ok(upto)
    }

    /// Appends one event of batch `batch` to its directory's open file;
    /// returns true when that sealed a file (to be committed), or the
    /// reason when a value does not fit its column (nothing appended). Its
    /// only await comes before the event is appended, so a delivery
    /// cancelled there (a timeout) leaves the event out, as the progress says.
    async fn append(&mut self, e: &Event, batch: u64) -> Result<Result<bool, String>, SinkError> {
        let dir = self.path.render_cached(e, &mut self.last_dir);
        let dir = &*dir;
        let pos = EventPos::of(e);
        if !self.committed_upto.contains_key(dir) {
            self.load_dir(dir).await?;
        }
        if let Some(Some(upto)) = self.committed_upto.get(dir) {
            if pos.at_or_before(upto) {
                return Ok(Ok(false)); // already in a committed file
            }
        }
        let layout = self.layout_of(e);
        let open = self.open.get(dir);
        let same = |a: &Option<Arc<Layout>>, b: &Option<Arc<Layout>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            (a, b) => a.is_none() && b.is_none(),
        };
        if open.is_some_and(|f| !same(&f.layout, &layout) || f.schema_version != e.schema_version) {
            self.seal(dir)?;
        }
        if !self.open.contains_key(dir) {
            let tmp = self.store.temp_file(dir)?;
            let encoder = match &layout {
                Some(l) => FileEncoder::Parquet(Box::new(
                    ParquetEncoder::new(tmp, l.clone(), self.cfg.include_before).map_err(SinkError::Retryable)?,
                )),
                None => FileEncoder::Jsonl(Box::new(
                    JsonlEncoder::new(tmp, self.cfg.envelope, self.cfg.compression).map_err(SinkError::Retryable)?,
                )),
            };
            self.open.insert(
                dir.to_string(),
                OpenFile {
                    encoder,
                    layout,
                    schema_version: e.schema_version,
                    table: format!("{}.{}", e.source.db, e.source.table),
                    first: (pos.clone(), position_text(&pos.tx, pos.index)),
                    last: pos.clone(),
                    rows: 0,
                    bytes: 0,
                    opened: Instant::now(),
                    oldest_batch: batch,
                },
            );
        }
        let f = self.open.get_mut(dir).expect("opened above");
        match f.encoder.append(e) {
            Ok(bytes) => f.bytes = bytes,
            Err(AppendError::Unfit(why)) => {
                if f.rows == 0 {
                    self.open.remove(dir); // opened for this event alone
                }
                return Ok(Err(why));
            }
            Err(AppendError::Failed(m)) => return Err(SinkError::Retryable(m)),
        }
        f.rows += 1;
        f.last = pos;
        if f.rows >= self.cfg.max_rows || f.bytes >= self.cfg.max_bytes {
            self.seal(dir)?;
            return Ok(Ok(true));
        }
        Ok(Ok(false))
    }

    /// Finishes a directory's open file and queues it for commit.
    fn seal(&mut self, dir: &str) -> Result<(), SinkError> {
        let Some(f) = self.open.remove(dir) else { return Ok(()) };
        let tmp = f.encoder.finish().map_err(SinkError::Retryable)?;
        let name = file_name(&f.first.1, &position_text(&f.last.tx, f.last.index), self.extension());
        let manifest = json!({
            "file": join(dir, &name),
            "table": f.table,
            "format": self.extension(),
            "schema_version": f.schema_version,
            "rows": f.rows,
            "bytes": file_size(tmp.as_file()),
            "first": f.first.0.to_json(),
            "last": f.last.to_json(),
        });
        self.sealed.push_back(SealedFile {
            dir: dir.to_string(),
            name,
            tmp,
            manifest: serde_json::to_vec_pretty(&manifest).expect("manifests serialize"),
            last: f.last,
            oldest_batch: f.oldest_batch,
            progress_written: false,
            data_committed: false,
        });
        Ok(())
    }

    /// Commits sealed files in order: the directory's progress object
    /// naming the file as pending, the data file, then its manifest.
    async fn commit_sealed(&mut self) -> Result<(), SinkError> {
        while let Some(s) = self.sealed.front_mut() {
            if !s.progress_written {
                let last = self.committed_upto.get(&s.dir).cloned().flatten();
                let progress = DirProgress { last, pending: Some((s.name.clone(), s.last.clone())) };
                self.store.put_small(&progress_key(&s.dir), progress.encode()).await?;
                s.progress_written = true;
            }
            if !s.data_committed {
                self.store.commit(&s.dir, &s.name, &s.tmp).await?;
                s.data_committed = true;
            }
            self.store.put_small(&manifest_key(&s.dir, &s.name), s.manifest.clone()).await?;
            let s = self.sealed.pop_front().expect("front exists");
            tracing::debug!(file = %join(&s.dir, &s.name), "committed");
            self.committed_upto.insert(s.dir, Some(s.last));
        }
        Ok(())
    }

    /// Seals the files older than `max_age_ms` (every file when `all`).
    fn seal_aged(&mut self, all: bool) -> Result<(), SinkError> {
        let max_age = Duration::from_millis(self.cfg.max_age_ms);
        let due: Vec<String> =
            self.open.iter().filter(|(_, f)| all || f.opened.elapsed() >= max_age).map(|(d, _)| d.clone()).collect();
        for dir in due {
            self.seal(&dir)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for ObjectStoreSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let Some(first) = events.first() else { return Ok(()) };
        let key = first.idempotency_key();
        let (batch, start, rejected) = match self.progress.take() {
            Some(p) if p.first_key == key && p.len == events.len() => (p.batch, p.done, p.rejected),
            _ => {
                self.next_batch += 1;
                (self.next_batch - 1, 0, Vec::new())
            }
        };
        self.progress = Some(Progress { first_key: key, len: events.len(), done: start, batch, rejected });
        self.commit_sealed().await?;
        for (i, e) in events.iter().enumerate().skip(start) {
            let appended = self.append(e, batch).await?;
            let p = self.progress.as_mut().expect("set above");
            p.done = i + 1;
            match appended {
                Ok(true) => self.commit_sealed().await?,
                Ok(false) => {}
                Err(reason) => p.rejected.push(RejectedEvent { index: i, reason }),
            }
        }
        self.seal_aged(false)?;
        self.commit_sealed().await?;
        let rejected = self.progress.take().map(|p| p.rejected).unwrap_or_default();
        if rejected.is_empty() {
            Ok(())
        } else {
            // The other events are appended (held like any other batch's).
            Err(SinkError::Rejected(rejected))
        }
    }

    fn held_batches(&self) -> usize {
        let oldest = self.open.values().map(|f| f.oldest_batch).chain(self.sealed.iter().map(|s| s.oldest_batch)).min();
        // A batch whose appending has not finished counts as delivered only
        // once `deliver` returned; until then it is not the coordinator's.
        oldest.map(|b| (self.next_batch - b) as usize).unwrap_or(0)
    }

    async fn flush(&mut self, drain: bool) -> Result<(), SinkError> {
        self.seal_aged(drain)?;
        self.commit_sealed().await
    }

    fn attach_schemas(&mut self, schemas: SchemaRegistry) {
        self.schemas = Some(schemas);
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        let rows: u64 = self.open.values().map(|f| f.rows).sum();
        if rows > 0 || !self.sealed.is_empty() {
            // Never acknowledged: the replay after the checkpoint writes them again.
            tracing::info!(rows, files = self.sealed.len(), "closing with uncommitted rows; they will be replayed");
        }
        self.open.clear();
        self.sealed.clear();
        Ok(())
    }
}
