//! The local UI's pages and their live streams: the site (scan profile plot, lane entries and
//! exits, counters), the cameras (latest released frames with section polygons and face boxes),
//! the components (supervision tree, restart / pause / resume, live logs) and the buffer and
//! uplink. Frames are served from `view` only, which holds nothing but vision's released output.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use lanewatch_web::html::{ago, badge, bytes, encode, error_box, ok_box, time};
use lanewatch_web::live::{self, OnWatch};
use lanewatch_web::shell::Shell;
use maud::{Markup, html};
use serde::Deserialize;

use super::auth::{Mutating, Viewer};
use super::{Current, Ui};
use crate::state::{ComponentState, UplinkState};
use crate::supervisor::ComponentSnapshot;
use crate::view::ScanProfile;

const NAV: &[(&str, &str)] = &[
    ("/", "Site"),
    ("/cameras", "Cameras"),
    ("/components", "Components"),
    ("/buffer", "Buffer & uplink"),
    ("/calibration", "Calibration"),
];

/// A whole page of the local UI.
pub fn page(ui: &Ui, title: &str, viewer: &Viewer, active: &str, body: Markup) -> Response {
    let who = ui
        .current()
        .map(|c| format!("{} · site {}", c.config.agent_id, c.config.site_id))
        .unwrap_or_default();
    let shell = Shell {
        product: "Lanewatch agent",
        nav: NAV,
        csrf: &viewer.csrf,
        who: html! { (who) },
        logout: viewer.logged_in,
    };
    Html(shell.page(title, active, body).into_string()).into_response()
}

fn snapshots(ui: &Ui) -> Vec<ComponentSnapshot> {
    let mut s = ui.current().map(|c| c.registry.snapshots()).unwrap_or_default();
    s.sort_by(|a, b| a.name.cmp(&b.name));
    s
}

fn state_of<T>(snaps: &[ComponentSnapshot], pick: impl Fn(&ComponentState) -> Option<T>) -> Option<T> {
    snaps.iter().find_map(|s| pick(&s.state))
}

// ---- site -------------------------------------------------------------------------------------

const PLOT_W: f64 = 720.0;
const PLOT_H: f64 = 240.0;

/// The scan profile: echoes, the learnt road, lane zones (occupied ones shaded) and the scanner.
pub fn scan_plot(p: &ScanProfile) -> Markup {
    let road_w = f64::from(p.lanes.max(1)) * p.lane_width_m;
    let max_h = p.points.iter().map(|(_, z)| f64::from(*z)).fold(4.0_f64, f64::max).min(8.0);
    let x = |y: f64| 20.0 + (1.0 - y / road_w) * (PLOT_W - 40.0);
    let yz = |z: f64| PLOT_H - 20.0 - z / max_h * (PLOT_H - 40.0);
    let road: String = p
        .road
        .iter()
        .map(|(y, z)| format!("{:.1},{:.1}", x(f64::from(*y)), yz(f64::from(*z))))
        .collect::<Vec<_>>()
        .join(" ");
    let occupied = p.occupied.iter().filter(|o| **o).count();
    let label = format!(
        "LIDAR scan across {} lanes: {} echoes, {} lane(s) occupied{}",
        p.lanes,
        p.points.len(),
        occupied,
        if p.degraded { ", degraded" } else { "" }
    );
    html! {
        figure.chart #scan-figure {
            svg viewBox={ "0 0 " (PLOT_W) " " (PLOT_H) } role="img" aria-label=(label) width="100%" {
                @for lane in 0..p.lanes {
                    @let (lo, hi) = (f64::from(lane) * p.lane_width_m, f64::from(lane + 1) * p.lane_width_m);
                    @let busy = p.occupied.get(lane as usize).copied().unwrap_or(false);
                    rect x=(format!("{:.1}", x(hi))) y="10" width=(format!("{:.1}", x(lo) - x(hi))) height=(PLOT_H - 30.0)
                        fill=(if busy { "#1f6f3255" } else { "#ffffff08" }) stroke="#2e3a47" data-lane=(lane) {}
                    text x=(format!("{:.1}", (x(lo) + x(hi)) / 2.0 - 14.0)) y="24" fill="#9aa7b4" font-size="12" { "lane " (lane) }
                }
                polyline points=(road) fill="none" stroke="#9aa7b4" stroke-dasharray="4 3" {}
                @for (y, z) in &p.points {
                    circle cx=(format!("{:.1}", x(f64::from(*y)))) cy=(format!("{:.1}", yz(f64::from(*z)))) r="1.6" fill="#79b8ff" {}
                }
            }
            figcaption {
                span.legend { span.swatch style="background:#79b8ff" {} "echoes" }
                span.legend { span.swatch style="background:#9aa7b4" {} "learnt empty road" }
                span.legend { span.swatch style="background:#1f6f32" {} "lane with a vehicle" }
                @if p.road.is_empty() { span.legend { "learning the empty road…" } }
                @if p.degraded { span.legend.error-text { "degraded: most beams without echo" } }
            }
        }
    }
}

fn counters(ui: &Ui, snaps: &[ComponentSnapshot]) -> Markup {
    let scan = ui.deps.view.scan();
    let per_min = ui.deps.view.exits_per_lane(scan.lanes, chrono::Duration::seconds(60), Utc::now());
    let vision = state_of(snaps, |s| if let ComponentState::Vision(v) = s { Some(v.clone()) } else { None });
    let buffer = ui.deps.buffer.stats();
    html! {
        dl.stats {
            @for (lane, n) in per_min.iter().enumerate() {
                div data-lane=(lane) { dt { "Lane " (lane) ", vehicles/min" } dd { (n) } }
            }
            div { dt { "Captures buffered since start" } dd #captures-count { (buffer.appended) } }
            @if let Some(v) = &vision {
                div { dt { "Violation candidates" } dd { (v.violation_candidates) } }
                div { dt { "Quarantined" } dd { (v.quarantined) } }
            } @else {
                div { dt { "Vision" } dd { "off" } }
            }
        }
    }
}

fn lane_events(ui: &Ui) -> Markup {
    let events = ui.deps.view.events(12);
    html! {
        @if events.is_empty() { li.muted { "No vehicles yet." } }
        @for e in events.iter().rev() {
            li { (time(&e.at)) " lane " (e.lane) " " @if e.entered { "entered" } @else { "left" }
                 @if let Some(c) = e.class { " (" (format!("{c:?}").to_lowercase()) ")" } }
        }
    }
}

pub async fn site(State(ui): State<Ui>, viewer: Viewer) -> Response {
    let snaps = snapshots(&ui);
    let body = html! {
        div hx-ext="sse" sse-connect="/live/site" {
            div #counters sse-swap="counters" { (counters(&ui, &snaps)) }
            h2 { "LIDAR profile" }
            div #scan sse-swap="scan" { (scan_plot(&ui.deps.view.scan())) }
            h2 { "Vehicles entering and leaving" }
            ul.logs #lane-events sse-swap="lane-events" tabindex="0" aria-label="Recent lane entries and exits, newest first" { (lane_events(&ui)) }
        }
    };
    page(&ui, "Site", &viewer, "/", body)
}

fn watch_view(ui: &Ui, every: Duration) -> OnWatch<u64> {
    OnWatch { rx: ui.deps.view.subscribe(), every }
}

pub async fn site_live(State(ui): State<Ui>, _viewer: Viewer) -> Response {
    let (u, wake) = (ui.clone(), watch_view(&ui, Duration::from_secs(1)));
    live::stream(
        move || {
            let u = u.clone();
            async move {
                let snaps = snapshots(&u);
                vec![
                    ("counters", counters(&u, &snaps).into_string()),
                    ("scan", scan_plot(&u.deps.view.scan()).into_string()),
                    ("lane-events", lane_events(&u).into_string()),
                ]
            }
        },
        wake,
        ui.shutdown.clone(),
    )
}

// ---- cameras ----------------------------------------------------------------------------------

/// Frames per second of each camera, from its frame counter between two renders.
#[derive(Default)]
struct FrameRates {
    last: std::collections::HashMap<String, (u64, std::time::Instant)>,
    rates: std::collections::HashMap<String, f64>,
}

impl FrameRates {
    fn update(&mut self, snaps: &[ComponentSnapshot]) {
        let now = std::time::Instant::now();
        for s in snaps {
            let ComponentState::Camera(c) = &s.state else { continue };
            match self.last.get(&s.name) {
                Some((frames, at)) if now - *at >= Duration::from_secs(2) => {
                    let fps = c.frames.saturating_sub(*frames) as f64 / (now - *at).as_secs_f64();
                    self.rates.insert(s.name.clone(), fps);
                    self.last.insert(s.name.clone(), (c.frames, now));
                }
                Some(_) => {}
                None => {
                    self.last.insert(s.name.clone(), (c.frames, now));
                }
            }
        }
    }
}

fn camera_cards(ui: &Ui, snaps: &[ComponentSnapshot], fps: &FrameRates) -> Markup {
    let frames = ui.deps.view.frames();
    let cameras: Vec<String> =
        ui.current().map(|c| c.config.cameras.iter().map(|c| c.id.clone()).collect()).unwrap_or_default();
    let vision_on = ui.current().is_some_and(|c| c.config.vision.is_some());
    html! {
        @if !vision_on {
            (error_box("Vision is off on this agent: frames are shown here only after anonymization, so none are shown."))
        }
        div.grid {
            @for id in &cameras {
                @let state = snaps.iter().find(|s| s.name == format!("acquire-{id}")).and_then(|s| if let ComponentState::Camera(c) = &s.state { Some(c.clone()) } else { None });
                @let rate = snaps.iter().find(|s| s.name == format!("acquire-{id}")).map_or(0.0, |s| s.rates.m1.processed_per_sec);
                @let frame_rate = fps.rates.get(&format!("acquire-{id}"));
                article.card data-camera=(id) {
                    @match frames.get(id) {
                        Some(f) => {
                            @let (w, h) = dimensions(&f.jpeg);
                            div.frame style="position:relative" {
                                img src={ "/cameras/" (encode(id)) "/frame.jpg?c=" (f.capture_id) } alt={ "Latest anonymized frame of camera " (id) } width=(w) height=(h);
                                svg.overlay viewBox={ "0 0 " (w) " " (h) } aria-hidden="true" style="position:absolute;inset:0;width:100%;height:100%" {
                                    @for (name, poly) in &f.sections {
                                        polygon points=(poly.iter().map(|[x, y]| format!("{x:.0},{y:.0}")).collect::<Vec<_>>().join(" ")) fill="#79b8ff22" stroke="#79b8ff" stroke-width="3" data-section=(name) {}
                                    }
                                    @for [x0, y0, x1, y1] in &f.faces {
                                        rect x=(x0) y=(y0) width=(x1 - x0) height=(y1 - y0) fill="none" stroke="#ff7b72" stroke-width="3" data-face="1" {}
                                    }
                                }
                            }
                        }
                        None => p.muted { "No released frame yet." },
                    }
                    span.meta {
                        strong { (id) } " · "
                        @if let Some(c) = &state { (badge(&format!("{:?}", c.state).to_uppercase())) " · " (c.frames) " frames, " (c.stalls) " stalls" }
                        " · " @match frame_rate { Some(f) => (format!("{f:.1} frames/s")), None => "frame rate: measuring…" }
                        " · " (format!("{rate:.1}")) " captures/s"
                        @if let Some(f) = frames.get(id) { br; span.muted { (f.faces.len()) " face(s) masked · " (time(&f.at)) } }
                    }
                }
            }
        }
    }
}

/// A JPEG's width and height (for the overlay's coordinates); 16:9 when unreadable.
fn dimensions(jpeg: &[u8]) -> (u32, u32) {
    image::ImageReader::new(std::io::Cursor::new(jpeg))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok())
        .unwrap_or((1280, 720))
}

pub async fn cameras(State(ui): State<Ui>, viewer: Viewer) -> Response {
    let snaps = snapshots(&ui);
    let body = html! {
        p.muted { "Each camera's latest frame that vision released: faces masked and re-checked. Blue: seat sections; red: the faces that were masked." }
        div hx-ext="sse" sse-connect="/live/cameras" { div #cameras sse-swap="cameras" { (camera_cards(&ui, &snaps, &FrameRates::default())) } }
    };
    page(&ui, "Cameras", &viewer, "/cameras", body)
}

pub async fn cameras_live(State(ui): State<Ui>, _viewer: Viewer) -> Response {
    let (u, wake) = (ui.clone(), watch_view(&ui, Duration::from_secs(2)));
    let mut fps = FrameRates::default();
    live::stream(
        move || {
            let snaps = snapshots(&u);
            fps.update(&snaps);
            let html = camera_cards(&u, &snaps, &fps).into_string();
            async move { vec![("cameras", html)] }
        },
        wake,
        ui.shutdown.clone(),
    )
}

/// A camera's latest released frame: anonymized bytes from the view, never a raw frame.
pub async fn frame(State(ui): State<Ui>, _viewer: Viewer, Path(id): Path<String>) -> Response {
    match ui.deps.view.frame(&id) {
        Some(f) => (
            [
                (header::CONTENT_TYPE, "image/jpeg".to_owned()),
                (header::CACHE_CONTROL, "no-store".to_owned()),
                // the capture these bytes are (the control plane stores it under this id)
                (header::HeaderName::from_static("x-capture-id"), f.capture_id.to_string()),
            ],
            f.jpeg.clone(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("camera {id:?} has no released frame\n")).into_response(),
    }
}

// ---- components -------------------------------------------------------------------------------

fn components_table(snaps: &[ComponentSnapshot]) -> Markup {
    html! {
        @for s in snaps {
            tr data-component=(s.name) {
                th scope="row" { (s.name) }
                td { (badge(&s.status.as_str().to_uppercase())) }
                td.num { (s.restarts) }
                td.num { @if let Some(i) = &s.inbox { (i.depth) " / " (i.capacity) } @else { "—" } }
                td.num { (format!("{:.0} %", s.rates.m1.busy_ratio * 100.0)) }
                td.num { (s.processed) }
                td { @if let Some(f) = &s.last_failure { span.muted { (f) } } }
            }
        }
    }
}

#[derive(Deserialize, Default, Clone)]
pub struct LogLevel {
    #[serde(default)]
    level: String,
}

fn logs_list(ui: &Ui, level: &str) -> Markup {
    let query = crate::logs::LogQuery {
        level: crate::logs::parse_level(level).ok(),
        limit: 60,
        ..Default::default()
    };
    let page = ui.deps.logs.ring.query(&query);
    html! {
        @if page.lines.is_empty() { li.muted { "No log lines at this level." } }
        @for l in page.lines.iter().rev() {
            li class=(l.level.as_str().to_lowercase()) { (time(&l.at)) " " strong { (l.level.as_str()) } " " span.muted { (l.target) } " " (l.message)
                @for (k, v) in &l.fields { " " span.muted { (k) "=" } (v) } }
        }
    }
}

pub async fn components(State(ui): State<Ui>, viewer: Viewer, Query(q): Query<LogLevel>) -> Response {
    let snaps = snapshots(&ui);
    let body = html! {
        div hx-ext="sse" sse-connect={ "/live/components?level=" (encode(&q.level)) } {
            form.command hx-post="/components/command" hx-target="#command-result" {
                label for="component" { "Component" }
                select #component name="component" { @for s in &snaps { option value=(s.name) { (s.name) } } }
                button type="submit" name="action" value="restart" { "Restart" }
                button type="submit" name="action" value="pause" { "Pause" }
                button type="submit" name="action" value="resume" { "Resume" }
            }
            div #command-result aria-live="polite" {}
            table.data #components {
                thead { tr { th scope="col" { "Component" } th scope="col" { "Status" } th scope="col" { "Restarts" } th scope="col" { "Inbox" } th scope="col" { "Busy" } th scope="col" { "Processed" } th scope="col" { "Last failure" } } }
                tbody sse-swap="components" { (components_table(&snaps)) }
            }
            h2 { "Recent logs" }
            form.filters method="get" {
                label for="level" { "Lowest level" }
                select #level name="level" { @for l in ["", "error", "warn", "info", "debug"] { option value=(l) selected[q.level == l] { @if l.is_empty() { "any" } @else { (l) } } } }
                button type="submit" { "Show" }
            }
            ul.logs #logs sse-swap="logs" tabindex="0" aria-label="Recent log lines, newest first" { (logs_list(&ui, &q.level)) }
        }
    };
    page(&ui, "Components", &viewer, "/components", body)
}

pub async fn components_live(State(ui): State<Ui>, _viewer: Viewer, Query(q): Query<LogLevel>) -> Response {
    let rx = ui.current().map(|c| c.registry.subscribe());
    let u = ui.clone();
    let render = move || {
        let (u, level) = (u.clone(), q.level.clone());
        async move {
            vec![
                ("components", components_table(&snapshots(&u)).into_string()),
                ("logs", logs_list(&u, &level).into_string()),
            ]
        }
    };
    match rx {
        Some(rx) => {
            live::stream(render, OnWatch { rx, every: Duration::from_millis(500) }, ui.shutdown.clone())
        }
        None => live::stream(render, live::Every(Duration::from_millis(500)), ui.shutdown.clone()),
    }
}

#[derive(Deserialize)]
pub struct CommandForm {
    action: String,
    component: String,
}

/// Restart, pause or resume: what the control plane's commands do, through the same supervisor.
pub async fn command(
    State(ui): State<Ui>,
    _: Mutating,
    axum::Form(form): axum::Form<CommandForm>,
) -> Response {
    let Some(Current { supervisor, registry, uploads_paused, .. }) = ui.current() else {
        return Html(error_box("the agent is between configs: try again in a moment").into_string())
            .into_response();
    };
    let name = form.component;
    tracing::info!(component = %name, action = %form.action, "local ui command");
    let result = match (form.action.as_str(), name.as_str()) {
        ("pause", "uplink") => crate::uplink::set_uploads_paused(&uploads_paused, &registry, &name, true),
        ("resume", "uplink") => crate::uplink::set_uploads_paused(&uploads_paused, &registry, &name, false),
        ("restart", _) => supervisor.restart(&name).await.map(|()| format!("restarting {name}")),
        ("pause", _) => supervisor.pause(&name).await.map(|()| format!("pausing {name}")),
        ("resume", _) => supervisor.resume(&name).await.map(|()| format!("resuming {name}")),
        (other, _) => Err(format!("unknown action {other:?}: restart, pause or resume")),
    };
    Html(
        match result {
            Ok(m) => ok_box(&m),
            Err(e) => error_box(&e),
        }
        .into_string(),
    )
    .into_response()
}

// ---- buffer and uplink ------------------------------------------------------------------------

fn buffer_view(ui: &Ui, snaps: &[ComponentSnapshot], drain_per_sec: Option<f64>) -> Markup {
    let stats = ui.deps.buffer.stats();
    let classes = ui.deps.buffer.by_class();
    let uplink: Option<UplinkState> =
        state_of(snaps, |s| if let ComponentState::Uplink(u) = s { Some(u.clone()) } else { None });
    let receipts = ui.deps.buffer.receipts(20).unwrap_or_default();
    let now = Utc::now();
    let fill = if stats.max_bytes > 0 { stats.bytes as f64 / stats.max_bytes as f64 } else { 0.0 };
    html! {
        dl.stats {
            div { dt { "Fill" } dd { (bytes(stats.bytes)) " of " (bytes(stats.max_bytes)) " (" (format!("{:.1} %", fill * 100.0)) ")" } }
            div { dt { "Captures waiting" } dd #buffered { (stats.captures) } }
            div { dt { "Uplink" } dd { @match &uplink { Some(u) => (badge(&format!("{:?}", u.state).to_uppercase())), None => "—" } } }
            div { dt { "Acked" } dd { @if let Some(u) = &uplink { (u.acked) } } }
            div { dt { "Drain rate" } dd { @match drain_per_sec { Some(r) => (format!("{r:.1}/s")), None => "measuring…" } } }
            div { dt { "Evicted, expired, damaged" } dd { (stats.evicted) ", " (stats.expired) ", " (stats.damaged) } }
        }
        @if let Some(reason) = uplink.as_ref().and_then(|u| u.refused.clone()) { (error_box(&format!("the control plane refused the session: {reason}"))) }
        table.data #classes {
            caption { "Buffered per value class" }
            thead { tr { th scope="col" { "Class" } th scope="col" { "Captures" } th scope="col" { "Bytes" } th scope="col" { "Share of bound" } th scope="col" { "Oldest" } } }
            tbody {
                @if classes.is_empty() { tr { td colspan="5" .muted { "The buffer is empty: everything was delivered." } } }
                @for c in &classes {
                    tr { th scope="row" { (c.class.as_str()) } td.num { (c.captures) } td.num { (bytes(c.bytes)) }
                         td.num { (format!("{:.1} %", if stats.max_bytes > 0 { c.bytes as f64 / stats.max_bytes as f64 * 100.0 } else { 0.0 })) }
                         td { (ago(&c.oldest, now)) } }
                }
            }
        }
        table.data #receipts {
            caption { "Deletion receipts waiting for the control plane (" (stats.receipts_pending) ")" }
            thead { tr { th scope="col" { "Capture" } th scope="col" { "Class" } th scope="col" { "Deleted" } th scope="col" { "Why" } th scope="col" { "Bytes" } } }
            tbody {
                @if receipts.is_empty() { tr { td colspan="5" .muted { "None." } } }
                @for r in &receipts {
                    tr { td { code { @if let Some(id) = r.capture_id { (id) } @else { "unknown" } } } td { @if let Some(c) = r.class { (c.as_str()) } }
                         td { (time(&r.deleted_at)) } td { (format!("{:?}", r.reason)) } td.num { (r.bytes) } }
                }
            }
        }
    }
}

pub async fn buffer(State(ui): State<Ui>, viewer: Viewer) -> Response {
    let snaps = snapshots(&ui);
    let body = html! {
        div hx-ext="sse" sse-connect="/live/buffer" { div #buffer-view sse-swap="buffer" { (buffer_view(&ui, &snaps, None)) } }
    };
    page(&ui, "Buffer and uplink", &viewer, "/buffer", body)
}

pub async fn buffer_live(State(ui): State<Ui>, _viewer: Viewer) -> Response {
    let u = ui.clone();
    // the drain rate: acks over the last window of at least 5 s
    let mut window: Option<(u64, std::time::Instant)> = None;
    let mut rate: Option<f64> = None;
    live::stream(
        move || {
            let snaps = snapshots(&u);
            let acked =
                state_of(&snaps, |s| if let ComponentState::Uplink(up) = s { Some(up.acked) } else { None });
            let now = std::time::Instant::now();
            match (window, acked) {
                (Some((before, at)), Some(a)) if now - at >= Duration::from_secs(5) => {
                    rate = Some(a.saturating_sub(before) as f64 / (now - at).as_secs_f64());
                    window = Some((a, now));
                }
                (None, Some(a)) => window = Some((a, now)),
                _ => {}
            }
            let html = buffer_view(&u, &snaps, rate).into_string();
            async move { vec![("buffer", html)] }
        },
        OnWatch { rx: ui.deps.buffer.subscribe(), every: Duration::from_secs(2) },
        ui.shutdown.clone(),
    )
}
