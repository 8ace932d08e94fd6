//! Online backups of the SQLite file: a consistent copy taken while the
//! engine keeps writing, checked and made durable before it gets its name.
//!
//! The copy is made with `VACUUM INTO` on a connection of its own: one read
//! transaction, so the copy is the store as of one instant (WAL readers never
//! block the engine's writer, nor does the writer block them), compacted, and
//! without the source's `-wal`. The copy is written to a temporary file in
//! the destination's directory, passes `PRAGMA integrity_check` and the
//! layout checks of [`crate::schema`], is fsynced, and only then is linked
//! (or, when overwriting is allowed, renamed) to its name, and the directory
//! fsynced. So a file at the destination path is always a complete, checked
//! copy.
//!
//! This module owns the copy and the checks of a copy ([`inspect_copy`]); it
//! must never write to the source store, never leave a temporary file
//! behind on failure, and never overwrite an existing file unless asked.

use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use deltaforge_storage::{BackupSummary, Result, StorageError};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::schema::{inspect, open_error, BUSY_TIMEOUT, SCHEMA_VERSION};

/// What [`inspect_copy`] found in a copy of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInfo {
    /// Size of the file in bytes.
    pub bytes: u64,
    /// Its `meta.schema_version`.
    pub schema_version: String,
    /// Its checkpoints: (source id, stored JSON), ordered by source id.
    pub checkpoints: Vec<(String, String)>,
}

/// An I/O error of `op` as a [`StorageError`].
pub(crate) fn io_error(op: impl Into<String>, err: std::io::Error) -> StorageError {
    StorageError::backend(op, err)
}

/// A temporary path next to `dest` (same directory, so that the final
/// rename or link stays on one file system).
pub(crate) fn temp_beside(dest: &Path, what: &str) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "deltaforge.db".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{what}-{}-{nanos}.tmp", std::process::id()))
}

/// fsyncs a file's data and metadata.
pub(crate) fn fsync_file(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| io_error(format!("fsync {}", path.display()), e))
}

/// fsyncs the directory holding `path`, so that a rename or link in it is durable.
pub(crate) fn fsync_dir_of(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error(format!("fsync directory {}", dir.display()), e))
}

/// Removes `path` and its `-wal`/`-shm`/`-journal` companions, ignoring absent ones.
pub(crate) fn remove_with_companions(path: &Path) {
    let _ = std::fs::remove_file(path);
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// The refusal to replace an existing file.
pub(crate) fn exists_error(path: &Path, flag: &str) -> StorageError {
    io_error(
        format!("writing {}", path.display()),
        std::io::Error::new(
            ErrorKind::AlreadyExists,
            format!("{} already exists; choose another name or pass {flag} to replace it", path.display()),
        ),
    )
}

/// Reads `meta.schema_version` of an open store and refuses a version newer
/// than this code's, with a message naming both.
pub(crate) fn check_schema_version(conn: &Connection, location: &str) -> Result<()> {
    let has_meta: bool = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'", [], |r| r.get(0))
        .map_err(|e| open_error(location, "inspect", e))?;
    if !has_meta {
        return Ok(()); // `inspect` names what is wrong with such a file
    }
    let version: Option<String> = conn
        .query_row("SELECT CAST(value AS TEXT) FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
        .optional()
        .map_err(|e| open_error(location, "inspect", e))?
        .flatten();
    let ours: u64 = SCHEMA_VERSION.parse().expect("a number");
    match version.as_deref().map(str::parse::<u64>) {
        Some(Ok(theirs)) if theirs > ours => Err(StorageError::Unusable {
            location: location.to_owned(),
            reason: format!(
                "it was written by a newer DeltaForge (storage schema version {theirs}; this binary knows up to \
                 version {ours})"
            ),
            fix: "Restore it with the DeltaForge release that made it (or a later one), or pick an older backup"
                .to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Checks a copy of the store at `path` without modifying it: `PRAGMA
/// integrity_check` must answer `ok`, its schema version must not be newer
/// than this code's, and its layout must be a complete DeltaForge store.
///
/// # Errors
///
/// [`StorageError::Unusable`] naming the file and what is wrong;
/// [`StorageError::Backend`] for I/O errors.
pub fn inspect_copy(path: &Path) -> Result<CopyInfo> {
    let location = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| io_error(format!("reading {location}"), e))?;
    if !meta.is_file() {
        return Err(StorageError::Unusable {
            location,
            reason: "it is not a regular file".to_owned(),
            fix: "Name a backup file written by `deltaforge backup`".to_owned(),
        });
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| open_error(&location, "open", e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| open_error(&location, "configure", e))?;
    check_schema_version(&conn, &location)?;
    let problems: Vec<String> = (|| {
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
    })()
    .map_err(|e| open_error(&location, "integrity_check", e))?;
    if problems != ["ok"] {
        let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
        return Err(StorageError::Unusable {
            location,
            reason: format!("PRAGMA integrity_check did not answer ok: {}", shown.join("; ")),
            fix: "Pick another backup; this copy is damaged".to_owned(),
        });
    }
    if matches!(inspect(&conn, &location)?, crate::schema::Layout::Empty) {
        return Err(StorageError::Unusable {
            location,
            reason: "it is an empty database, not a DeltaForge store".to_owned(),
            fix: "Name a backup file written by `deltaforge backup`".to_owned(),
        });
    }
    let checkpoints = (|| {
        let mut stmt = conn.prepare("SELECT key, value FROM kv WHERE namespace = 'checkpoints' ORDER BY key")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
    })()
    .map_err(|e| open_error(&location, "read checkpoints of", e))?;
    Ok(CopyInfo { bytes: meta.len(), schema_version: SCHEMA_VERSION.to_owned(), checkpoints })
}

/// Copies the store at `src` (which may be in use by a running engine) into
/// the temporary file `tmp` with `VACUUM INTO`, then checks it.
pub(crate) fn vacuum_into(src: &Path, tmp: &Path) -> Result<CopyInfo> {
    let location = src.display().to_string();
    if !src.is_file() {
        return Err(io_error(
            format!("reading {location}"),
            std::io::Error::new(ErrorKind::NotFound, format!("no storage file at {location}")),
        ));
    }
    // Read-write without CREATE: a WAL reader may need to write the -shm
    // index; VACUUM INTO itself only reads the source.
    let conn = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| open_error(&location, "open", e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| open_error(&location, "configure", e))?;
    check_schema_version(&conn, &location)?;
    inspect(&conn, &location)?;
    let tmp_text = tmp.to_str().ok_or_else(|| {
        io_error("backup", std::io::Error::new(ErrorKind::InvalidInput, format!("{} is not UTF-8", tmp.display())))
    })?;
    conn.execute("VACUUM INTO ?1", [tmp_text]).map_err(|e| open_error(&location, "VACUUM INTO a copy of", e))?;
    drop(conn);
    inspect_copy(tmp)
}

/// Writes a consistent, checked copy of the store at `src` to `dest` (see
/// the module docs). `dest` must not exist unless `overwrite`.
///
/// # Errors
///
/// An `AlreadyExists` [`StorageError::Backend`] when `dest` exists and
/// `overwrite` is false; [`StorageError::Unusable`] when the source or the
/// copy fails a check; [`StorageError::Backend`] for other I/O errors.
pub fn backup_file(src: &Path, dest: &Path, overwrite: bool) -> Result<BackupSummary> {
    if !overwrite && dest.symlink_metadata().is_ok() {
        return Err(exists_error(dest, "--force"));
    }
    let tmp = temp_beside(dest, "backup");
    remove_with_companions(&tmp);
    let result = (|| {
        let info = vacuum_into(src, &tmp)?;
        fsync_file(&tmp)?;
        if overwrite {
            std::fs::rename(&tmp, dest).map_err(|e| io_error(format!("rename to {}", dest.display()), e))?;
        } else {
            // A hard link never replaces an existing file: no race with a
            // file created since the check above.
            match std::fs::hard_link(&tmp, dest) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(exists_error(dest, "--force")),
                Err(e) => return Err(io_error(format!("link {}", dest.display()), e)),
            }
        }
        fsync_dir_of(dest)?;
        Ok(info)
    })();
    remove_with_companions(&tmp);
    let info = result?;
    Ok(BackupSummary {
        path: dest.to_path_buf(),
        bytes: info.bytes,
        schema_version: info.schema_version,
        checkpoints: info.checkpoints.len() as u64,
    })
}
