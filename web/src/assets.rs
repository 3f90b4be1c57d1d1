//! The static files every page loads, compiled into the binary: the shared stylesheet and
//! script (`web/assets/`) and the vendored htmx with its SSE extension (`web/vendor/`, versions
//! and hashes in its README). Nothing is fetched from elsewhere at run time.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `(name, body, mime)` of every asset, served under `/assets/{name}`.
pub const ASSETS: &[(&str, &str, &str)] = &[
    ("htmx.min.js", include_str!("../vendor/htmx.min.js"), "text/javascript"),
    ("htmx-sse.js", include_str!("../vendor/htmx-sse.js"), "text/javascript"),
    ("lanewatch.css", include_str!("../assets/lanewatch.css"), "text/css"),
    ("lanewatch.js", include_str!("../assets/lanewatch.js"), "text/javascript"),
];

/// The handler of `/assets/{name}`.
pub async fn serve(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, body, mime)) => (
            [
                (header::CONTENT_TYPE, format!("{mime}; charset=utf-8")),
                (header::CACHE_CONTROL, "public, max-age=3600".to_owned()),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no asset {name:?}\n")).into_response(),
    }
}

/// The `<head>` lines that load them.
pub fn head() -> maud::Markup {
    maud::html! {
        link rel="stylesheet" href="/assets/lanewatch.css";
        script src="/assets/htmx.min.js" defer {}
        script src="/assets/htmx-sse.js" defer {}
        script src="/assets/lanewatch.js" defer {}
    }
}
