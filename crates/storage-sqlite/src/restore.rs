//! Offline restore of the SQLite file from a copy made by [`crate::backup`].
//!
//! Order of the steps, each of which stops the restore on failure with
//! the current file untouched:
//!
//! 1. the copy is checked ([`inspect_copy`]: `PRAGMA integrity_check`, a
//!    schema version not newer than this code's, a complete layout);
//! 2. it is copied with `VACUUM INTO` to a temporary file beside the
//!    store, checked again and fsynced (what is put in place is exactly what
//!    was checked, without any `-wal` the copy may have);
//! 3. [`ensure_not_in_use`] proves that no process has the current file
//!    open: it takes SQLite's exclusive lock on it. In WAL mode every open
//!    connection holds a shared lock on the database file for as long as it
//!    is open (idle or not), so a running DeltaForge (or a `sqlite3` shell)
//!    makes this fail at once;
//! 4. the current file (with its `-wal`, if a crash left one) is renamed to
//!    `{name}.before-restore-{suffix}`, the temporary file is renamed to
//!    the store's name, and the directory is fsynced.
//!
//! Between steps 3 and 4 an engine started at that very moment could open
//! the old file: the restore is for a stopped engine, and step 3 catches
//! the usual mistake of restoring under a running one.
//!
//! This module must never modify the copy it restores from, never delete
//! the current file (it is only renamed), and never restore under a
//! process that holds the file open.

use std::path::{Path, PathBuf};

use deltaforge_storage::{Result, StorageError};
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::backup::{
    exists_error, fsync_dir_of, fsync_file, inspect_copy, io_error, remove_with_companions, temp_beside, vacuum_into,
    CopyInfo,
};
use crate::schema::open_error;

/// What [`restore_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// What the restored store holds.
    pub restored: CopyInfo,
    /// Where the previous store file was kept (`None`: there was none).
    pub kept: Option<PathBuf>,
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Fails when any process (or connection) has the SQLite file at `path`
/// open, by taking SQLite's exclusive lock on it without waiting (see the
/// module docs). A missing file is not in use.
///
/// # Errors
///
/// [`StorageError::Unusable`] saying the file is in use, or that it cannot
/// be opened as a SQLite database.
pub fn ensure_not_in_use(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let location = path.display().to_string();
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| open_error(&location, "open", e))?;
    let locked = (|| {
        conn.busy_timeout(std::time::Duration::ZERO)?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
    })();
    match locked {
        Ok(()) => {
            // Closing the only connection checkpoints a leftover WAL into
            // the file and removes it.
            conn.close().map_err(|(_, e)| open_error(&location, "close", e))?;
            Ok(())
        }
        Err(e) if matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)) => {
            Err(StorageError::Unusable {
                location,
                reason: "it is in use: another process holds it open (a running DeltaForge, or a sqlite3 shell)"
                    .to_owned(),
                fix: "Stop the running DeltaForge (SIGTERM, or stop its service) and close any sqlite3 shell on \
                      the file, then restore again"
                    .to_owned(),
            })
        }
        Err(e) => Err(open_error(&location, "lock", e)),
    }
}

/// Replaces the store at `to` with the copy at `from` (see the module docs),
/// keeping the current file as `{to}.before-restore-{keep_suffix}`. An
/// existing store is replaced only with `force`.
///
/// # Errors
///
/// [`StorageError::Unusable`] when the copy fails a check (damaged, newer
/// schema version, not a DeltaForge store) or the current file is in use;
/// an `AlreadyExists` [`StorageError::Backend`] when `to` exists without
/// `force`; [`StorageError::Backend`] for I/O errors.
pub fn restore_file(from: &Path, to: &Path, keep_suffix: &str, force: bool) -> Result<RestoreReport> {
    inspect_copy(from)?;
    let exists = to.symlink_metadata().is_ok();
    if exists && !force {
        return Err(exists_error(to, "--force (the current file is kept as <name>.before-restore-<time>)"));
    }
    let kept = with_suffix(to, &format!(".before-restore-{keep_suffix}"));
    if exists && kept.symlink_metadata().is_ok() {
        return Err(exists_error(&kept, "another moment"));
    }
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io_error(format!("create directory {}", dir.display()), e))?;
    }
    let tmp = temp_beside(to, "restore");
    remove_with_companions(&tmp);
    let result = (|| {
        let restored = vacuum_into(from, &tmp)?;
        fsync_file(&tmp)?;
        ensure_not_in_use(to)?;
        let kept = if exists {
            std::fs::rename(to, &kept).map_err(|e| io_error(format!("rename {} aside", to.display()), e))?;
            let wal = with_suffix(to, "-wal");
            if wal.exists() {
                std::fs::rename(&wal, with_suffix(&kept, "-wal"))
                    .map_err(|e| io_error(format!("rename {} aside", wal.display()), e))?;
            }
            let _ = std::fs::remove_file(with_suffix(to, "-shm"));
            Some(kept)
        } else {
            None
        };
        std::fs::rename(&tmp, to).map_err(|e| io_error(format!("rename the restored copy to {}", to.display()), e))?;
        fsync_dir_of(to)?;
        Ok(RestoreReport { restored, kept })
    })();
    remove_with_companions(&tmp);
    result
}
