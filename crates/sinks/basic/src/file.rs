//! `type: file` — appends events as JSON Lines to a file and acknowledges a
//! batch only after `fsync` returned.
//!
//! On open, a last line without its newline (a write torn by a crash) is cut
//! off: it was never acknowledged, so the replay after the checkpoint
//! writes it again. With `max_bytes`, the file is rotated when it grows past
//! that size: `out.jsonl` becomes `out.jsonl.1` (then `.2`, …; the highest
//! number is the newest rotated file) and a new `out.jsonl` is started.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use deltaforge_core::{BuildError, ComponentConfig, ConfigProblem, Event, Sink, SinkError};
use serde::Deserialize;

/// Configuration of the file sink.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// File to append to; parent directories are created.
    pub path: PathBuf,
    /// Rotate when the file exceeds this many bytes (checked after each batch).
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

impl ComponentConfig for FileConfig {
    fn check(&self) -> Result<(), ConfigProblem> {
        // Offline: the file is opened when the sink is built.
        Ok(())
    }
}

/// A JSON Lines file sink.
pub struct FileSink {
    path: PathBuf,
    max_bytes: Option<u64>,
    file: Option<File>,
    size: u64,
    buf: Vec<u8>,
}

impl FileSink {
    /// Opens (creating if needed) the file, repairing a torn last line.
    pub fn open(cfg: FileConfig) -> Result<Self, BuildError> {
        let (file, size) = open_repaired(&cfg.path).map_err(|e| BuildError::other(e.to_string()))?;
        Ok(FileSink { path: cfg.path, max_bytes: cfg.max_bytes, file: Some(file), size, buf: Vec::new() })
    }

    fn rotate(&mut self) -> Result<(), SinkError> {
        let mut n = 1;
        while rotated_name(&self.path, n).exists() {
            n += 1;
        }
        let target = rotated_name(&self.path, n);
        self.file = None;
        std::fs::rename(&self.path, &target).map_err(|e| {
            SinkError::Retryable(format!("rotating {} to {}: {e}", self.path.display(), target.display()))
        })?;
        let (file, size) = open_repaired(&self.path)?;
        self.file = Some(file);
        self.size = size;
        Ok(())
    }
}

fn rotated_name(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn open_repaired(path: &Path) -> Result<(File, u64), SinkError> {
    let fail = |what: &str, e: std::io::Error| SinkError::Retryable(format!("{what} {}: {e}", path.display()));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| fail("creating the directory of", e))?;
    }
    let mut file =
        OpenOptions::new().read(true).append(true).create(true).open(path).map_err(|e| fail("opening", e))?;
    let len = file.metadata().map_err(|e| fail("reading metadata of", e))?.len();
    if len == 0 {
        return Ok((file, 0));
    }
    // Find the last newline, scanning back from the end in blocks.
    let mut end = len;
    let mut block = vec![0u8; 64 * 1024];
    let keep = loop {
        let start = end.saturating_sub(block.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start)).map_err(|e| fail("reading", e))?;
        file.read_exact(&mut block[..n]).map_err(|e| fail("reading", e))?;
        if let Some(i) = block[..n].iter().rposition(|b| *b == b'\n') {
            break start + i as u64 + 1;
        }
        if start == 0 {
            break 0;
        }
        end = start;
    };
    if keep < len {
        tracing::warn!(path = %path.display(), dropped_bytes = len - keep, "cutting off a torn last line (never acknowledged; it will be replayed)");
        file.set_len(keep).map_err(|e| fail("truncating", e))?;
        file.sync_all().map_err(|e| fail("syncing", e))?;
    }
    Ok((file, keep))
}

#[async_trait]
impl Sink for FileSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        if self.file.is_none() {
            let (file, size) = open_repaired(&self.path)?;
            self.file = Some(file);
            self.size = size;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        crate::encode_lines(events, &mut buf);
        let mut file = self.file.take().expect("opened above");
        let path = self.path.clone();
        let (file, buf, result) = tokio::task::spawn_blocking(move || {
            let r = file.write_all(&buf).and_then(|_| file.sync_data());
            (file, buf, r)
        })
        .await
        .map_err(|e| SinkError::Retryable(format!("file writer task: {e}")))?;
        let written = buf.len() as u64;
        self.buf = buf;
        match result {
            Ok(()) => {
                self.file = Some(file);
                self.size += written;
            }
            Err(e) => {
                // Reopen on the next attempt, which also cuts a partial write.
                return Err(SinkError::Retryable(format!("writing {}: {e}", path.display())));
            }
        }
        if self.max_bytes.is_some_and(|m| self.size >= m) {
            self.rotate()?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        if let Some(f) = &self.file {
            f.sync_all().map_err(|e| SinkError::Retryable(format!("syncing {}: {e}", self.path.display())))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltaforge_core::testing::EventBuilder;

    fn ev(seq: u64) -> Event {
        EventBuilder::new(seq).build()
    }

    fn ids(path: &Path) -> Vec<u64> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["after"]["id"].as_u64().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn appends_lines_and_creates_parents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/out.jsonl");
        let mut sink = FileSink::open(FileConfig { path: path.clone(), max_bytes: None }).unwrap();
        sink.deliver(&[ev(1), ev(2)]).await.unwrap();
        sink.deliver(&[ev(3)]).await.unwrap();
        assert_eq!(ids(&path), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn cuts_a_torn_last_line_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = FileSink::open(FileConfig { path: path.clone(), max_bytes: None }).unwrap();
        sink.deliver(&[ev(1)]).await.unwrap();
        drop(sink);
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"op\":\"c\",\"aft").unwrap();
        let mut sink = FileSink::open(FileConfig { path: path.clone(), max_bytes: None }).unwrap();
        sink.deliver(&[ev(2)]).await.unwrap();
        assert_eq!(ids(&path), vec![1, 2]);
    }

    #[tokio::test]
    async fn a_file_of_one_torn_line_becomes_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, b"{\"partial").unwrap();
        let _sink = FileSink::open(FileConfig { path: path.clone(), max_bytes: None }).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), 0);
    }

    #[tokio::test]
    async fn rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = FileSink::open(FileConfig { path: path.clone(), max_bytes: Some(10) }).unwrap();
        sink.deliver(&[ev(1)]).await.unwrap();
        sink.deliver(&[ev(2)]).await.unwrap();
        sink.deliver(&[ev(3)]).await.unwrap();
        assert_eq!(ids(&rotated_name(&path, 1)), vec![1]);
        assert_eq!(ids(&rotated_name(&path, 2)), vec![2]);
        assert_eq!(ids(&rotated_name(&path, 3)), vec![3]);
        assert_eq!(std::fs::read(&path).unwrap().len(), 0);
    }
}
