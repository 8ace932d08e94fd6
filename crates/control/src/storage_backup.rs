//! `POST /storage/backup`: an online copy of the storage, written under the
//! storage's data directory.
//!
//! This module owns the request shape (`{"to": "name.db"}`) and the rule
//! that the destination resolves under the backend's
//! [`data_dir`](deltaforge_storage::StorageBackend::data_dir): no `..`
//! component, no absolute path elsewhere, no directory symlink leading out,
//! no existing file (not even a symlink) at the name. The copy itself is the
//! backend's [`backup_to`](deltaforge_storage::StorageBackend::backup_to):
//! this module must never know which database the backend uses, and never
//! write outside the data directory.

use std::path::{Component, Path, PathBuf};

use std::sync::Arc;

use axum::http::StatusCode;
use deltaforge_storage::{StorageBackend, StorageError};
use serde::Deserialize;
use serde_json::{json, Value};

/// A refusal as the API answers it: status, message, detail.
pub(crate) type Failure = (StatusCode, String, Value);

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupRequest {
    /// File name (or relative path) under the data directory.
    to: String,
}

/// Why a destination was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not acceptable as a destination (400).
    Invalid(String),
    /// A file already exists there (409).
    Exists(PathBuf),
}

/// Resolves `to` under `data_dir` (see the module docs); the returned path
/// has a canonical directory and does not exist yet.
pub(crate) fn resolve_under(data_dir: &Path, to: &str) -> Result<PathBuf, Refused> {
    let invalid = |m: String| Err(Refused::Invalid(m));
    if to.trim().is_empty() || to.contains('\0') {
        return invalid("`to` must name a file, e.g. \"backup-2026-01-01.db\"".into());
    }
    let given = Path::new(to);
    if given.components().any(|c| c == Component::ParentDir) {
        return invalid(format!("`to` ({to:?}) must not contain `..`: backups are written under the data directory"));
    }
    let Some(name) = given.file_name() else {
        return invalid(format!("`to` ({to:?}) must end with a file name"));
    };
    let dir = data_dir
        .canonicalize()
        .map_err(|e| Refused::Invalid(format!("the data directory {} is not readable: {e}", data_dir.display())))?;
    let candidate = if given.is_absolute() { given.to_path_buf() } else { dir.join(given) };
    let parent = candidate.parent().unwrap_or(&dir);
    let parent = parent.canonicalize().map_err(|_| {
        Refused::Invalid(format!(
            "the directory of `to` ({}) does not exist; write to the data directory {} or an existing directory \
             in it",
            parent.display(),
            dir.display()
        ))
    })?;
    if !parent.starts_with(&dir) {
        return invalid(format!(
            "`to` ({to:?}) resolves to {}, outside the data directory {}; give a file name under it",
            parent.join(name).display(),
            dir.display()
        ));
    }
    let dest = parent.join(name);
    if dest.symlink_metadata().is_ok() {
        return Err(Refused::Exists(dest));
    }
    Ok(dest)
}

/// `POST /storage/backup` with body `text`: the answer's JSON, or the refusal.
pub(crate) async fn backup(storage: Arc<dyn StorageBackend>, text: &str) -> Result<Value, Failure> {
    let req: BackupRequest = serde_json::from_str(text).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("invalid backup request: {e}"),
            json!({ "field": "to", "fix": "send {\"to\": \"name.db\"}" }),
        )
    })?;
    let Some(data_dir) = storage.data_dir() else {
        return Err(unsupported(storage.kind()));
    };
    let dest = match resolve_under(&data_dir, &req.to) {
        Ok(dest) => dest,
        Err(Refused::Invalid(m)) => {
            return Err((
                StatusCode::BAD_REQUEST,
                m,
                json!({ "field": "to", "data_dir": data_dir.display().to_string() }),
            ))
        }
        Err(Refused::Exists(p)) => return Err(exists(&p)),
    };
    match storage.backup_to(&dest).await {
        Ok(s) => Ok(json!({
            "path": s.path.display().to_string(),
            "bytes": s.bytes,
            "schema_version": s.schema_version,
            "checkpoints": s.checkpoints,
            "integrity_check": "ok",
        })),
        Err(StorageError::Unsupported { backend, .. }) => Err(unsupported(backend)),
        Err(e) if e.to_string().contains("already exists") => Err(exists(&dest)),
        Err(e) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            "backup failed".to_owned(),
            json!({ "reason": e.to_string(), "fix": "check the storage and the free space in the data directory" }),
        )),
    }
}

fn exists(path: &Path) -> Failure {
    (
        StatusCode::CONFLICT,
        format!("{} already exists; backups never replace a file", path.display()),
        json!({ "field": "to", "fix": "choose another name" }),
    )
}

fn unsupported(kind: &str) -> Failure {
    (
        StatusCode::CONFLICT,
        format!("the {kind} storage backend does not support online backups"),
        json!({ "fix": "back up the postgres backend with pg_dump --schema=deltaforge; the memory backend has nothing to keep" }),
    )
}

#[cfg(test)]
mod tests {
    use super::{resolve_under, Refused};

    #[test]
    fn destinations_resolve_under_the_data_dir_only() {
        let root = tempfile_dir();
        let data = root.join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        let data_c = data.canonicalize().unwrap();
        assert_eq!(resolve_under(&data, "b.db").unwrap(), data_c.join("b.db"));
        assert_eq!(resolve_under(&data, "sub/b.db").unwrap(), data_c.join("sub/b.db"));
        assert_eq!(resolve_under(&data, data_c.join("c.db").to_str().unwrap()).unwrap(), data_c.join("c.db"));
        for bad in ["../x", "sub/../../x", "", "/tmp/x.db", "missing/x.db"] {
            let got = resolve_under(&data, bad);
            assert!(matches!(got, Err(Refused::Invalid(_))), "{bad:?}: {got:?}");
        }
        // A directory symlink leading out is refused.
        std::os::unix::fs::symlink(&root, data.join("out")).unwrap();
        assert!(matches!(resolve_under(&data, "out/x.db"), Err(Refused::Invalid(m)) if m.contains("outside")));
        // An existing file, or a symlink at the name, is a conflict.
        std::fs::write(data.join("e.db"), "x").unwrap();
        assert_eq!(resolve_under(&data, "e.db"), Err(Refused::Exists(data_c.join("e.db"))));
        std::os::unix::fs::symlink(root.join("elsewhere.db"), data.join("l.db")).unwrap();
        assert_eq!(resolve_under(&data, "l.db"), Err(Refused::Exists(data_c.join("l.db"))));
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("df-backup-resolve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
