//! `type: file` — appends events as JSON Lines to a file and acknowledges a
//! batch only after `fsync` returned.
//!
//! On open, a last line without its newline (a write torn by a crash) is cut
//! off: it was never acknowledged, so the replay after the checkpoint
//! writes it again. With `max_bytes`, the file is rotated when it grows past
//! that size: `out.jsonl` becomes `out.jsonl.1` (then `.2`, …; the highest
//! number is the newest rotated file) and a new `out.jsonl` is started.
//!
//! Durability of names: after a file (or a directory on its path) is
//! created, and after a rotation renamed the old file and created the new
//! one, the parent directory is fsynced before the batch is acknowledged,
//! so that a crash cannot lose the directory entry of a file whose data was
//! synced.
//!
//! Writes run on a blocking thread that holds the sink's file lock for the
//! whole write, sync and rotation. When the coordinator's delivery timeout
//! gives up on a write, that thread still finishes it, and the retry's
//! write waits for the lock: a retry never interleaves with, or cuts off,
//! a write still under way (it may append the batch a second time, within
//! the at-least-once window).
//!
//! This module must never acknowledge a batch before its bytes and, for a
//! new file, its directory entry are synced.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// The file-system calls whose order makes a write durable; the real ones
/// in production, recording or slow ones in the tests.
pub(crate) trait FileSystem: Send + Sync {
    /// Makes a directory's entries durable (fsync of the directory).
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()>;
    /// Appends `data` to `file` (not yet synced).
    fn write(&self, file: &mut File, data: &[u8]) -> std::io::Result<()> {
        file.write_all(data)
    }
}

/// The operating system's file system.
struct RealFs;

impl FileSystem for RealFs {
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// What the blocking writer owns, behind the sink's lock.
struct FileState {
    path: PathBuf,
    max_bytes: Option<u64>,
    file: Option<File>,
    size: u64,
    fs: Arc<dyn FileSystem>,
}

/// A JSON Lines file sink.
pub struct FileSink {
    path: PathBuf,
    /// Held by the blocking thread for a whole write (see the module docs).
    state: Arc<Mutex<FileState>>,
    buf: Vec<u8>,
}

impl FileSink {
    /// Opens (creating if needed) the file, repairing a torn last line.
    pub fn open(cfg: FileConfig) -> Result<Self, BuildError> {
        Self::open_with(cfg, Arc::new(RealFs))
    }

    pub(crate) fn open_with(cfg: FileConfig, fs: Arc<dyn FileSystem>) -> Result<Self, BuildError> {
        let (file, size) = open_repaired(&cfg.path, &*fs).map_err(|e| BuildError::other(e.to_string()))?;
        let state = FileState { path: cfg.path.clone(), max_bytes: cfg.max_bytes, file: Some(file), size, fs };
        Ok(FileSink { path: cfg.path, state: Arc::new(Mutex::new(state)), buf: Vec::new() })
    }
}

impl FileState {
    /// Appends and syncs one batch, then rotates if the file is full.
    fn write_batch(&mut self, data: &[u8]) -> Result<(), SinkError> {
        let mut file = match self.file.take() {
            Some(f) => f,
            None => {
                let (file, size) = open_repaired(&self.path, &*self.fs)?;
                self.size = size;
                file
            }
        };
        let result = self.fs.write(&mut file, data).and_then(|_| file.sync_data());
        if let Err(e) = result {
            // Reopen on the next attempt, which also cuts a partial write.
            return Err(SinkError::Retryable(format!("writing {}: {e}", self.path.display())));
        }
        self.file = Some(file);
        self.size += data.len() as u64;
        if self.max_bytes.is_some_and(|m| self.size >= m) {
            self.rotate()?;
        }
        Ok(())
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
        // Opening the new file syncs the directory: the rename and the new
        // name become durable together.
        let (file, size) = open_repaired(&self.path, &*self.fs)?;
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

/// The directory of `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Opens `path` for appending, creating it and its directories (each new
/// name made durable by syncing its directory), and cuts a torn last line.
fn open_repaired(path: &Path, fs: &dyn FileSystem) -> Result<(File, u64), SinkError> {
    let fail = |what: &str, e: std::io::Error| SinkError::Retryable(format!("{what} {}: {e}", path.display()));
    let dir = parent_dir(path);
    // The directories that do not exist yet, innermost first.
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).collect();
    if !missing.is_empty() {
        std::fs::create_dir_all(dir).map_err(|e| fail("creating the directory of", e))?;
        for d in missing.iter().rev() {
            fs.sync_dir(parent_dir(d)).map_err(|e| fail("syncing the directory above the directory of", e))?;
        }
    }
    let created = !path.exists();
    let mut file =
        OpenOptions::new().read(true).append(true).create(true).open(path).map_err(|e| fail("opening", e))?;
    if created {
        fs.sync_dir(dir).map_err(|e| fail("syncing the directory of", e))?;
    }
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

/// Locks the state; a writer thread that panicked leaves it usable (the
/// file is reopened and repaired on the next write).
fn lock(state: &Mutex<FileState>) -> std::sync::MutexGuard<'_, FileState> {
    state.lock().unwrap_or_else(|poisoned| {
        let mut st = poisoned.into_inner();
        st.file = None;
        st
    })
}

#[async_trait]
impl Sink for FileSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        crate::encode_lines(events, &mut buf);
        let state = self.state.clone();
        let (buf, result) = tokio::task::spawn_blocking(move || {
            // Held until this write, its sync and any rotation are done,
            // even if the delivery that started it timed out meanwhile.
            let r = lock(&state).write_batch(&buf);
            (buf, r)
        })
        .await
        .map_err(|e| SinkError::Retryable(format!("file writer task for {}: {e}", self.path.display())))?;
        self.buf = buf;
        result
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        let state = self.state.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || match &lock(&state).file {
            Some(f) => f.sync_all().map_err(|e| SinkError::Retryable(format!("syncing {}: {e}", path.display()))),
            None => Ok(()),
        })
        .await
        .map_err(|e| SinkError::Retryable(format!("file writer task: {e}")))?
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

    /// Records each directory sync with the names the directory held then.
    #[derive(Default)]
    struct RecordingFs {
        syncs: Mutex<Vec<(PathBuf, Vec<String>)>>,
    }

    impl FileSystem for RecordingFs {
        fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
            let mut names: Vec<String> =
                std::fs::read_dir(dir)?.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            self.syncs.lock().unwrap().push((dir.to_path_buf(), names));
            RealFs.sync_dir(dir)
        }
    }

    /// What this proves: the sink asks for a sync of the right directory
    /// after the new name exists there (creation, rotation), before the
    /// call returns. It cannot prove the kernel's persistence itself.
    #[tokio::test]
    async fn new_files_directories_and_rotations_sync_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/out.jsonl");
        let fs = Arc::new(RecordingFs::default());
        let mut sink = FileSink::open_with(FileConfig { path: path.clone(), max_bytes: Some(10) }, fs.clone()).unwrap();
        let syncs = std::mem::take(&mut *fs.syncs.lock().unwrap());
        let (a, b) = (dir.path().join("a"), dir.path().join("a/b"));
        assert_eq!(
            syncs,
            vec![
                (dir.path().to_path_buf(), vec!["a".to_string()]),
                (a.clone(), vec!["b".to_string()]),
                (b.clone(), vec!["out.jsonl".to_string()]),
            ]
        );
        // Rotation: one sync after the rename and the new file, naming both.
        sink.deliver(&[ev(1)]).await.unwrap();
        let syncs = std::mem::take(&mut *fs.syncs.lock().unwrap());
        assert_eq!(syncs, vec![(b.clone(), vec!["out.jsonl".to_string(), "out.jsonl.1".to_string()])]);
        // Reopening an existing file needs no directory sync.
        drop(sink);
        let _sink = FileSink::open_with(FileConfig { path, max_bytes: None }, fs.clone()).unwrap();
        assert!(fs.syncs.lock().unwrap().is_empty());
    }

    /// Writes the first call's data in two halves with a pause between.
    #[derive(Default)]
    struct SlowFirstWrite {
        done_one: std::sync::atomic::AtomicBool,
    }

    impl FileSystem for SlowFirstWrite {
        fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
            RealFs.sync_dir(dir)
        }
        fn write(&self, file: &mut File, data: &[u8]) -> std::io::Result<()> {
            if self.done_one.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return file.write_all(data);
            }
            let (first, rest) = data.split_at(data.len() / 2);
            file.write_all(first)?;
            std::thread::sleep(std::time::Duration::from_millis(400));
            file.write_all(rest)
        }
    }

    #[tokio::test]
    async fn a_retry_waits_for_the_timed_out_write_instead_of_interleaving() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let fs = Arc::new(SlowFirstWrite::default());
        let mut sink = FileSink::open_with(FileConfig { path: path.clone(), max_bytes: None }, fs).unwrap();
        let first: Vec<Event> = (1..=50).map(ev).collect();
        // The coordinator's delivery timeout drops the future mid-write.
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(50), sink.deliver(&first)).await;
        assert!(timed_out.is_err(), "the first write must still be under way");
        // The retry (here with other events, to tell them apart).
        let retry: Vec<Event> = (51..=60).map(ev).collect();
        sink.deliver(&retry).await.unwrap();
        // Every line whole, the timed-out batch complete and before the retry.
        assert_eq!(ids(&path), (1..=60).collect::<Vec<_>>());
    }
}
