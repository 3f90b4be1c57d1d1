//! Who may use the local UI. Without `local_ui.password_hash` (allowed on loopback only) anyone
//! who can reach the loopback port is the local admin: the first request gets a session at once.
//! With a hash, a login checks the password against it (argon2, off the async threads) and
//! opens a session. Sessions live in memory (one process, bounded), expire after
//! `session_ttl_secs`, and carry the CSRF token every state-changing request must send;
//! login attempts are limited per client address (`governor`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use governor::{DefaultKeyedRateLimiter, Quota};
use lanewatch_web::security::{self, cookie, digest, random_token};
use maud::html;

use super::Ui;
use crate::config::LocalUiConfig;

const COOKIE: &str = "lw_agent_session";
/// Sessions kept at most; past it the oldest goes.
const MAX_SESSIONS: usize = 256;

struct Session {
    csrf: String,
    expires: Instant,
    created: Instant,
}

pub struct Auth {
    password_hash: Option<String>,
    ttl: Duration,
    secure: bool,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    sessions: Mutex<HashMap<String, Session>>,
}

/// The viewer of a request.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub csrf: String,
    /// Logged in with the password (a logout button), rather than the loopback admin.
    pub logged_in: bool,
}

impl Auth {
    pub fn new(config: &LocalUiConfig) -> anyhow::Result<Self> {
        if let Some(hash) = &config.password_hash {
            let parsed = PasswordHash::new(hash)
                .map_err(|e| anyhow::anyhow!("local_ui.password_hash: not an argon2 hash: {e}"))?;
            anyhow::ensure!(
                parsed.hash.is_some() && parsed.salt.is_some(),
                "local_ui.password_hash: not an argon2 hash: it has no salt or no hash (lanewatch-agent hash-password makes one)"
            );
        }
        let per_minute = NonZeroU32::new(config.login_attempts_per_minute).unwrap_or(NonZeroU32::MIN);
        Ok(Self {
            password_hash: config.password_hash.clone(),
            ttl: Duration::from_secs(config.session_ttl_secs),
            secure: config.tls.is_some(),
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_minute(per_minute)),
            sessions: Mutex::default(),
        })
    }

    fn open_session(&self) -> (String, String) {
        let (cookie, csrf) = (random_token(), random_token());
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions
            .insert(digest(&cookie), Session { csrf: csrf.clone(), expires: now + self.ttl, created: now });
        (cookie, csrf)
    }

    fn session(&self, headers: &HeaderMap) -> Option<Viewer> {
        let value = cookie(headers, COOKIE)?;
        let sessions = self.sessions.lock().unwrap();
        let s = sessions.get(&digest(value)).filter(|s| s.expires > Instant::now())?;
        Some(Viewer { csrf: s.csrf.clone(), logged_in: self.password_hash.is_some() })
    }

    fn set_cookie(&self, value: &str, max_age: u64) -> HeaderValue {
        security::set_cookie(COOKIE, value, max_age, self.secure)
    }

    /// Whether `password` is the admin password.
    async fn verify(&self, password: String) -> bool {
        let Some(hash) = self.password_hash.clone() else { return false };
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .unwrap_or(false)
    }
}

/// Hashes a password for `local_ui.password_hash` (`lanewatch-agent hash-password`).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let salt = SaltString::encode_b64(&bytes).map_err(|e| anyhow::anyhow!("cannot make a salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

/// Without a password, the first request of a browser opens its session (the loopback admin).
pub async fn local_session(State(ui): State<Ui>, mut request: Request, next: Next) -> Response {
    if ui.auth.password_hash.is_some() || ui.auth.session(request.headers()).is_some() {
        return next.run(request).await;
    }
    let (value, _) = ui.auth.open_session();
    if let Ok(v) = HeaderValue::from_str(&format!("{COOKIE}={value}")) {
        request.headers_mut().insert(header::COOKIE, v);
    }
    let mut response = next.run(request).await;
    response.headers_mut().append(header::SET_COOKIE, ui.auth.set_cookie(&value, ui.auth.ttl.as_secs()));
    response
}

impl FromRequestParts<Ui> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ui: &Ui) -> Result<Self, Self::Rejection> {
        if let Some(viewer) = ui.auth.session(&parts.headers) {
            return Ok(viewer);
        }
        if security::wants_fragment(parts) {
            return Err((StatusCode::UNAUTHORIZED, "log in first\n").into_response());
        }
        let next = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        Err(Redirect::to(&format!("/login?next={}", lanewatch_web::html::encode(next))).into_response())
    }
}

/// A viewer whose request may change something: same origin and the session's CSRF token.
pub struct Mutating;

impl FromRequestParts<Ui> for Mutating {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ui: &Ui) -> Result<Self, Self::Rejection> {
        let viewer = Viewer::from_request_parts(parts, ui).await?;
        security::check_csrf(&parts.headers, &viewer.csrf)
            .map_err(|r| (StatusCode::FORBIDDEN, format!("{}\n", r.0)).into_response())?;
        Ok(Self)
    }
}

fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p,
        _ => "/",
    }
}

fn login_form(next: &str, error: Option<&str>) -> Html<String> {
    let body = html! {
        @if let Some(e) = error { (lanewatch_web::html::error_box(e)) }
        form.login method="post" action="/login" {
            input type="hidden" name="next" value=(next);
            label for="password" { "Admin password" }
            input #password type="password" name="password" autocomplete="current-password" required autofocus;
            button type="submit" { "Log in" }
        }
        p.muted { "The password is set on the device as local_ui.password_hash (lanewatch-agent hash-password)." }
    };
    Html(lanewatch_web::shell::bare("Lanewatch agent", "Log in to this agent", body).into_string())
}

#[derive(serde::Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login_page(axum::extract::Query(q): axum::extract::Query<LoginQuery>) -> Response {
    login_form(local_path(q.next.as_deref()), None).into_response()
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    password: String,
    next: Option<String>,
}

pub async fn login(State(ui): State<Ui>, request: Request) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(a)| a.ip());
    let headers = request.headers().clone();
    let form = match axum::Form::<LoginForm>::from_request(request, &()).await {
        Ok(axum::Form(f)) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let next = local_path(form.next.as_deref()).to_owned();
    if let Err(r) = security::same_origin(&headers) {
        return (StatusCode::FORBIDDEN, format!("{}\n", r.0)).into_response();
    }
    if ui.auth.password_hash.is_none() {
        return Redirect::to(&next).into_response();
    }
    if let Err(not_until) = ui.auth.limiter.check_key(&ip) {
        let wait = not_until
            .wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()))
            .as_secs()
            .max(1);
        tracing::warn!(%ip, "local ui login throttled");
        let message = format!("too many login attempts from {ip}: try again in {wait} s");
        let mut response = (StatusCode::TOO_MANY_REQUESTS, login_form(&next, Some(&message))).into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return response;
    }
    ui.auth.limiter.retain_recent();
    if !ui.auth.verify(form.password).await {
        tracing::warn!(%ip, "local ui login refused: wrong password");
        return (StatusCode::UNAUTHORIZED, login_form(&next, Some("wrong password"))).into_response();
    }
    tracing::info!(%ip, "local ui login");
    let (value, _) = ui.auth.open_session();
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(header::SET_COOKIE, ui.auth.set_cookie(&value, ui.auth.ttl.as_secs()));
    response
}

pub async fn logout(State(ui): State<Ui>, _: Mutating, headers: HeaderMap) -> Response {
    if let Some(value) = cookie(&headers, COOKIE) {
        ui.auth.sessions.lock().unwrap().remove(&digest(value));
    }
    let mut response = if headers.contains_key("hx-request") {
        (StatusCode::OK, [("HX-Redirect", "/login")]).into_response()
    } else {
        Redirect::to("/login").into_response()
    };
    response.headers_mut().insert(header::SET_COOKIE, ui.auth.set_cookie("", 0));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(hash: Option<String>) -> LocalUiConfig {
        LocalUiConfig { password_hash: hash, ..LocalUiConfig::default() }
    }

    #[tokio::test]
    async fn the_password_is_checked_against_its_argon2_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let auth = Auth::new(&config(Some(hash))).unwrap();
        assert!(auth.verify("correct horse".into()).await);
        assert!(!auth.verify("wrong".into()).await);
        assert!(
            Auth::new(&config(Some("$argon2id$nonsense".into()))).is_err(),
            "a broken hash is refused at start"
        );
    }

    #[test]
    fn sessions_are_found_by_their_cookie_and_bounded() {
        let auth = Auth::new(&config(None)).unwrap();
        let (cookie, csrf) = auth.open_session();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("{COOKIE}={cookie}")).unwrap());
        assert_eq!(auth.session(&h).map(|v| v.csrf), Some(csrf));
        for _ in 0..MAX_SESSIONS + 10 {
            auth.open_session();
        }
        assert_eq!(auth.sessions.lock().unwrap().len(), MAX_SESSIONS);
        assert!(auth.session(&h).is_none(), "the oldest session went first");
    }
}
