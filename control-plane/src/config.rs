//! Control-plane configuration: the typed TOML file, command-line overrides, and validation
//! that runs once at start-up and names the offending field. The `[history]` section is in
//! `config/history.rs`, `[jobs]` and `[retention]` in `config/jobs.rs`, `[webhooks]` in `config/webhooks.rs`,
//! `[console]` in `config/console.rs`, `[kubernetes]` and `[leader]` in `config/kubernetes.rs`;
//! `[telemetry]` is the agent's section type (`agent-config`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use lanewatch_agent_config::{OtlpProtocol, TelemetryConfig};
use serde::Deserialize;

mod console;
mod env;
mod history;
mod jobs;
mod kubernetes;
mod webhooks;

pub use console::ConsoleConfig;
use console::{FileConsole, validate_console};
pub use env::Env;
pub use history::HistoryConfig;
use history::{FileHistory, validate_history};
use jobs::{FileJobs, FileRetention, validate_jobs, validate_retention};
pub use jobs::{JobsConfig, QueueLimits, RetentionConfig, RetentionDays};
use kubernetes::{FileKubernetes, FileLeader, validate_kubernetes, validate_leader};
pub use kubernetes::{KubernetesConfig, LeaderLockKind};
pub use webhooks::WebhooksConfig;
use webhooks::{FileWebhooks, validate_webhooks};

/// The only configuration file version this build understands.
pub const CONFIG_VERSION: u32 = 1;

/// A configuration problem, naming the field (dotted path) and why it is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct ConfigError {
    pub field: String,
    pub why: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, why: impl Into<String>) -> Self {
        Self { field: field.into(), why: why.into() }
    }
}

/// Command-line overrides, applied on top of the file before validation.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub grpc_listen: Option<String>,
    pub http_listen: Option<String>,
    pub database_url: Option<String>,
    pub blob_dir: Option<PathBuf>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub shutdown_grace_secs: u64,
    pub grpc: GrpcConfig,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub blob: BlobConfig,
    pub limits: Limits,
    pub auth: AuthConfig,
    pub image_links: ImageLinksConfig,
    pub cluster: ClusterConfig,
    pub history: HistoryConfig,
    pub jobs: JobsConfig,
    pub retention: RetentionConfig,
    pub webhooks: WebhooksConfig,
    pub console: ConsoleConfig,
    /// Traces over OTLP (`[telemetry]`, the section the agent's file has too); off by default.
    pub telemetry: TelemetryConfig,
    pub kubernetes: KubernetesConfig,
    /// `[leader] lock`: what elects the replica that runs the singleton loops.
    pub leader_lock: LeaderLockKind,
}

/// Time-limited image links: presigned S3 URLs, or HMAC-signed `/images/{id}` URLs.
#[derive(Clone, PartialEq, Eq)]
pub struct ImageLinksConfig {
    /// `blob.presign_ttl_secs`: how long a link handed out by the API stays valid.
    pub ttl_secs: u64,
    /// `http.url_signing_key`; `None` means a random key per process (single replica only).
    pub signing_key: Option<Vec<u8>>,
}

impl fmt::Debug for ImageLinksConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageLinksConfig")
            .field("ttl_secs", &self.ttl_secs)
            .field("signing_key", &self.signing_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Several replicas sharing one PostgreSQL database (`[cluster]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterConfig {
    /// Route requests and subscription events between replicas over PostgreSQL LISTEN/NOTIFY.
    pub enabled: bool,
}

/// Default lifetime of an image link.
pub const DEFAULT_PRESIGN_TTL_SECS: u64 = 300;
/// S3 refuses presigned URLs valid for longer than seven days.
pub const MAX_PRESIGN_TTL_SECS: u64 = 604_800;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthConfig {
    /// Requests without an API key act as an operator; only when `http.listen` is loopback.
    pub allow_anonymous_local: bool,
}

#[derive(Debug, Clone)]
pub struct GrpcConfig {
    pub listen: SocketAddr,
    pub tls: Option<TlsConfig>,
    /// Agents must present a client certificate issued by `tls.client_ca_path`, and their Hello
    /// must name the agent of that certificate (`grpc.require_client_cert`).
    pub require_client_cert: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    #[serde(default)]
    pub client_ca_path: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Absolute base URL without a trailing slash; `None` means `http://<bound http addr>`.
    pub public_url: Option<String>,
}

#[derive(Clone)]
pub struct DatabaseConfig {
    pub url: String,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig").field("url", &redact_url(&self.url)).finish()
    }
}

/// Hides the password of a `scheme://user:password@host` URL.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
        None => url.to_owned(),
    }
}

#[derive(Debug, Clone)]
pub enum BlobConfig {
    Local { dir: PathBuf },
    S3(S3Config),
}

#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    pub endpoint_url: Option<String>,
    pub region: String,
    pub force_path_style: bool,
    pub create_bucket: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("create_bucket", &self.create_bucket)
            .field("access_key_id", &"<redacted>")
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_chunk_bytes: u32,
    pub max_image_bytes: u64,
    pub heartbeat_interval_ms: u32,
    pub agent_offline_after_secs: u64,
    /// Captures of one session stored concurrently (blob put + row) while the next ones are
    /// received; a session's memory is bounded by this many assembled images.
    pub max_stores_per_session: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1_048_576,
            max_chunk_bytes: 262_144,
            max_image_bytes: 33_554_432,
            heartbeat_interval_ms: 5_000,
            agent_offline_after_secs: 15,
            max_stores_per_session: 4,
        }
    }
}

// ---- the file as written (serde), converted into `Config` by `validate` ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    version: Option<u32>,
    #[serde(default = "default_grace")]
    shutdown_grace_secs: u64,
    #[serde(default)]
    grpc: FileGrpc,
    #[serde(default)]
    http: FileHttp,
    #[serde(default)]
    database: FileDatabase,
    #[serde(default)]
    blob: FileBlob,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    auth: FileAuth,
    #[serde(default)]
    cluster: FileCluster,
    #[serde(default)]
    history: FileHistory,
    #[serde(default)]
    jobs: FileJobs,
    #[serde(default)]
    retention: FileRetention,
    #[serde(default)]
    webhooks: FileWebhooks,
    #[serde(default)]
    telemetry: TelemetryConfig,
    #[serde(default)]
    console: FileConsole,
    #[serde(default)]
    kubernetes: FileKubernetes,
    #[serde(default)]
    leader: FileLeader,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    #[serde(default)]
    enabled: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    /// Default: true exactly when `http.listen` is a loopback address.
    allow_anonymous_local: Option<bool>,
}

fn default_grace() -> u64 {
    10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGrpc {
    #[serde(default = "default_grpc_listen")]
    listen: String,
    #[serde(default)]
    tls: Option<TlsConfig>,
    /// Default: true exactly when `tls.client_ca_path` is set.
    #[serde(default)]
    require_client_cert: Option<bool>,
}

impl Default for FileGrpc {
    fn default() -> Self {
        Self { listen: default_grpc_listen(), tls: None, require_client_cert: None }
    }
}

fn default_grpc_listen() -> String {
    "127.0.0.1:7400".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttp {
    #[serde(default = "default_http_listen")]
    listen: String,
    #[serde(default)]
    public_url: Option<String>,
    /// Key for HMAC-signed image links; every replica behind one URL needs the same key.
    #[serde(default)]
    url_signing_key: Option<String>,
}

impl Default for FileHttp {
    fn default() -> Self {
        Self { listen: default_http_listen(), public_url: None, url_signing_key: None }
    }
}

fn default_http_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDatabase {
    #[serde(default = "default_database_url")]
    url: String,
}

impl Default for FileDatabase {
    fn default() -> Self {
        Self { url: default_database_url() }
    }
}

fn default_database_url() -> String {
    "sqlite://lanewatch-data/lanewatch.db?mode=rwc".to_owned()
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum BlobKind {
    #[default]
    Local,
    S3,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileBlob {
    #[serde(default)]
    kind: BlobKind,
    dir: Option<PathBuf>,
    bucket: Option<String>,
    endpoint_url: Option<String>,
    region: Option<String>,
    force_path_style: Option<bool>,
    create_bucket: Option<bool>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    presign_ttl_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileLimits {
    max_message_bytes: u64,
    max_chunk_bytes: u64,
    max_image_bytes: u64,
    heartbeat_interval_ms: u64,
    agent_offline_after_secs: u64,
    max_stores_per_session: u64,
}

impl Default for FileLimits {
    fn default() -> Self {
        let d = Limits::default();
        Self {
            max_message_bytes: d.max_message_bytes as u64,
            max_chunk_bytes: u64::from(d.max_chunk_bytes),
            max_image_bytes: d.max_image_bytes,
            heartbeat_interval_ms: u64::from(d.heartbeat_interval_ms),
            agent_offline_after_secs: d.agent_offline_after_secs,
            max_stores_per_session: d.max_stores_per_session as u64,
        }
    }
}

impl Config {
    /// The embedded demo defaults (as if the file held only `version = 1`).
    pub fn embedded(overrides: &Overrides, env: &Env) -> Result<Self, ConfigError> {
        Self::parse("version = 1\n", overrides, env)
    }

    /// Parses and validates a TOML document, applying overrides first.
    pub fn parse(text: &str, overrides: &Overrides, env: &Env) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::new("(document)", e.message().to_owned()))?;
        let file: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let mut field = e.path().to_string();
            let message = e.inner().message().to_owned();
            // Name the unknown key itself, not only the table that holds it.
            if let Some(rest) = message.strip_prefix("unknown field `")
                && let Some((name, _)) = rest.split_once('`')
                && field.rsplit('.').next() != Some(name)
            {
                field = if field == "." { name.to_owned() } else { format!("{field}.{name}") };
            }
            if field == "." {
                field = "(document)".to_owned();
            }
            ConfigError::new(field, message)
        })?;
        file.validate(overrides, env)
    }
}

impl FileConfig {
    fn validate(self, overrides: &Overrides, env: &Env) -> Result<Config, ConfigError> {
        match self.version {
            None => return Err(ConfigError::new("version", "missing; this control plane reads version = 1")),
            Some(CONFIG_VERSION) => {}
            Some(v) => {
                return Err(ConfigError::new(
                    "version",
                    format!("version {v} is not supported; this control plane reads version = 1"),
                ));
            }
        }
        if self.shutdown_grace_secs > 3600 {
            return Err(ConfigError::new("shutdown_grace_secs", "must be at most 3600"));
        }
        if let Some((field, why)) = self.telemetry.problems("telemetry").into_iter().next() {
            return Err(ConfigError::new(field, why));
        }
        let telemetry = self.telemetry.clone();

        let grpc_listen_text = overrides.grpc_listen.clone().unwrap_or(self.grpc.listen);
        let grpc_listen = parse_addr("grpc.listen", &grpc_listen_text)?;
        if !grpc_listen.ip().is_loopback() && self.grpc.tls.is_none() {
            return Err(ConfigError::new(
                "grpc.tls",
                format!("required when grpc.listen ({grpc_listen}) is not a loopback address"),
            ));
        }

        let client_ca = self.grpc.tls.as_ref().is_some_and(|t| t.client_ca_path.is_some());
        let require_client_cert = match self.grpc.require_client_cert {
            None => client_ca,
            Some(true) if !client_ca => {
                return Err(ConfigError::new(
                    "grpc.require_client_cert",
                    "needs grpc.tls.client_ca_path to verify client certificates against",
                ));
            }
            Some(required) => required,
        };

        let http_listen_text = overrides.http_listen.clone().unwrap_or(self.http.listen);
        let http_listen = parse_addr("http.listen", &http_listen_text)?;
        let public_url = match self.http.public_url {
            None => None,
            Some(url) => {
                let trimmed = url.trim_end_matches('/');
                let host = trimmed.strip_prefix("http://").or_else(|| trimmed.strip_prefix("https://"));
                match host {
                    Some(h) if !h.is_empty() => Some(trimmed.to_owned()),
                    _ => {
                        return Err(ConfigError::new(
                            "http.public_url",
                            "must be an absolute http:// or https:// url",
                        ));
                    }
                }
            }
        };

        let url = overrides.database_url.clone().unwrap_or(self.database.url);
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }

        let ttl_secs = self.blob.presign_ttl_secs.unwrap_or(DEFAULT_PRESIGN_TTL_SECS);
        if !(1..=MAX_PRESIGN_TTL_SECS).contains(&ttl_secs) {
            return Err(ConfigError::new(
                "blob.presign_ttl_secs",
                format!("{ttl_secs} is outside 1..={MAX_PRESIGN_TTL_SECS}"),
            ));
        }
        let signing_key = match self.http.url_signing_key.or_else(|| env.url_signing_key.clone()) {
            None => None,
            Some(key) if key.len() < 32 => {
                return Err(ConfigError::new("http.url_signing_key", "must be at least 32 characters"));
            }
            Some(key) => Some(key.into_bytes()),
        };
        let is_postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if self.cluster.enabled && !is_postgres {
            return Err(ConfigError::new("cluster.enabled", "replicas must share a postgresql database.url"));
        }
        let blob = validate_blob(self.blob, overrides, env)?;
        if self.cluster.enabled && signing_key.is_none() && matches!(blob, BlobConfig::Local { .. }) {
            return Err(ConfigError::new(
                "http.url_signing_key",
                "required with cluster.enabled: every replica must verify the image links of the others",
            ));
        }
        let limits = validate_limits(&self.limits)?;
        let history = validate_history(&self.history)?;
        let jobs = validate_jobs(&self.jobs)?;
        let retention = validate_retention(&self.retention)?;
        let webhooks = validate_webhooks(&self.webhooks)?;
        let console = validate_console(&self.console)?;
        let kubernetes = validate_kubernetes(&self.kubernetes)?;
        let leader_lock = validate_leader(&self.leader, &kubernetes, self.cluster.enabled, is_postgres)?;
        let loopback = http_listen.ip().is_loopback();
        let allow_anonymous_local = match self.auth.allow_anonymous_local {
            None => loopback,
            Some(true) if !loopback => {
                return Err(ConfigError::new(
                    "auth.allow_anonymous_local",
                    format!("only allowed when http.listen ({http_listen}) is a loopback address"),
                ));
            }
            Some(allowed) => allowed,
        };

        Ok(Config {
            shutdown_grace_secs: self.shutdown_grace_secs,
            grpc: GrpcConfig { listen: grpc_listen, tls: self.grpc.tls, require_client_cert },
            http: HttpConfig { listen: http_listen, public_url },
            database: DatabaseConfig { url },
            blob,
            limits,
            auth: AuthConfig { allow_anonymous_local },
            image_links: ImageLinksConfig { ttl_secs, signing_key },
            cluster: ClusterConfig { enabled: self.cluster.enabled },
            history,
            jobs,
            retention,
            webhooks,
            console,
            telemetry,
            kubernetes,
            leader_lock,
        })
    }
}

fn parse_addr(field: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| ConfigError::new(field, format!("`{text}` is not an ip:port socket address")))
}

fn validate_blob(blob: FileBlob, overrides: &Overrides, env: &Env) -> Result<BlobConfig, ConfigError> {
    if let Some(dir) = &overrides.blob_dir {
        return Ok(BlobConfig::Local { dir: dir.clone() });
    }
    match blob.kind {
        BlobKind::Local => {
            let s3_only = [
                ("bucket", blob.bucket.is_some()),
                ("endpoint_url", blob.endpoint_url.is_some()),
                ("region", blob.region.is_some()),
                ("force_path_style", blob.force_path_style.is_some()),
                ("create_bucket", blob.create_bucket.is_some()),
                ("access_key_id", blob.access_key_id.is_some()),
                ("secret_access_key", blob.secret_access_key.is_some()),
            ];
            if let Some((name, _)) = s3_only.iter().find(|(_, set)| *set) {
                return Err(ConfigError::new(format!("blob.{name}"), "only allowed when blob.kind = \"s3\""));
            }
            let dir = blob.dir.unwrap_or_else(|| PathBuf::from("lanewatch-data/blobs"));
            if dir.as_os_str().is_empty() {
                return Err(ConfigError::new("blob.dir", "must not be empty"));
            }
            Ok(BlobConfig::Local { dir })
        }
        BlobKind::S3 => {
            if blob.dir.is_some() {
                return Err(ConfigError::new("blob.dir", "only allowed when blob.kind = \"local\""));
            }
            let bucket = match blob.bucket {
                Some(b) if !b.is_empty() => b,
                _ => return Err(ConfigError::new("blob.bucket", "required when blob.kind = \"s3\"")),
            };
            if let Some(url) = &blob.endpoint_url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(ConfigError::new("blob.endpoint_url", "must be an http:// or https:// url"));
            }
            let access_key_id =
                blob.access_key_id.or_else(|| env.aws_access_key_id.clone()).ok_or_else(|| {
                    ConfigError::new(
                        "blob.access_key_id",
                        "required for s3 (set it here or in AWS_ACCESS_KEY_ID)",
                    )
                })?;
            let secret_access_key =
                blob.secret_access_key.or_else(|| env.aws_secret_access_key.clone()).ok_or_else(|| {
                    ConfigError::new(
                        "blob.secret_access_key",
                        "required for s3 (set it here or in AWS_SECRET_ACCESS_KEY)",
                    )
                })?;
            Ok(BlobConfig::S3(S3Config {
                bucket,
                endpoint_url: blob.endpoint_url,
                region: blob.region.unwrap_or_else(|| "us-east-1".to_owned()),
                force_path_style: blob.force_path_style.unwrap_or(false),
                create_bucket: blob.create_bucket.unwrap_or(false),
                access_key_id,
                secret_access_key,
            }))
        }
    }
}

fn validate_limits(l: &FileLimits) -> Result<Limits, ConfigError> {
    fn range(field: &str, v: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError::new(format!("limits.{field}"), format!("{v} is outside {min}..={max}")))
        }
    }
    let max_message_bytes = range("max_message_bytes", l.max_message_bytes, 4096, 1 << 30)?;
    let max_chunk_bytes = range("max_chunk_bytes", l.max_chunk_bytes, 1, u64::from(u32::MAX))?;
    if max_chunk_bytes + 1024 > max_message_bytes {
        return Err(ConfigError::new(
            "limits.max_chunk_bytes",
            "must be at least 1024 bytes smaller than limits.max_message_bytes",
        ));
    }
    let max_image_bytes = range("max_image_bytes", l.max_image_bytes, 1, 1 << 32)?;
    let heartbeat_interval_ms = range("heartbeat_interval_ms", l.heartbeat_interval_ms, 100, 600_000)?;
    let agent_offline_after_secs = range("agent_offline_after_secs", l.agent_offline_after_secs, 1, 86_400)?;
    if agent_offline_after_secs * 1000 <= heartbeat_interval_ms {
        return Err(ConfigError::new(
            "limits.agent_offline_after_secs",
            "must be longer than limits.heartbeat_interval_ms",
        ));
    }
    let max_stores_per_session = range("max_stores_per_session", l.max_stores_per_session, 1, 64)?;
    Ok(Limits {
        max_stores_per_session: usize::try_from(max_stores_per_session).unwrap_or(1),
        max_message_bytes: usize::try_from(max_message_bytes).unwrap_or(usize::MAX),
        max_chunk_bytes: u32::try_from(max_chunk_bytes).unwrap_or(u32::MAX),
        max_image_bytes,
        heartbeat_interval_ms: u32::try_from(heartbeat_interval_ms).unwrap_or(u32::MAX),
        agent_offline_after_secs,
    })
}

#[cfg(test)]
mod tests;
