//! `lanewatch-control`: the control plane's composition root. Reads top to bottom: tracing,
//! arguments, config, database, blob store, servers, ready file, signal, drain, exit; and the
//! `create-api-key` bootstrap command, which prints a new key's secret once; `crd` prints the
//! LanewatchSite CRD generated from the Rust types; `bench` (bench.rs)
//! measures the API against a real PostgreSQL and S3, and component history's write path.

mod bench;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use lanewatch_control_plane::auth::{self, KeyRequest};
use lanewatch_control_plane::blob::BlobStore;
use lanewatch_control_plane::cluster::Cluster;
use lanewatch_control_plane::config::{Config, Env, LeaderLockKind, Overrides, TlsConfig};
use lanewatch_control_plane::console::{Console, ConsoleSettings};
use lanewatch_control_plane::db::Db;
use lanewatch_control_plane::db::history::run_history_maintenance;
use lanewatch_control_plane::db::writer::HistoryWriter;
use lanewatch_control_plane::domain::NewJob;
use lanewatch_control_plane::domain::{AuditEntry, Role};
use lanewatch_control_plane::error::ErrorKind;
use lanewatch_control_plane::gateway::Gateway;
use lanewatch_control_plane::graphql::{self, ApiContext};
use lanewatch_control_plane::http::{self, AppState};
use lanewatch_control_plane::jobs::deliver::Deliver;
use lanewatch_control_plane::jobs::retention::{self, PruneJobs, RetentionSweep};
use lanewatch_control_plane::jobs::{Cron, Crons, JobsRuntime, Worker};
use lanewatch_control_plane::k8s;
use lanewatch_control_plane::leader::{self, Leadership};
use lanewatch_control_plane::links::ImageLinks;
use lanewatch_control_plane::metrics::Metrics;
use lanewatch_control_plane::webhooks::client::{Cidr, ClientOptions, DeliveryClient};
use lanewatch_telemetry::Telemetry;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// mimalloc rather than glibc's allocator: ingest allocates and frees an image-sized buffer per
/// capture on many threads, which glibc serves with page faults and trims; built without its
/// transparent-huge-page advice, under which each fresh page faulted in as a zeroed 2 MiB page
/// (see docs/DECISIONS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lanewatch control plane: agent gateway, capture storage and operator API.
#[derive(Debug, Parser)]
#[command(name = "lanewatch-control", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML config file; embedded demo defaults when absent.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Written (atomically) with the bound addresses once both listeners are up.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Overrides grpc.listen.
    #[arg(long)]
    grpc_listen: Option<String>,
    /// Overrides http.listen.
    #[arg(long)]
    http_listen: Option<String>,
    /// Overrides database.url.
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Overrides the blob store with a local directory.
    #[arg(long)]
    blob_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Applies the database migrations and exits (the Helm chart's pre-install/pre-upgrade hook).
    Migrate,
    /// Prints the LanewatchSite CustomResourceDefinition (YAML), generated from the Rust types.
    Crd,
    /// Measures the API (`bench api`) or component history's write path (`bench history`).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Creates an API key in the configured database and prints its secret (once).
    CreateApiKey {
        /// A label for people, e.g. who holds the key.
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: CliRole,
        /// The agency an agency key belongs to.
        #[arg(long)]
        agency: Option<String>,
        /// Lets an agency key read every capture of its sites, not only violations.
        #[arg(long)]
        all_captures: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CliRole {
    Admin,
    Operator,
    Agency,
}

fn main() -> ExitCode {
    // Both rustls back ends are compiled into the workspace (the AWS SDK brings aws-lc-rs), so
    // rustls cannot pick one by itself: choose ring, the one tonic's TLS is built with.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let env = Env {
        aws_access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok(),
        aws_secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").ok(),
        url_signing_key: std::env::var("LANEWATCH_URL_SIGNING_KEY").ok().filter(|k| !k.is_empty()),
        pod_name: std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()),
    };
    if let Some(Command::Crd) = args.command {
        print!("{}", k8s::crd_yaml());
        return ExitCode::SUCCESS;
    }
    let config = match load_config(&args, &env) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // traces are exported by the server only, never by the one-shot commands
    let telemetry = match &args.command {
        Some(_) => None,
        None => {
            let _runtime = runtime.enter(); // the gRPC exporter's channel needs the runtime
            let instance = env.pod_name.clone().unwrap_or_else(|| "lanewatch-control".to_owned());
            match Telemetry::install(&config.telemetry, "lanewatch-control", &instance) {
                Ok(telemetry) => telemetry,
                Err(e) => {
                    eprintln!("error: invalid control-plane config: telemetry: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    init_tracing(telemetry.as_ref());
    lanewatch_control_plane::traces::configure(Duration::from_secs(config.telemetry.late_after_secs));
    if let Some(Command::Bench(bench::BenchCommand::Api(api))) = &args.command {
        return bench::run_api(&runtime, &config.database.url, api);
    }
    if let Some(Command::Bench(bench::BenchCommand::History(history))) = &args.command {
        return bench::history::run(&runtime, args.database_url.as_deref(), history);
    }
    if let Some(Command::Bench(bench::BenchCommand::Jobs(jobs))) = &args.command {
        return bench::jobs::run(&runtime, args.database_url.as_deref(), jobs);
    }
    if let Some(Command::Migrate) = args.command {
        return runtime.block_on(async {
            // connecting applies every pending migration, once, in order
            match Db::connect(&config.database.url).await {
                Ok(_) => {
                    println!("migrations applied");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: cannot migrate the database: {e}");
                    ExitCode::FAILURE
                }
            }
        });
    }
    if let Some(Command::CreateApiKey { name, role, agency, all_captures }) = args.command {
        let role = match role {
            CliRole::Admin => Role::Admin,
            CliRole::Operator => Role::Operator,
            CliRole::Agency => Role::Agency,
        };
        let req = KeyRequest { name, role, agency_id: agency, all_captures };
        return runtime.block_on(create_api_key(&config, req));
    }
    let result = runtime.block_on(run(config, args.ready_file, env.pod_name));
    if let Some(telemetry) = telemetry
        && let Err(e) = runtime
            .block_on(async { tokio::task::spawn_blocking(move || telemetry.shutdown()).await })
            .unwrap_or_else(|e| Err(e.to_string()))
    {
        tracing::warn!(error = %e, "traces: the last spans were not exported");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "control plane failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Stores a hashed key, audits it as `cli`, and prints the token to stdout once.
async fn create_api_key(config: &Config, req: KeyRequest) -> ExitCode {
    let db = match Db::connect(&config.database.url).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: cannot open the database: {e}");
            return ExitCode::FAILURE;
        }
    };
    let name = req.name.clone();
    let result = auth::issue_key(&db, req, chrono::Utc::now()).await;
    let entry = AuditEntry {
        id: uuid::Uuid::now_v7(),
        at: chrono::Utc::now(),
        actor: "cli".to_owned(),
        action: "createApiKey".to_owned(),
        target: match &result {
            Ok((key, _)) => format!("api_key/{}", key.id),
            Err(_) => format!("api_key/{name}"),
        },
        ok: result.is_ok(),
        message: result.as_ref().err().map(|e| e.message.clone()),
    };
    if let Err(e) = db.insert_audit(&entry).await {
        eprintln!("error: cannot write the audit log: {e}");
        return ExitCode::FAILURE;
    }
    match result {
        Ok((key, token)) => {
            eprintln!(
                "created {} key {} ({:?}); the secret below is shown only once",
                key.role.as_str(),
                key.id,
                key.name
            );
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot create api key: {e}");
            match e.kind {
                ErrorKind::InvalidArgument | ErrorKind::NotFound => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Log lines on stderr (`RUST_LOG`, else `info`) and, with `[telemetry]` on, the capture
/// trace's spans exported over OTLP (`traces.rs`).
fn init_tracing(telemetry: Option<&Telemetry>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let lines =
        tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).with_filter(filter);
    let traces = telemetry.map(lanewatch_control_plane::traces::layer);
    tracing_subscriber::registry().with(lines).with(traces).init();
}

fn load_config(args: &Args, env: &Env) -> Result<Config, String> {
    let overrides = Overrides {
        grpc_listen: args.grpc_listen.clone(),
        http_listen: args.http_listen.clone(),
        database_url: args.database_url.clone(),
        blob_dir: args.blob_dir.clone(),
    };
    match &args.config {
        None => Config::embedded(&overrides, env)
            .map_err(|e| format!("invalid control-plane config <embedded defaults>: {e}")),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read control-plane config {}: {e}", path.display()))?;
            Config::parse(&text, &overrides, env)
                .map_err(|e| format!("invalid control-plane config {}: {e}", path.display()))
        }
    }
}

async fn run(config: Config, ready_file: Option<PathBuf>, pod_name: Option<String>) -> anyhow::Result<()> {
    tracing::info!(?config, "starting control plane");
    let db = Db::connect(&config.database.url).await.context("cannot open the database")?;
    let db = db.with_history(config.history);
    if config.cluster.enabled {
        // other replicas' sessions are live; rows of a crashed replica go stale by last_seen
        tracing::info!("cluster mode: leaving other replicas' agents online");
    } else {
        db.mark_all_offline().await.context("cannot reset agent liveness")?;
    }
    let blobs = BlobStore::open(&config.blob).await.context("cannot open the blob store")?;
    tracing::info!(store = %blobs.describe(), "blob store open");
    let metrics = Metrics::new();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let grpc_listener = TcpListener::bind(config.grpc.listen)
        .await
        .with_context(|| format!("cannot bind grpc listener {}", config.grpc.listen))?;
    let http_listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot bind http listener {}", config.http.listen))?;
    let grpc_addr = grpc_listener.local_addr().context("grpc listener address")?;
    let http_addr = http_listener.local_addr().context("http listener address")?;

    let gateway =
        Gateway::new(db.clone(), blobs.clone(), config.limits, metrics.clone(), shutdown_rx.clone());
    // the singleton loops (cron scheduling, history maintenance, the LanewatchSite controller)
    // run on the replica that holds the leader lock, for as long as it holds it
    let replica = format!("replica-{}", uuid::Uuid::now_v7());
    let kube_client = if config.kubernetes.enabled {
        Some(kube::Client::try_default().await.context(
            "cannot configure the kubernetes client (kubernetes.enabled: in-cluster service account or KUBECONFIG)",
        )?)
    } else {
        None
    };
    let identity = pod_name.unwrap_or_else(|| replica.clone());
    let lock = leader_lock(&config, &db, kube_client.as_ref(), &identity).await?;
    let epoch = metrics.leader_epoch.clone();
    let (leadership, election) = leader::elect(lock, db.clone(), identity, epoch, shutdown_rx.clone());
    // component history: the gateway hands heartbeats' component lines to the writer; one task
    // rolls them up and deletes what is past retention (one replica at a time)
    let history = config.history.enabled.then(|| {
        let (writer, task) = HistoryWriter::spawn(db.clone(), config.history.queue_samples, metrics.clone());
        gateway.attach_history(writer);
        let db = db.clone();
        let maintain = move |_term, stop| run_history_maintenance(db.clone(), stop);
        (
            task,
            tokio::spawn(leader::while_leader(
                "history maintenance",
                leadership.clone(),
                shutdown_rx.clone(),
                maintain,
            )),
        )
    });
    let mut grpc_server = lanewatch_control_plane::gateway::server_builder();
    match &config.grpc.tls {
        Some(tls) => {
            export_certificate_expiry(tls, &metrics);
            let server = server_tls(tls, config.grpc.require_client_cert)?;
            grpc_server = grpc_server.tls_config(server).context("invalid grpc.tls")?;
            gateway.require_client_certs(config.grpc.require_client_cert);
            if tls.client_ca_path.is_some() && !config.grpc.require_client_cert {
                tracing::warn!("grpc.require_client_cert is false: agents without a certificate are let in");
            }
        }
        None => tracing::warn!(
            addr = %grpc_addr,
            "grpc is PLAINTEXT (loopback only); configure grpc.tls before exposing the gateway"
        ),
    }
    if config.cluster.enabled {
        let cluster = Cluster::start(&db, Arc::new(gateway.clone()), shutdown_rx.clone())
            .await
            .map_err(|e| anyhow::anyhow!(e.message))
            .context("cannot join the cluster")?;
        gateway.attach_cluster(cluster.clone());
        tracing::info!(
            replica_id = cluster.replica_id(),
            "routing through other replicas over postgresql notify"
        );
    }
    let grpc_task =
        tokio::spawn(grpc_server.add_service(gateway.clone().into_service()).serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc_listener),
            stopped(shutdown_rx.clone()),
        ));

    let public_url = config.http.public_url.clone().unwrap_or_else(|| format!("http://{http_addr}"));
    if config.image_links.signing_key.is_none() && matches!(blobs, BlobStore::Local(_)) {
        tracing::warn!("http.url_signing_key is not set: image links are signed with a per-process key");
    }
    let secure_cookies = public_url.starts_with("https://");
    let links = ImageLinks::new(public_url, &config.image_links, blobs.clone());
    // the job queue: webhook deliveries, and retention and pruning as cron jobs
    let me = JobsReplica { name: replica, leadership: leadership.clone() };
    let jobs = start_jobs(&config, &db, &blobs, &links, &metrics, me, shutdown_rx.clone())
        .await
        .context("cannot start the job queue")?;
    let sites = kube_client.map(|client| {
        let (db, sessions, k) = (db.clone(), gateway.clone(), config.kubernetes.clone());
        let controller = move |term: leader::Term, stop| {
            let ctx = k8s::Context {
                client: client.clone(),
                db: db.clone(),
                sessions: Arc::new(sessions.clone()),
                namespace: k.namespace.clone(),
                field_manager: k.field_manager.clone(),
                fence: term.fence,
            };
            k8s::reconcile_sites(ctx, stop)
        };
        tokio::spawn(leader::while_leader(
            "LanewatchSite controller",
            leadership.clone(),
            shutdown_rx.clone(),
            controller,
        ))
    });
    let events = gateway.events().clone();
    let schema =
        graphql::schema(ApiContext { db: db.clone(), gateway, blobs: blobs.clone(), links: links.clone() });
    if config.auth.allow_anonymous_local {
        tracing::warn!(%http_addr, "requests without an api key act as an operator (auth.allow_anonymous_local)");
    }
    let allow_anonymous = config.auth.allow_anonymous_local;
    // the fleet console at `/`: pages over the same schema, live over server-sent events
    let console_settings = ConsoleSettings {
        allow_anonymous,
        secure_cookies,
        session_ttl: Duration::from_secs(config.console.session_ttl_secs),
        login_attempts_per_minute: config.console.login_attempts_per_minute,
    };
    let console = Console::new(schema.clone(), db.clone(), events, &console_settings, shutdown_rx.clone());
    let app = http::router(AppState { schema, db, blobs, metrics, allow_anonymous, links }, Some(console));
    let http_task = tokio::spawn(
        axum::serve(http_listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .with_graceful_shutdown(stopped(shutdown_rx.clone()))
            .into_future(),
    );

    tracing::info!(%grpc_addr, %http_addr, "control plane listening");
    if let Some(path) = &ready_file {
        write_ready_file(path, grpc_addr, http_addr).context("cannot write the ready file")?;
    }

    wait_for_signal().await?;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    tracing::info!(grace_secs = grace.as_secs(), "shutting down: draining sessions and requests");
    let _ = shutdown_tx.send(true);
    let drained = tokio::time::timeout(grace, async {
        let (grpc, http) = tokio::join!(grpc_task, http_task);
        if let Ok(Err(e)) = grpc {
            tracing::warn!(error = %e, "grpc server ended with an error");
        }
        if let Ok(Err(e)) = http {
            tracing::warn!(error = %e, "http server ended with an error");
        }
        // the sessions have ended: write the history they handed over, let maintenance stop
        if let Some((writer, maintenance)) = history {
            writer.finish().await;
            let _ = maintenance.await;
        }
        // running jobs finish; what is cut off by the grace period is rescued later
        jobs.finish().await;
        if let Some(sites) = sites {
            let _ = sites.await;
        }
        // the singletons have stopped: give the leader lock up for the next replica
        let _ = election.await;
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("drained; bye"),
        Err(_) => tracing::warn!(grace_secs = grace.as_secs(), "grace period over; stopping the rest"),
    }
    Ok(())
}

/// This replica in the job queue: its name, and its leadership (only the leader schedules
/// cron jobs).
struct JobsReplica {
    name: String,
    leadership: Leadership,
}

/// The job queue's runtime with this control plane's workers and cron jobs.
async fn start_jobs(
    config: &Config,
    db: &Db,
    blobs: &BlobStore,
    links: &ImageLinks,
    metrics: &Metrics,
    me: JobsReplica,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JobsRuntime> {
    let keep = Duration::from_secs(config.jobs.history_retention_secs);
    let w = &config.webhooks;
    let client = DeliveryClient::new(ClientOptions {
        connect_timeout: Duration::from_millis(w.connect_timeout_ms),
        timeout: Duration::from_millis(w.timeout_ms),
        max_body_bytes: w.max_body_bytes,
        allow: w.allow_cidrs.iter().filter_map(|c| Cidr::parse(c).ok()).collect(),
    })
    .map_err(|e| anyhow::anyhow!("cannot build the webhook client: {e}"))?;
    let deliver = Deliver::new(db.clone(), client, links.clone(), w.clone())
        .observe_with(metrics.webhook_delivery_seconds.clone());
    let mut workers: Vec<Arc<dyn Worker>> =
        vec![Arc::new(PruneJobs { db: db.clone(), keep }), Arc::new(deliver)];
    let cron = |name: &str, every: Duration, worker: &str| Cron {
        name: name.to_owned(),
        every,
        job: NewJob { max_attempts: 3, ..NewJob::new("maintenance", worker, serde_json::json!({})) },
    };
    let mut crons = vec![cron("jobs.prune", Duration::from_secs(600), retention::PRUNE)];
    if config.retention.enabled {
        workers.push(Arc::new(RetentionSweep {
            db: db.clone(),
            blobs: blobs.clone(),
            config: config.retention.clone(),
            metrics: metrics.clone(),
        }));
        let every = Duration::from_secs(config.retention.sweep_interval_secs);
        crons.push(cron("retention.sweep", every, retention::SWEEP));
    }
    tracing::info!(replica = %me.name, queues = ?config.jobs.queues.keys().collect::<Vec<_>>(), enabled = config.jobs.enabled, "job queue");
    let crons = Crons { list: crons, leader: me.leadership };
    Ok(JobsRuntime::start(db.clone(), me.name, &config.jobs, workers, crons, metrics.clone(), shutdown)
        .await?)
}

/// The lock that elects the replica running the singleton loops (`[leader] lock`).
async fn leader_lock(
    config: &Config,
    db: &Db,
    client: Option<&kube::Client>,
    identity: &str,
) -> anyhow::Result<Box<dyn leader::LeaderLock>> {
    Ok(match (config.leader_lock, client) {
        (LeaderLockKind::Lease, Some(client)) => {
            let k = &config.kubernetes;
            let settings = leader::lease::LeaseSettings {
                namespace: k.namespace.clone(),
                lease_name: k.lease_name.clone(),
                identity: identity.to_owned(),
                duration_secs: k.lease_duration_secs,
                grace_secs: k.lease_grace_secs,
                field_manager: k.field_manager.clone(),
            };
            tracing::info!(lease = %k.lease_name, namespace = %k.namespace, %identity, "leader election by kubernetes lease");
            Box::new(
                leader::lease::LeaseLock::new(client.clone(), &settings)
                    .await
                    .context("cannot set up the leader lease")?,
            )
        }
        (LeaderLockKind::Postgres, _) => {
            let pool = db.postgres_pool().context("leader.lock = \"postgres\" needs postgresql")?.clone();
            tracing::info!(%identity, "leader election by postgresql advisory lock");
            Box::new(leader::postgres::AdvisoryLock::new(
                pool,
                leader::postgres::SINGLETONS_KEY,
                Duration::from_secs(2),
            ))
        }
        (LeaderLockKind::Lease, None) => anyhow::bail!("leader.lock = \"lease\" needs kubernetes.enabled"),
        (LeaderLockKind::None, _) => Box::new(leader::Always::new()),
    })
}

/// When the first certificate of a PEM file expires (Unix seconds).
fn certificate_not_after(path: &Path) -> anyhow::Result<i64> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{} is not a PEM certificate: {e}", path.display()))?;
    let cert = pem.parse_x509().map_err(|e| anyhow::anyhow!("{} does not parse: {e}", path.display()))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Exports when the gateway's certificate and the agents' CA expire (the alert rules warn 14
/// days ahead).
fn export_certificate_expiry(tls: &TlsConfig, metrics: &Metrics) {
    let files = [("grpc", Some(&tls.cert_path)), ("client_ca", tls.client_ca_path.as_ref())];
    for (name, path) in files {
        let Some(path) = path else { continue };
        match certificate_not_after(path) {
            Ok(at) => {
                let labels =
                    lanewatch_control_plane::metrics::CertificateLabels { certificate: name.to_owned() };
                metrics.tls_certificate_expiry.get_or_create(&labels).set(at);
            }
            Err(e) => tracing::warn!(certificate = name, error = %e, "cannot read the certificate's expiry"),
        }
    }
}

fn server_tls(
    tls: &TlsConfig,
    require_client_cert: bool,
) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    let read =
        |p: &Path| std::fs::read(p).with_context(|| format!("cannot read grpc.tls file {}", p.display()));
    let identity = tonic::transport::Identity::from_pem(read(&tls.cert_path)?, read(&tls.key_path)?);
    let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca_path {
        config = config
            .client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?))
            .client_auth_optional(!require_client_cert);
    }
    Ok(config)
}

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        r = tokio::signal::ctrl_c() => {
            r.context("cannot listen for SIGINT")?;
            tracing::info!(signal = "SIGINT", "signal received");
        }
    }
    Ok(())
}

/// Writes `{"grpc_addr": .., "http_addr": ..}` to a temp file beside `path`, then renames it.
fn write_ready_file(path: &Path, grpc_addr: SocketAddr, http_addr: SocketAddr) -> anyhow::Result<()> {
    let body = serde_json::json!({ "grpc_addr": grpc_addr.to_string(), "http_addr": http_addr.to_string() });
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, body.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
