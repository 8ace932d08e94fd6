//! The `file` sink's reader: its JSON lines (rotated files oldest first:
//! `out.jsonl.1`, `.2`, …, then `out.jsonl`) as an [`EventLog`], indexed by
//! [`IndexedSinkReader`] (see [`crate::event_index`] for how events become
//! rows, duplicates and out-of-order counts).
//!
//! This module must never write to the sink's files.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::Value;

use crate::envelope::{decode, Delivered};
use crate::error::VerifyError;
use crate::event_index::{blocking, EventLog, IndexedSinkReader};
use crate::model::TableLayout;

/// Lines read per batch.
const BATCH: usize = 5_000;

/// Reads a `file` sink.
pub type FileSinkReader = IndexedSinkReader<FileLog>;

impl FileSinkReader {
    /// A reader of the file sink `sink` writing to `path`; its index goes
    /// into a new temporary directory (under `TMPDIR`).
    pub fn new(sink: &str, path: &Path) -> Result<Self, VerifyError> {
        let log = FileLog {
            sink: sink.to_string(),
            path: path.to_path_buf(),
            pending: Vec::new(),
            open: None,
            unreadable: 0,
        };
        IndexedSinkReader::with_log(sink, log)
    }
}

/// The lines of a file sink's files, oldest first.
pub struct FileLog {
    sink: String,
    path: PathBuf,
    /// Files still to read, the next one last.
    pending: Vec<PathBuf>,
    open: Option<(PathBuf, BufReader<File>)>,
    unreadable: u64,
}

impl FileLog {
    fn err(&self, message: impl Into<String>) -> VerifyError {
        VerifyError::Sink { sink: self.sink.clone(), message: message.into() }
    }

    /// The sink's files, oldest first.
    fn files(&self) -> Vec<PathBuf> {
        let mut rotated: Vec<(u64, PathBuf)> = Vec::new();
        if let (Some(parent), Some(name)) = (self.path.parent(), self.path.file_name().and_then(|n| n.to_str())) {
            let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            if let Ok(entries) = std::fs::read_dir(parent) {
                for e in entries.flatten() {
                    let file = e.file_name().to_string_lossy().into_owned();
                    if let Some(n) =
                        file.strip_prefix(name).and_then(|s| s.strip_prefix('.')).and_then(|s| s.parse().ok())
                    {
                        rotated.push((n, e.path()));
                    }
                }
            }
        }
        rotated.sort();
        let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
        if self.path.exists() {
            out.push(self.path.clone());
        }
        out
    }

    fn read_batch(&mut self) -> Result<Option<Vec<Delivered>>, VerifyError> {
        let mut out = Vec::new();
        let mut line = String::new();
        while out.len() < BATCH {
            if self.open.is_none() {
                let Some(next) = self.pending.pop() else { break };
                let file = File::open(&next).map_err(|e| self.err(format!("opening {}: {e}", next.display())))?;
                self.open = Some((next, BufReader::new(file)));
            }
            let Some((path, reader)) = self.open.as_mut() else { break };
            line.clear();
            let n = reader.read_line(&mut line).map_err(|e| VerifyError::Sink {
                sink: self.sink.clone(),
                message: format!("reading {}: {e}", path.display()),
            })?;
            if n == 0 {
                self.open = None;
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(&line).ok().as_ref().and_then(decode) {
                Some(d) => out.push(d),
                // A torn last line (a crash mid-write) is cut by the sink
                // on restart; others are not events.
                None => self.unreadable += 1,
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }
}

#[async_trait]
impl EventLog for FileLog {
    async fn rewind(&mut self, _tables: &[TableLayout]) -> Result<(), VerifyError> {
        let mut files = self.files();
        if files.is_empty() {
            return Err(
                self.err(format!("no file at {} (nothing delivered yet, or a wrong path)", self.path.display()))
            );
        }
        files.reverse();
        self.pending = files;
        self.open = None;
        self.unreadable = 0;
        Ok(())
    }

    async fn next_batch(&mut self) -> Result<Option<Vec<Delivered>>, VerifyError> {
        blocking(|| self.read_batch())
    }

    fn unreadable(&self) -> u64 {
        self.unreadable
    }
}
