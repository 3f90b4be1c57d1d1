//! The fleet console at `/`: server-rendered pages (maud) made live by server push (SSE, swapped
//! in by the vendored htmx and its SSE extension), with no client-side application and no build
//! step. Every read and write goes through the GraphQL schema as the viewer's principal (`gql`),
//! so the console can do exactly what the viewer's key may do through the API, audited the same.
//!
//! - `session`: login with an API key → session cookie, anonymous loopback viewers, CSRF, login
//!   throttling.
//! - `live`: the SSE streams that push changed fragments.
//! - `layout`: the page shell and shared pieces; `charts`: inline SVG charts.
//! - pages: `fleet` (overview and agent detail), `captures` (browser, detail, review queue,
//!   evidence), `sites` (config editor, diff, push, rollback), `jobs` (what Oban Web offers),
//!   `admin` (keys, agencies, audit log, deletion records).

mod admin;
mod captures;
mod charts;
mod fleet;
mod gql;
mod inputs;
mod jobs;
mod layout;
mod live;
mod session;
mod sites;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use tokio::sync::watch;

use crate::db::Db;
use crate::error::Error;
use crate::events::Events;
use crate::graphql::LanewatchSchema;
pub use session::Viewer;

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    pub schema: LanewatchSchema,
    pub db: Db,
    pub events: Events,
    /// Viewers without a login act as an operator (`auth.allow_anonymous_local`).
    pub allow_anonymous: bool,
    /// Session cookies are `Secure` (the public URL is https).
    pub secure_cookies: bool,
    pub session_ttl: Duration,
    guards: Arc<session::Guards>,
    /// Ends the live streams when the control plane drains.
    shutdown: watch::Receiver<bool>,
}

/// The console's settings from the control plane's config.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    pub allow_anonymous: bool,
    pub secure_cookies: bool,
    pub session_ttl: Duration,
    pub login_attempts_per_minute: NonZeroU32,
}

impl Console {
    pub fn new(
        schema: LanewatchSchema,
        db: Db,
        events: Events,
        settings: &ConsoleSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            schema,
            db,
            events,
            allow_anonymous: settings.allow_anonymous,
            secure_cookies: settings.secure_cookies,
            session_ttl: settings.session_ttl,
            guards: Arc::new(session::Guards::new(settings.login_attempts_per_minute)),
            shutdown,
        }
    }

    /// Runs a GraphQL operation as the viewer.
    async fn api<T: serde::de::DeserializeOwned>(
        &self,
        viewer: &Viewer,
        query: &str,
        variables: serde_json::Value,
    ) -> Result<T, gql::ApiError> {
        gql::run(&self.schema, &viewer.principal, query, variables).await
    }
}

pub fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(fleet::overview))
        .route("/live/fleet", get(fleet::overview_live))
        .route("/agents/{id}", get(fleet::agent))
        .route("/live/agents/{id}", get(fleet::agent_live))
        .route("/agents/{id}/command", post(fleet::command))
        .route("/captures", get(captures::browse))
        .route("/live/captures", get(captures::browse_live))
        .route("/captures/{id}", get(captures::detail))
        .route("/review", get(captures::review))
        .route("/live/review", get(captures::review_live))
        .route("/review/{id}", post(captures::decide))
        .route("/violations/{id}/evidence", get(captures::evidence))
        .route("/sites", get(sites::list))
        .route("/sites/{id}", get(sites::site).post(sites::push))
        .route("/sites/{id}/rollback", post(sites::rollback))
        .route("/live/sites/{id}", get(sites::site_live))
        .route("/jobs", get(jobs::page))
        .route("/live/jobs", get(jobs::live))
        .route("/jobs/{id}", get(jobs::detail))
        .route("/jobs/batch", post(jobs::batch))
        .route("/queues", post(jobs::queue))
        .route("/admin", get(admin::page))
        .route("/admin/keys", post(admin::create_key))
        .route("/admin/keys/{id}/revoke", post(admin::revoke_key))
        .route("/admin/agencies", post(admin::create_agency))
        .route("/admin/jurisdiction", post(admin::set_jurisdiction))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/assets/{name}", get(lanewatch_web::assets::serve))
        .layer(axum::middleware::from_fn_with_state(console.clone(), anonymous_cookie))
        .with_state(console)
}

/// Gives a viewer without a session cookie an anonymous one, where anonymous viewing is allowed.
async fn anonymous_cookie(State(console): State<Console>, mut request: Request, next: Next) -> Response {
    if !console.allow_anonymous || session::cookie(request.headers(), session::COOKIE).is_some() {
        return next.run(request).await;
    }
    let value = session::anonymous_cookie();
    if let Ok(v) = HeaderValue::from_str(&format!("{}={value}", session::COOKIE)) {
        request.headers_mut().append(header::COOKIE, v);
    }
    let mut response = next.run(request).await;
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(&value, console.session_ttl.as_secs(), console.secure_cookies),
    );
    response
}

impl FromRequestParts<Console> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Self::Rejection> {
        match session::viewer(console, &parts.headers).await {
            Ok(Some(viewer)) => Ok(viewer),
            Ok(None) => Err(session::unauthenticated(parts)),
            Err(e) => Err(failure(&e)),
        }
    }
}

/// A viewer whose request may change state: same origin and the session's CSRF token.
pub struct Mutating(pub Viewer);

impl FromRequestParts<Console> for Mutating {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Self::Rejection> {
        let viewer = Viewer::from_request_parts(parts, console).await?;
        viewer.check_csrf(&parts.headers).map_err(|e| failure(&e))?;
        Ok(Self(viewer))
    }
}

/// An error as a plain response with the status of its kind.
fn failure(e: &Error) -> Response {
    (e.kind.http_status(), format!("{}\n", e.message)).into_response()
}

fn render(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

#[derive(serde::Deserialize, Default)]
struct LoginQuery {
    next: Option<String>,
}

/// Only local paths are followed after a login (never another site).
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p,
        _ => "/",
    }
}

fn login_form(next: &str, error: Option<&str>) -> Markup {
    layout::bare(
        "Log in",
        html! {
            @if let Some(e) = error { (layout::error_box(e)) }
            form.login method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label for="key" { "API key" }
                input #key type="password" name="key" autocomplete="current-password" required
                    placeholder="lw_…" autofocus;
                button type="submit" { "Log in" }
            }
            p.muted { "An administrator creates keys with " code { "lanewatch keys create" } " or on the Admin page. The key's role decides what you can see and do." }
        },
    )
}

async fn login_page(axum::extract::Query(q): axum::extract::Query<LoginQuery>) -> Response {
    render(login_form(local_path(q.next.as_deref()), None))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    key: String,
    next: Option<String>,
}

async fn login(
    State(console): State<Console>,
    session::ClientIp(ip): session::ClientIp,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let next = local_path(form.next.as_deref()).to_owned();
    if let Err(e) = session::same_origin(&headers) {
        return failure(&e);
    }
    if let Err(wait) = console.guards.admit_login(ip) {
        let message = format!("too many login attempts from {ip}: try again in {wait} s");
        tracing::info!(%ip, "console login throttled");
        let mut response =
            (StatusCode::TOO_MANY_REQUESTS, Html(login_form(&next, Some(&message)).into_string()))
                .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return response;
    }
    match session::login(&console, &form.key).await {
        Ok(cookie) => {
            let mut response = Redirect::to(&next).into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                session::set_cookie(&cookie, console.session_ttl.as_secs(), console.secure_cookies),
            );
            response
        }
        Err(e) => {
            tracing::info!(%ip, error = %e.message, "console login refused");
            (e.kind.http_status(), Html(login_form(&next, Some(&e.message)).into_string())).into_response()
        }
    }
}

async fn logout(State(console): State<Console>, Mutating(_): Mutating, headers: HeaderMap) -> Response {
    if let Some(value) = session::cookie(&headers, session::COOKIE)
        && let Err(e) = console.db.delete_console_session(&session::digest(value)).await
    {
        return failure(&Error::unavailable(format!("database unavailable: {e}")));
    }
    // htmx (which would follow a 303 inside its request) gets `HX-Redirect`, a full page load;
    // a plain form post gets the 303
    let builder = if headers.contains_key("hx-request") {
        Response::builder().status(StatusCode::OK).header("HX-Redirect", "/login")
    } else {
        Response::builder().status(StatusCode::SEE_OTHER).header(header::LOCATION, "/login")
    };
    let mut response = builder.body(Body::empty()).unwrap_or_default();
    response.headers_mut().insert(header::SET_COOKIE, session::set_cookie("", 0, console.secure_cookies));
    response
}
