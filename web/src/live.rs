//! Server push in the manner of LiveView: one SSE stream per open view, which renders the view's
//! live fragments on the server and sends a fragment only when its HTML changed; htmx's SSE
//! extension swaps it into the element that names the event (`sse-swap="<name>"`). The browser
//! never polls.
//!
//! The caller says when to render again (a [`Wake`]: its bus events, its period); bursts are
//! coalesced, and the stream ends when `shutdown` turns true, so a graceful drain never waits on
//! an open page.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

/// Pause after a wake-up before rendering, so that a burst of events renders once.
const COALESCE: Duration = Duration::from_millis(40);

/// What a stream waits on between renders.
pub trait Wake: Send + 'static {
    /// Resolves when the view may have changed.
    fn changed(&mut self) -> impl Future<Output = ()> + Send + '_;
}

/// Wakes at a fixed period.
pub struct Every(pub Duration);

impl Wake for Every {
    fn changed(&mut self) -> impl Future<Output = ()> + Send + '_ {
        tokio::time::sleep(self.0)
    }
}

/// Wakes when a `watch` channel changes, or at the latest after a period.
pub struct OnWatch<T> {
    pub rx: watch::Receiver<T>,
    pub every: Duration,
}

impl<T: Send + Sync + 'static> Wake for OnWatch<T> {
    async fn changed(&mut self) {
        tokio::select! {
            _ = self.rx.changed() => {}
            () = tokio::time::sleep(self.every) => {}
        }
    }
}

/// The SSE response of a view: `render` returns its fragments as (event name, HTML).
pub fn stream<F, Fut, W>(mut render: F, mut wake: W, mut shutdown: watch::Receiver<bool>) -> Response
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Vec<(&'static str, String)>> + Send + 'static,
    W: Wake,
{
    let body = async_stream::stream! {
        let mut last: HashMap<&'static str, String> = HashMap::new();
        while !*shutdown.borrow() {
            for (name, html) in render().await {
                if last.get(name) != Some(&html) {
                    yield Ok::<_, Infallible>(Event::default().event(name).data(html.as_str()));
                    last.insert(name, html);
                }
            }
            tokio::select! {
                () = wake.changed() => {}
                _ = shutdown.changed() => break,
            }
            tokio::time::sleep(COALESCE).await;
        }
    };
    Sse::new(body).keep_alive(KeepAlive::default()).into_response()
}
