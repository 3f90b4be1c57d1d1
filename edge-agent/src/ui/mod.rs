//! The agent's local web UI (`[local_ui]`, `127.0.0.1:8090` by default), to configure and debug
//! the site live from the roadside cabinet: the same model as the fleet console (pages rendered
//! with `maud`, live fragments over SSE swapped by the vendored htmx, shared through
//! `lanewatch_web`), served by the agent itself.
//!
//! - `auth`: who may look: on loopback without a password anyone on the box; with a password (and
//!   always off loopback, where TLS is required too) a login checked against the argon2 hash, in
//!   sessions held in memory; CSRF on every change; login attempts limited per address.
//! - `pages`: the live site view (the LIDAR profile with the learnt road, lane zones and occupied
//!   lanes; entries and exits; counters), the cameras (the latest anonymized frame of each, with
//!   its seat-section polygons and face boxes; only frames vision released, see `view`),
//!   components (the supervision tree, restart / pause / resume, live logs with a level filter),
//!   buffer and uplink (fill per value class, oldest capture, link, drain rate, receipts).
//! - `calibrate`: seat-section polygons and lane zones edited and applied through the staged
//!   config path, as a config pushed by the control plane is.
//!
//! `/metrics` (Prometheus, `crate::metrics`) is served on the same listener, without a login.
//!
//! The UI outlives config generations: it reads the running generation's registry and
//! supervisor through a `watch` that `main` updates at each start.

mod auth;
mod calibrate;
mod pages;
mod serve;

pub use auth::hash_password;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::{mpsc, watch};

use crate::buffer::Buffer;
use crate::config::{AgentConfig, LocalUiConfig};
use crate::logs::Logs;
use crate::supervisor::{Registry, SupervisorHandle};
use crate::view::SiteView;

/// The running generation, as the UI reaches it.
#[derive(Clone)]
pub struct Current {
    pub registry: Registry,
    pub supervisor: SupervisorHandle,
    pub config: Arc<AgentConfig>,
    /// The uplink's upload hold (pausing the uplink holds uploads; the session stays open).
    pub uploads_paused: Arc<AtomicBool>,
}

/// What the UI reads and acts through.
#[derive(Clone)]
pub struct UiDeps {
    pub view: SiteView,
    pub logs: Logs,
    pub buffer: Buffer,
    pub current: watch::Receiver<Option<Current>>,
    /// The config file a calibration rewrites, and the channel that applies a staged file.
    pub config_path: PathBuf,
    pub reload: mpsc::UnboundedSender<u64>,
    /// Served at `/metrics` (no login: Prometheus scrapes it; it holds no images or personal
    /// data).
    pub metrics: Arc<crate::metrics::AgentMetrics>,
}

#[derive(Clone)]
struct Ui {
    deps: UiDeps,
    auth: Arc<auth::Auth>,
    shutdown: watch::Receiver<bool>,
}

impl Ui {
    fn current(&self) -> Option<Current> {
        self.deps.current.borrow().clone()
    }
}

/// Binds and serves the UI until `shutdown`; the address it listens on.
pub async fn start(
    config: &LocalUiConfig,
    deps: UiDeps,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let auth = Arc::new(auth::Auth::new(config)?);
    let ui = Ui { deps, auth, shutdown: shutdown.clone() };
    let app = router(ui);
    serve::serve(config, app, shutdown).await
}

fn router(ui: Ui) -> Router {
    let metrics = ui.deps.metrics.clone();
    let scrape = Router::new().route(
        "/metrics",
        get(move |headers: axum::http::HeaderMap| async move {
            lanewatch_web::exposition::respond(&headers, metrics.render())
        }),
    );
    Router::new()
        .route("/", get(pages::site))
        .route("/live/site", get(pages::site_live))
        .route("/cameras", get(pages::cameras))
        .route("/live/cameras", get(pages::cameras_live))
        .route("/cameras/{id}/frame.jpg", get(pages::frame))
        .route("/components", get(pages::components))
        .route("/live/components", get(pages::components_live))
        .route("/components/command", post(pages::command))
        .route("/buffer", get(pages::buffer))
        .route("/live/buffer", get(pages::buffer_live))
        .route("/calibration", get(calibrate::page).post(calibrate::apply))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/assets/{name}", get(lanewatch_web::assets::serve))
        .layer(axum::middleware::from_fn_with_state(ui.clone(), auth::local_session))
        .with_state(ui)
        .merge(scrape)
}
