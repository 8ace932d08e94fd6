//! Committing finished files to their target, durably and atomically.
//!
//! - Local directory: the file is written under a temporary name in its
//!   final directory, fsynced, renamed into place, and the directory is
//!   fsynced, so a file is either absent or complete after a crash.
//! - S3: the `object_store` crate (`AmazonS3`): a single PUT for small
//!   files, a multipart upload (8 MiB parts, completed or aborted) for
//!   larger ones; an object is visible only once complete. Its own retries
//!   are off: the coordinator retries a failed delivery.
//!
//! Crate choice: `object_store` (Apache Arrow project) with only the `aws`
//! feature: S3 and S3-compatible servers, the AWS credential chain, TLS
//! through rustls. This module never logs or returns credentials.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deltaforge_core::{BuildError, SinkError};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use tempfile::NamedTempFile;

use crate::config::{ObjectStoreConfig, Target};

/// Part size of multipart uploads (S3 needs ≥ 5 MiB except for the last).
const PART_BYTES: usize = 8 * 1024 * 1024;

/// Where committed files go.
pub enum Store {
    /// A local directory.
    Local {
        /// The directory of the `file://` URL.
        root: PathBuf,
    },
    /// An S3 bucket.
    S3 {
        /// The client (connects lazily, at the first request).
        store: Arc<AmazonS3>,
        /// Key prefix under the bucket, possibly empty.
        prefix: String,
        /// Where files are written before upload.
        spill: Option<PathBuf>,
    },
}

impl Store {
    /// The store of a config; builds the S3 client without connecting.
    pub fn new(cfg: &ObjectStoreConfig) -> Result<Self, BuildError> {
        match cfg.target()? {
            Target::Local(root) => Ok(Store::Local { root }),
            Target::S3 { bucket, prefix } => {
                let s3 = &cfg.s3;
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_virtual_hosted_style_request(!s3.path_style)
                    .with_allow_http(s3.allow_http)
                    .with_retry(RetryConfig { max_retries: 0, ..RetryConfig::default() })
                    .with_client_options(
                        ClientOptions::new()
                            .with_allow_http(s3.allow_http)
                            .with_connect_timeout(Duration::from_secs(5))
                            .with_timeout(Duration::from_secs(60)),
                    );
                if let Some(e) = &s3.endpoint {
                    b = b.with_endpoint(e);
                }
                match &s3.region {
                    Some(r) => b = b.with_region(r),
                    None if std::env::var_os("AWS_REGION").is_none()
                        && std::env::var_os("AWS_DEFAULT_REGION").is_none() =>
                    {
                        b = b.with_region("us-east-1")
                    }
                    None => {}
                }
                if let (Some(k), Some(s)) = (&s3.access_key_id, &s3.secret_access_key) {
                    b = b.with_access_key_id(k).with_secret_access_key(s);
                }
                if let Some(t) = &s3.session_token {
                    b = b.with_token(t);
                }
                // The builder's message names settings, never their values.
                let store = b.build().map_err(|e| BuildError::other(format!("S3 client for bucket {bucket}: {e}")))?;
                Ok(Store::S3 { store: Arc::new(store), prefix, spill: cfg.spill_dir.as_ref().map(PathBuf::from) })
            }
        }
    }

    /// A new temporary file for a file of directory `dir`: beside its final
    /// place for a local target (the rename stays on one file system), in
    /// the spill directory for S3.
    pub fn temp_file(&self, dir: &str) -> Result<NamedTempFile, SinkError> {
        let at = match self {
            Store::Local { root } => root.join(dir),
            Store::S3 { spill: Some(s), .. } => s.clone(),
            Store::S3 { spill: None, .. } => std::env::temp_dir(),
        };
        std::fs::create_dir_all(&at).map_err(|e| retryable(format!("creating directory {}", at.display()), e))?;
        tempfile::Builder::new()
            .prefix(".deltaforge-")
            .suffix(".tmp")
            .tempfile_in(&at)
            .map_err(|e| retryable(format!("creating a temporary file in {}", at.display()), e))
    }

    /// Commits a finished file as `dir/name`: durable and complete when
    /// this returns `Ok`. May be called again after a failure.
    pub async fn commit(&self, dir: &str, name: &str, file: &NamedTempFile) -> Result<(), SinkError> {
        match self {
            Store::Local { root } => {
                let (from, dir_path) = (file.path().to_path_buf(), root.join(dir));
                let to = dir_path.join(name);
                run_blocking(move || {
                    std::fs::rename(&from, &to).map_err(|e| retryable(format!("renaming into {}", to.display()), e))?;
                    sync_dir(&dir_path)
                })
                .await
            }
            Store::S3 { store, prefix, .. } => {
                let key = object_path(prefix, &join(dir, name));
                let path = file.path().to_path_buf();
                upload(store, &key, &path).await
            }
        }
    }

    /// Writes a small object (a manifest) atomically and durably.
    pub async fn put_small(&self, key: &str, body: Vec<u8>) -> Result<(), SinkError> {
        match self {
            Store::Local { root } => {
                let to = root.join(key);
                run_blocking(move || {
                    let dir = to.parent().map(Path::to_path_buf).unwrap_or_default();
                    std::fs::create_dir_all(&dir).map_err(|e| retryable(format!("creating {}", dir.display()), e))?;
                    let mut tmp = tempfile::Builder::new()
                        .prefix(".deltaforge-")
                        .tempfile_in(&dir)
                        .map_err(|e| retryable(format!("creating a file in {}", dir.display()), e))?;
                    std::io::Write::write_all(&mut tmp, &body)
                        .map_err(|e| retryable(format!("writing {}", to.display()), e))?;
                    tmp.as_file().sync_all().map_err(|e| retryable(format!("fsync of {}", to.display()), e))?;
                    tmp.persist(&to).map_err(|e| retryable(format!("renaming into {}", to.display()), e.error))?;
                    sync_dir(&dir)
                })
                .await
            }
            Store::S3 { store, prefix, .. } => {
                let key = object_path(prefix, key);
                store.put(&key, PutPayload::from(body)).await.map(|_| ()).map_err(|e| s3_error("writing", &key, e))
            }
        }
    }

    /// The objects under `dir` (relative keys), or an empty list when it
    /// does not exist.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, SinkError> {
        match self {
            Store::Local { root } => {
                let path = root.join(dir);
                run_blocking(move || match std::fs::read_dir(&path) {
                    Ok(entries) => Ok(entries
                        .filter_map(|e| e.ok())
                        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                    Err(e) => Err(retryable(format!("listing {}", path.display()), e)),
                })
                .await
            }
            Store::S3 { store, prefix, .. } => {
                let base = object_path(prefix, dir);
                let listed = store.list_with_delimiter(Some(&base)).await.map_err(|e| s3_error("listing", &base, e))?;
                Ok(listed.objects.into_iter().filter_map(|o| o.location.filename().map(str::to_string)).collect())
            }
        }
    }

    /// Reads a small object.
    pub async fn read(&self, key: &str) -> Result<Bytes, SinkError> {
        match self {
            Store::Local { root } => {
                let path = root.join(key);
                run_blocking(move || {
                    std::fs::read(&path)
                        .map(Bytes::from)
                        .map_err(|e| retryable(format!("reading {}", path.display()), e))
                })
                .await
            }
            Store::S3 { store, prefix, .. } => {
                let key = object_path(prefix, key);
                let got = store.get(&key).await.map_err(|e| s3_error("reading", &key, e))?;
                got.bytes().await.map_err(|e| s3_error("reading", &key, e))
            }
        }
    }

    /// Reads a small object, or `None` when it does not exist.
    pub async fn read_optional(&self, key: &str) -> Result<Option<Bytes>, SinkError> {
        match self {
            Store::Local { root } => {
                let path = root.join(key);
                run_blocking(move || match std::fs::read(&path) {
                    Ok(b) => Ok(Some(Bytes::from(b))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(retryable(format!("reading {}", path.display()), e)),
                })
                .await
            }
            Store::S3 { store, prefix, .. } => {
                let key = object_path(prefix, key);
                match store.get(&key).await {
                    Ok(got) => got.bytes().await.map(Some).map_err(|e| s3_error("reading", &key, e)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(s3_error("reading", &key, e)),
                }
            }
        }
    }

    /// Deletes an object (absent is fine).
    pub async fn delete(&self, key: &str) -> Result<(), SinkError> {
        match self {
            Store::Local { root } => {
                let path = root.join(key);
                run_blocking(move || match std::fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(retryable(format!("deleting {}", path.display()), e)),
                })
                .await
            }
            Store::S3 { store, prefix, .. } => {
                let key = object_path(prefix, key);
                match store.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(s3_error("deleting", &key, e)),
                }
            }
        }
    }
}

/// Uploads a local file: one PUT when small, else a multipart upload that
/// is completed only when every part is stored (aborted on failure).
async fn upload(store: &Arc<AmazonS3>, key: &ObjectPath, path: &Path) -> Result<(), SinkError> {
    let size = std::fs::metadata(path).map_err(|e| retryable(format!("reading {}", path.display()), e))?.len();
    let mut file = std::fs::File::open(path).map_err(|e| retryable(format!("opening {}", path.display()), e))?;
    let mut read_part = |limit: usize| -> Result<Vec<u8>, SinkError> {
        let mut buf = Vec::with_capacity(limit);
        (&mut file)
            .take(limit as u64)
            .read_to_end(&mut buf)
            .map_err(|e| retryable(format!("reading {}", path.display()), e))?;
        Ok(buf)
    };
    if size as usize <= PART_BYTES {
        let body = read_part(size as usize)?;
        return store.put(key, PutPayload::from(body)).await.map(|_| ()).map_err(|e| s3_error("uploading", key, e));
    }
    let mut upload = store.put_multipart(key).await.map_err(|e| s3_error("starting the upload of", key, e))?;
    let mut sent = 0u64;
    while sent < size {
        let part = read_part(PART_BYTES)?;
        if part.is_empty() {
            break;
        }
        sent += part.len() as u64;
        // One part in flight at a time: memory stays at one part.
        if let Err(e) = upload.put_part(PutPayload::from(part)).await {
            let _ = upload.abort().await;
            return Err(s3_error("uploading a part of", key, e));
        }
    }
    if let Err(e) = upload.complete().await {
        let _ = upload.abort().await;
        return Err(s3_error("completing the upload of", key, e));
    }
    Ok(())
}

fn object_path(prefix: &str, key: &str) -> ObjectPath {
    ObjectPath::from(join(prefix, key))
}

/// `a/b` without empty segments.
pub fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| retryable(format!("fsync of directory {}", dir.display()), e))
}

fn retryable(what: String, e: std::io::Error) -> SinkError {
    SinkError::Retryable(format!("{what}: {e}"))
}

/// S3 errors: authentication and permission problems will not pass by
/// retrying; everything else (connection refused, 5xx, timeouts) may.
fn s3_error(what: &str, key: &ObjectPath, e: object_store::Error) -> SinkError {
    let message = format!("{what} s3 object {key}: {e}");
    match e {
        object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. } => {
            SinkError::Fatal(format!("{message}; check the S3 credentials and the bucket policy"))
        }
        _ => SinkError::Retryable(message),
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SinkError> + Send + 'static,
) -> Result<T, SinkError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(SinkError::Retryable(format!("file task failed: {e}"))))
}
