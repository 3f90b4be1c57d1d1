//! Capture image storage: a local directory (durable write: temp file, fsync, rename, fsync
//! directory) or an S3-compatible bucket. `put` returns only once the bytes are durable; S3
//! objects can be handed out as presigned `GetObject` URLs (`links.rs`).

use std::path::{Path, PathBuf};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use crate::config::{BlobConfig, S3Config};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {key} not found")]
    NotFound { key: String },
    #[error("invalid blob key {key:?}")]
    InvalidKey { key: String },
    #[error("blob store i/o failed for {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("s3 {operation} failed for {what}: {message}")]
    S3 { operation: &'static str, what: String, message: String },
}

/// Where capture images live.
#[derive(Debug, Clone)]
pub enum BlobStore {
    Local(LocalDir),
    S3(S3Store),
}

impl BlobStore {
    /// Opens the configured store (creating the directory or, when asked, the bucket).
    pub async fn open(config: &BlobConfig) -> Result<Self, BlobError> {
        match config {
            BlobConfig::Local { dir } => Ok(Self::Local(LocalDir::open(dir.clone()).await?)),
            BlobConfig::S3(s3) => Ok(Self::S3(S3Store::open(s3).await?)),
        }
    }

    pub async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), BlobError> {
        match self {
            Self::Local(l) => l.put(key, bytes).await,
            Self::S3(s) => s.put(key, bytes, content_type, None).await,
        }
    }

    /// [`Self::put`] of bytes whose SHA-256 the caller has already checked (ingest verified the
    /// agent's digest): S3 requests are signed with it instead of hashing the body again.
    pub async fn put_verified(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
        sha256: [u8; 32],
    ) -> Result<(), BlobError> {
        match self {
            Self::Local(l) => l.put(key, bytes).await,
            Self::S3(s) => s.put(key, bytes, content_type, Some(sha256)).await,
        }
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        match self {
            Self::Local(l) => l.get(key).await,
            Self::S3(s) => s.get(key).await,
        }
    }

    /// Deletes the object at `key`; one that is already gone is no error (retention repeats a
    /// step that was interrupted after the delete).
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self {
            Self::Local(l) => l.delete(key).await,
            Self::S3(s) => s.delete(key).await,
        }
    }

    /// Whether the store can be reached now.
    pub async fn check_ready(&self) -> Result<(), BlobError> {
        match self {
            Self::Local(l) => l.check_ready().await,
            Self::S3(s) => s.check_ready().await,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Local(l) => format!("local dir {}", l.dir.display()),
            Self::S3(s) => format!("s3 bucket {}", s.bucket),
        }
    }
}

/// Keys are relative paths of plain segments; nothing can escape the store's root.
fn check_key(key: &str) -> Result<(), BlobError> {
    let ok = !key.is_empty()
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && !seg.starts_with('.')
                && seg.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    if ok { Ok(()) } else { Err(BlobError::InvalidKey { key: key.to_owned() }) }
}

#[derive(Debug, Clone)]
pub struct LocalDir {
    dir: PathBuf,
}

impl LocalDir {
    pub async fn open(dir: PathBuf) -> Result<Self, BlobError> {
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| BlobError::Io { what: dir.display().to_string(), source })?;
        Ok(Self { dir })
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        check_key(key)?;
        let path = self.dir.join(key);
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || write_durably(&path, &bytes))
            .await
            .map_err(|e| BlobError::Io { what: key.clone(), source: std::io::Error::other(e) })?
            .map_err(|source| BlobError::Io { what: key, source })
    }

    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        match tokio::fs::remove_file(self.dir.join(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(BlobError::Io { what: key.to_owned(), source }),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        check_key(key)?;
        match tokio::fs::read(self.dir.join(key)).await {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(BlobError::NotFound { key: key.to_owned() })
            }
            Err(source) => Err(BlobError::Io { what: key.to_owned(), source }),
        }
    }

    pub async fn check_ready(&self) -> Result<(), BlobError> {
        let meta = tokio::fs::metadata(&self.dir)
            .await
            .map_err(|source| BlobError::Io { what: self.dir.display().to_string(), source })?;
        if meta.is_dir() {
            Ok(())
        } else {
            Err(BlobError::Io {
                what: self.dir.display().to_string(),
                source: std::io::Error::other("not a directory"),
            })
        }
    }
}

/// Temp file in the same directory, fsync, rename over the final name, fsync the directory.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let parent = path.parent().ok_or_else(|| std::io::Error::other("blob path has no parent"))?;
    std::fs::create_dir_all(parent)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("blob");
    let tmp = parent.join(format!(".{name}.{}.tmp", uuid::Uuid::now_v7()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(parent)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Store {
    pub async fn open(config: &S3Config) -> Result<Self, BlobError> {
        let credentials = Credentials::new(
            &config.access_key_id,
            &config.secret_access_key,
            None,
            None,
            "lanewatch-config",
        );
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(config.force_path_style);
        if let Some(url) = &config.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        let store =
            Self { client: aws_sdk_s3::Client::from_conf(builder.build()), bucket: config.bucket.clone() };
        if config.create_bucket {
            store.create_bucket(&config.region).await?;
        }
        Ok(store)
    }

    async fn create_bucket(&self, region: &str) -> Result<(), BlobError> {
        use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        if region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, "created blob bucket");
                Ok(())
            }
            Err(e) => {
                let exists = e
                    .as_service_error()
                    .is_some_and(|se| se.is_bucket_already_owned_by_you() || se.is_bucket_already_exists());
                if exists { Ok(()) } else { Err(self.s3_error("create_bucket", &self.bucket, e)) }
            }
        }
    }

    fn s3_error<E: std::error::Error>(&self, operation: &'static str, what: &str, e: E) -> BlobError {
        BlobError::S3 {
            operation,
            what: format!("{}/{what}", self.bucket),
            message: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
        }
    }

    /// Puts `bytes`; with `sha256`, the signature covers that digest (SigV4's payload hash), so
    /// the SDK does not hash the body. AWS S3 checks it against the bytes it receives; SeaweedFS
    /// does not, so the digest must be one the caller verified.
    pub async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
        sha256: Option<[u8; 32]>,
    ) -> Result<(), BlobError> {
        check_key(key)?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes));
        match sha256 {
            Some(digest) => {
                request.customize().interceptor(KnownPayloadDigest(hex::encode(digest))).send().await
            }
            None => request.send().await,
        }
        .map_err(|e| self.s3_error("put_object", key, e))?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        check_key(key)?;
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => {
                return Err(BlobError::NotFound { key: key.to_owned() });
            }
            Err(e) => return Err(self.s3_error("get_object", key, e)),
        };
        let body = out.body.collect().await.map_err(|e| self.s3_error("get_object body", key, e))?;
        Ok(body.into_bytes().to_vec())
    }

    /// `DeleteObject` (S3 answers success for a key that does not exist).
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.s3_error("delete_object", key, e))?;
        Ok(())
    }

    /// A presigned `GetObject` URL for `key`, valid for `ttl` (signing only: no request is made).
    /// A presigned GET valid from `start` for `valid` (a fixed start makes the same URL for the
    /// same window).
    pub async fn presigned_get(
        &self,
        key: &str,
        start: std::time::SystemTime,
        valid: std::time::Duration,
    ) -> Result<String, BlobError> {
        check_key(key)?;
        let config = aws_sdk_s3::presigning::PresigningConfig::builder()
            .start_time(start)
            .expires_in(valid)
            .build()
            .map_err(|e| self.s3_error("presign", key, e))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| self.s3_error("presign get_object", key, e))?;
        Ok(request.uri().to_owned())
    }

    pub async fn check_ready(&self) -> Result<(), BlobError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| self.s3_error("head_bucket", "", e))?;
        Ok(())
    }
}

/// Signs a request with a payload digest known in advance (lowercase hex SHA-256 of the body):
/// the SDK's documented override of SigV4's payload hash, set where interceptors may set it.
#[derive(Debug)]
struct KnownPayloadDigest(String);

impl aws_smithy_runtime_api::client::interceptors::Intercept for KnownPayloadDigest {
    fn name(&self) -> &'static str {
        "KnownPayloadDigest"
    }

    fn modify_before_signing(
        &self,
        _context: &mut aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut<
            '_,
        >,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        cfg.interceptor_state()
            .store_put(aws_runtime::auth::PayloadSigningOverride::Precomputed(self.0.clone()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_put_get_round_trip_is_durable() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&BlobConfig::Local { dir: tmp.path().join("blobs") }).await.unwrap();
        store.check_ready().await.unwrap();
        let key = "captures/a1/2025-01-02/0190f0aa-0000-7000-8000-000000000001.jpg";
        store.put(key, Bytes::from_static(b"jpeg bytes"), "image/jpeg").await.unwrap();
        assert_eq!(store.get(key).await.unwrap(), b"jpeg bytes");
        // overwrite is atomic and leaves no temp files behind
        store.put(key, Bytes::from_static(b"again"), "image/jpeg").await.unwrap();
        assert_eq!(store.get(key).await.unwrap(), b"again");
        let dir = tmp.path().join("blobs/captures/a1/2025-01-02");
        let names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // a fresh store over the same dir sees the bytes
        let reopened = BlobStore::open(&BlobConfig::Local { dir: tmp.path().join("blobs") }).await.unwrap();
        assert_eq!(reopened.get(key).await.unwrap(), b"again");
        assert!(matches!(store.get("captures/missing.jpg").await, Err(BlobError::NotFound { .. })));
    }

    #[test]
    fn keys_cannot_escape() {
        for bad in ["", "../x", "a//b", "/abs", "a/../b", "a/.hidden", "a b"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        assert!(check_key("captures/site-1/2025-01-01/x.png").is_ok());
    }
}
