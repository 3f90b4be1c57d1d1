//! When the console's live views render again: a [`Wake`] over the event bus (the events a view
//! cares about: a capture stored, an agent's session opening or closing, a new config version),
//! jobs inserted through this process, and the view's period for what only heartbeats change
//! (backlog, last seen, components). The streams themselves are `lanewatch_web::live`: fragments
//! rendered on the server, sent only when changed, ended when the control plane drains.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::response::Response;
use tokio::sync::Notify;
use tokio::sync::broadcast::{self, error::RecvError};

use super::Console;
use crate::events::{Event, EventKind};

/// When a view renders again.
pub struct Wake {
    /// Bus events that concern the view.
    pub on_event: fn(&EventKind) -> bool,
    /// Jobs inserted through this process.
    pub on_jobs: bool,
    /// At the latest after this long.
    pub every: Duration,
    /// Set when a bus event (not the period) woke the view: for a view that re-reads some of its
    /// data only when an event says it changed.
    pub event_seen: Option<Arc<AtomicBool>>,
}

struct BusWake {
    wake: Wake,
    events: broadcast::Receiver<Event>,
    jobs: Arc<Notify>,
}

impl lanewatch_web::live::Wake for BusWake {
    async fn changed(&mut self) {
        let on_event = self.wake.on_event;
        let events = &mut self.events;
        let relevant = async move {
            loop {
                match events.recv().await {
                    Ok(event) if on_event(&event.kind) => return,
                    Ok(_) => {}
                    // fell behind: something surely changed
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep(self.wake.every) => {}
            () = relevant => {
                if let Some(seen) = &self.wake.event_seen {
                    seen.store(true, Ordering::SeqCst);
                }
            }
            () = self.jobs.notified(), if self.wake.on_jobs => {}
        }
    }
}

/// The SSE response of a view: `render` returns its fragments as (event name, HTML).
pub fn stream<F, Fut>(console: &Console, wake: Wake, render: F) -> Response
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Vec<(&'static str, String)>> + Send + 'static,
{
    let wake = BusWake { wake, events: console.events.subscribe(), jobs: console.db.jobs_inserted() };
    lanewatch_web::live::stream(render, wake, console.shutdown.clone())
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
