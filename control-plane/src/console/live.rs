//! Server push for console pages, in the manner of LiveView: an SSE stream per open view that
//! renders the view's live fragments on the server and sends a fragment only when its HTML
//! changed; htmx's SSE extension swaps it into the element that names the event
//! (`sse-swap="<name>"`). The browser never polls.
//!
//! A stream renders again when something relevant happens: an event on the bus that the view
//! cares about (a capture stored, an agent's session opening or closing, a new config version),
//! jobs inserted through this process, or at the latest after the view's period, for what only
//! heartbeats change (backlog, last seen, components). Bursts are coalesced, and every stream
//! ends when the control plane starts draining, so that a graceful shutdown never waits on an
//! open page.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;

use super::Console;
use crate::events::EventKind;

/// Pause after a wake-up before rendering, so that a burst of events renders once.
const COALESCE: Duration = Duration::from_millis(40);

/// When a view renders again.
#[derive(Clone, Copy)]
pub struct Wake {
    /// Bus events that concern the view.
    pub on_event: fn(&EventKind) -> bool,
    /// Jobs inserted through this process.
    pub on_jobs: bool,
    /// At the latest after this long.
    pub every: Duration,
}

/// The SSE response of a view: `render` returns its fragments as (event name, HTML).
pub fn stream<F, Fut>(console: &Console, wake: Wake, mut render: F) -> Response
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Vec<(&'static str, String)>> + Send + 'static,
{
    let mut events = console.events.subscribe();
    let jobs = console.db.jobs_inserted();
    let mut shutdown = console.shutdown.clone();
    let body = async_stream::stream! {
        let mut last: HashMap<&'static str, String> = HashMap::new();
        while !*shutdown.borrow() {
            for (name, html) in render().await {
                if last.get(name) != Some(&html) {
                    yield Ok::<_, Infallible>(Event::default().event(name).data(html.as_str()));
                    last.insert(name, html);
                }
            }
            let relevant = async {
                loop {
                    match events.recv().await {
                        Ok(event) if (wake.on_event)(&event.kind) => return,
                        Ok(_) => {}
                        // fell behind: something surely changed
                        Err(RecvError::Lagged(_)) => return,
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wake.every) => {}
                () = relevant => {}
                () = jobs.notified(), if wake.on_jobs => {}
                _ = shutdown.changed() => break,
            }
            tokio::time::sleep(COALESCE).await;
        }
    };
    Sse::new(body).keep_alive(KeepAlive::default()).into_response()
}

/// Events that change the fleet overview and agent pages.
pub fn fleet_event(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::AgentStatus { .. } | EventKind::AgentRevoked { .. } | EventKind::SiteConfigChanged { .. }
    )
}

/// Events that change capture lists and the review queue.
pub fn capture_event(kind: &EventKind) -> bool {
    matches!(kind, EventKind::CaptureStored { .. })
}

/// Events that change a site's page (its rollout and its chart of the day).
pub fn site_event(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::SiteConfigChanged { .. } | EventKind::AgentStatus { .. } | EventKind::CaptureStored { .. }
    )
}

/// No bus event: the period alone.
pub fn no_event(_: &EventKind) -> bool {
    false
}
