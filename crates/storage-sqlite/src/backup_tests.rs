//! Tests of online backups and offline restores: a copy of a store under
//! concurrent writes is one consistent instant and passes
//! `integrity_check`; existing files are never replaced unasked; a restore
//! refuses a damaged copy, a copy of a newer schema version and a store that
//! is open elsewhere, and keeps the file it replaces.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deltaforge_storage::{StorageBackend, StorageError};
use rusqlite::Connection;

use crate::{backup_file, inspect_copy, restore_file, SqliteBackend};

/// Reads the checkpoint counter and the highest log record of a store file.
fn counters(path: &Path) -> (u64, u64) {
    let conn = Connection::open(path).unwrap();
    let kv: String = conn
        .query_row("SELECT value FROM kv WHERE namespace = 'checkpoints' AND key = 'src'", [], |r| r.get(0))
        .unwrap();
    let log: String = conn
        .query_row("SELECT value FROM log WHERE namespace = 'schemas' ORDER BY seq DESC LIMIT 1", [], |r| r.get(0))
        .unwrap();
    (kv.parse().unwrap(), log.parse().unwrap())
}

/// A store at `dir/deltaforge.db` with checkpoint `src` = 1 and a log record "1".
async fn seeded(dir: &Path) -> SqliteBackend {
    let store = SqliteBackend::open(dir.join("deltaforge.db")).await.unwrap();
    store.kv_put("checkpoints", "src", "1", None).await.unwrap();
    store.log_append("schemas", "t/db/table", "1").await.unwrap();
    store
}

fn unusable_reason(err: StorageError) -> String {
    match err {
        StorageError::Unusable { reason, .. } => reason,
        other => panic!("expected Unusable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_under_concurrent_writes_are_consistent_and_pass_integrity_check() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(seeded(dir.path()).await);
    // Each round writes the checkpoint n, then the log record n, in two
    // transactions: a consistent copy has log == kv or log == kv - 1.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 1u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                store.kv_put("checkpoints", "src", &n.to_string(), None).await.unwrap();
                store.log_append("schemas", "t/db/table", &n.to_string()).await.unwrap();
                store.queue_push("dlq", "p", &"x".repeat(512), 1_000_000).await.unwrap();
            }
            n
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut seen = Vec::new();
    for i in 0..6 {
        let dest = dir.path().join(format!("copy-{i}.db"));
        let summary = if i % 2 == 0 {
            store.backup_to(&dest).await.unwrap()
        } else {
            let (src, d) = (store.path().to_path_buf(), dest.clone());
            tokio::task::spawn_blocking(move || backup_file(&src, &d, false)).await.unwrap().unwrap()
        };
        assert_eq!(summary.path, dest);
        assert_eq!(summary.schema_version, "1");
        assert_eq!(summary.checkpoints, 1);
        assert_eq!(summary.bytes, std::fs::metadata(&dest).unwrap().len());
        let info = inspect_copy(&dest).unwrap();
        assert_eq!(info.checkpoints.len(), 1);
        let (kv, log) = counters(&dest);
        assert!(log == kv || log + 1 == kv, "copy {i} is torn: checkpoint {kv}, log {log}");
        seen.push(kv);
        // The copy opens as a store, and no temporary file is left behind.
        drop(SqliteBackend::open(&dest).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let last = writer.await.unwrap();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "copies went backwards: {seen:?}");
    assert!(*seen.last().unwrap() > 1 && *seen.last().unwrap() <= last, "the writer was not copied live: {seen:?}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[tokio::test]
async fn a_backup_never_replaces_an_existing_file_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path()).await;
    let dest = dir.path().join("copy.db");
    std::fs::write(&dest, "keep me").unwrap();
    let err = store.backup_to(&dest).await.unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    let err = backup_file(store.path(), &dest, false).unwrap_err().to_string();
    assert!(err.contains("already exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "keep me");
    backup_file(store.path(), &dest, true).unwrap();
    assert_eq!(counters(&dest), (1, 1));
}

#[tokio::test]
async fn restore_puts_the_copy_in_place_and_keeps_the_current_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path()).await;
    let copy = dir.path().join("copy.db");
    store.backup_to(&copy).await.unwrap();
    store.kv_put("checkpoints", "src", "7", None).await.unwrap();
    let live = store.path().to_path_buf();

    // Open elsewhere (the running engine): refused, nothing changed.
    let reason = unusable_reason(restore_file(&copy, &live, "t1", true).unwrap_err());
    assert!(reason.contains("in use"), "{reason}");
    assert!(!dir.path().join("deltaforge.db.before-restore-t1").exists());
    drop(store);

    // Existing store without force: refused.
    let err = restore_file(&copy, &live, "t1", false).unwrap_err().to_string();
    assert!(err.contains("already exists") && err.contains("--force"), "{err}");

    let report = restore_file(&copy, &live, "t1", true).unwrap();
    assert_eq!(report.restored.checkpoints, vec![("src".to_owned(), "1".to_owned())]);
    let kept = dir.path().join("deltaforge.db.before-restore-t1");
    assert_eq!(report.kept.as_deref(), Some(kept.as_path()));
    assert_eq!(counters(&kept).0, 7, "the replaced store is kept as it was");
    let reopened = SqliteBackend::open(&live).await.unwrap();
    assert_eq!(reopened.kv_get("checkpoints", "src").await.unwrap().as_deref(), Some("1"));
    // The copy it came from is untouched and still valid.
    inspect_copy(&copy).unwrap();
}

#[tokio::test]
async fn restore_refuses_a_copy_of_a_newer_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path()).await;
    let copy = dir.path().join("copy.db");
    store.backup_to(&copy).await.unwrap();
    drop(store);
    Connection::open(&copy).unwrap().execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'", []).unwrap();
    let live = dir.path().join("deltaforge.db");
    let reason = unusable_reason(restore_file(&copy, &live, "t2", true).unwrap_err());
    assert!(reason.contains("newer DeltaForge") && reason.contains("version 2"), "{reason}");
    assert_eq!(counters(&live), (1, 1), "the current store is untouched");
    assert!(!dir.path().join("deltaforge.db.before-restore-t2").exists());
}

#[tokio::test]
async fn restore_refuses_a_corrupt_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path()).await;
    for i in 0..200 {
        store.queue_push("dlq", "p", &format!("{i}{}", "y".repeat(1000)), 1000).await.unwrap();
    }
    let copy = dir.path().join("copy.db");
    store.backup_to(&copy).await.unwrap();
    drop(store);
    let live = dir.path().join("deltaforge.db");

    // Pages overwritten in the middle of the file.
    let mut bytes = std::fs::read(&copy).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..middle + 8192].fill(0xA5);
    std::fs::write(&copy, &bytes).unwrap();
    let reason = unusable_reason(restore_file(&copy, &live, "t3", true).unwrap_err());
    assert!(reason.contains("integrity_check") || reason.contains("corrupt"), "{reason}");

    // Not a database at all.
    std::fs::write(&copy, "this is not SQLite").unwrap();
    let reason = unusable_reason(restore_file(&copy, &live, "t3", true).unwrap_err());
    assert!(reason.contains("not a SQLite database"), "{reason}");

    assert_eq!(counters(&live), (1, 1), "the current store is untouched");
    assert!(!dir.path().join("deltaforge.db.before-restore-t3").exists());
}

#[tokio::test]
async fn data_dir_is_the_directory_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path()).await;
    assert_eq!(store.data_dir().unwrap(), dir.path().canonicalize().unwrap());
}
