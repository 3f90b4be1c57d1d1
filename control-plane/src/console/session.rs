//! Who is looking at the console: logins that exchange an API key for a session cookie, the
//! anonymous loopback viewer, CSRF tokens, and the per-client login rate limit.
//!
//! - **Logging in** checks the key exactly as GraphQL does (`auth::authenticate`), then stores a
//!   session row holding the SHA-256 of a fresh random cookie (`lw_session`), the key id and a
//!   CSRF token. Each request re-reads the key, so a revoked key ends its sessions at once.
//! - **Anonymous** viewers (only where `auth.allow_anonymous_local`, itself only on loopback) get
//!   a cookie `anon.<random>` and act as `Principal::anonymous_local()`, as GraphQL does without a
//!   key; their CSRF token is an HMAC of that cookie under a per-process secret.
//! - **CSRF:** every state-changing console request carries the session's token in the
//!   `X-CSRF-Token` header (htmx sends it from the page's `hx-headers`), compared in constant
//!   time; a request whose `Origin` names another host is refused before that. The cookie is
//!   `HttpOnly` and `SameSite=Strict`, and `Secure` when the public URL is https.
//! - **Login attempts** are limited per client address (`governor`), per replica.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use governor::{DefaultKeyedRateLimiter, Quota};
use hmac::{Hmac, Mac};
use lanewatch_web::security::{self, random_token};
pub use lanewatch_web::security::{cookie, digest};
use rand::RngCore;
use sha2::Sha256;

use super::Console;
use crate::auth::{self, Principal};
use crate::db::sessions::ConsoleSession;
use crate::error::Error;

pub const COOKIE: &str = "lw_session";
const ANON_PREFIX: &str = "anon.";

/// Login throttling and the anonymous viewers' CSRF secret.
pub struct Guards {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    anon_secret: [u8; 32],
}

impl Guards {
    pub fn new(login_attempts_per_minute: NonZeroU32) -> Self {
        let mut anon_secret = [0u8; 32];
        rand::rng().fill_bytes(&mut anon_secret);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_minute(login_attempts_per_minute)),
            anon_secret,
        }
    }

    /// Whether `ip` may try a login now; when not, in how many seconds it may.
    pub fn admit_login(&self, ip: IpAddr) -> Result<(), u64> {
        self.limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until
                .wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            wait.as_secs().max(1)
        })?;
        self.limiter.retain_recent();
        Ok(())
    }

    fn anon_csrf(&self, cookie: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.anon_secret).expect("hmac takes any key length");
        mac.update(cookie.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// The viewer of a console request: who they act as and the CSRF token of their session.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub principal: Principal,
    pub csrf: String,
    /// Logged in with a key (a logout button), rather than anonymous.
    pub logged_in: bool,
}

impl Viewer {
    /// Checks a state-changing request: same origin, and the session's CSRF token in the header.
    pub fn check_csrf(&self, headers: &HeaderMap) -> Result<(), Error> {
        security::check_csrf(headers, &self.csrf).map_err(refused)
    }
}

fn refused(r: security::Refused) -> Error {
    Error::new(crate::error::ErrorKind::PermissionDenied, r.0)
}

/// Refuses a request whose `Origin` names another host.
pub fn same_origin(headers: &HeaderMap) -> Result<(), Error> {
    security::same_origin(headers).map_err(refused)
}

/// The session cookie's `Set-Cookie`; `max_age_secs` 0 deletes it.
pub fn set_cookie(value: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    security::set_cookie(COOKIE, value, max_age_secs, secure)
}

/// Resolves the session cookie of a request into its viewer; `None` when the request has no
/// live session and anonymous viewing is off.
pub async fn viewer(console: &Console, headers: &HeaderMap) -> Result<Option<Viewer>, Error> {
    // where anonymous viewing is allowed, a cookie that is no (longer a) session is the
    // anonymous viewer's: an expired login falls back to what loopback may see anyway
    let anonymous = |value: &str| {
        console.allow_anonymous.then(|| Viewer {
            principal: Principal::anonymous_local(),
            csrf: console.guards.anon_csrf(value),
            logged_in: false,
        })
    };
    match cookie(headers, COOKIE) {
        Some(value) if value.starts_with(ANON_PREFIX) => Ok(anonymous(value)),
        Some(value) => {
            let now = Utc::now();
            let session = console
                .db
                .console_session(&digest(value), now)
                .await
                .map_err(|e| Error::unavailable(format!("database unavailable: {e}")))?;
            let Some(session) = session else { return Ok(anonymous(value)) };
            match auth::principal_of_key_id(&console.db, &session.key_id).await {
                Ok(principal) => Ok(Some(Viewer { principal, csrf: session.csrf, logged_in: true })),
                Err(e) if e.kind == crate::error::ErrorKind::Unauthenticated => Ok(anonymous(value)),
                Err(e) => Err(e),
            }
        }
        None => Ok(None),
    }
}

/// Logs in with an API key: a new session's cookie value, or why not.
pub async fn login(console: &Console, key: &str) -> Result<String, Error> {
    let header = format!("Bearer {}", key.trim());
    let principal = auth::authenticate(&console.db, Some(&header), false).await?;
    let key_id = principal.key_id.ok_or_else(|| Error::unauthenticated("invalid or revoked api key"))?;
    let cookie = random_token();
    let now = Utc::now();
    let session = ConsoleSession {
        key_id,
        csrf: random_token(),
        expires_at: now + chrono::Duration::from_std(console.session_ttl).unwrap_or_default(),
    };
    console
        .db
        .create_console_session(&digest(&cookie), &session, now)
        .await
        .map_err(|e| Error::unavailable(format!("database unavailable: {e}")))?;
    Ok(cookie)
}

/// A new anonymous viewer's cookie value.
pub fn anonymous_cookie() -> String {
    format!("{ANON_PREFIX}{}", random_token())
}

/// The address of the client, for login throttling (unspecified where the server did not record
/// it, as in tests that call the router directly).
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(addr)| addr.ip());
        Ok(Self(ip))
    }
}

/// What a request without a viewer gets: a page load is sent to the login page; a fragment
/// request, an event stream or a form post gets 401 (htmx must not swap a login form into a
/// table).
pub fn unauthenticated(parts: &Parts) -> Response {
    if security::wants_fragment(parts) {
        return (StatusCode::UNAUTHORIZED, "log in first\n").into_response();
    }
    let next = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    Redirect::to(&format!("/login?next={}", lanewatch_web::html::encode(next))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_attempts_are_limited_per_address() {
        let guards = Guards::new(NonZeroU32::new(3).unwrap());
        let a = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..3 {
            assert!(guards.admit_login(a).is_ok());
        }
        let wait = guards.admit_login(a).unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(
            guards.admit_login(IpAddr::from([10, 0, 0, 2])).is_ok(),
            "another address has its own budget"
        );
    }

    #[test]
    fn anonymous_tokens_are_bound_to_their_cookie() {
        let guards = Guards::new(NonZeroU32::new(3).unwrap());
        let v = Viewer {
            principal: Principal::anonymous_local(),
            csrf: guards.anon_csrf("anon.1"),
            logged_in: false,
        };
        let mut h = HeaderMap::new();
        h.insert(security::CSRF_HEADER, HeaderValue::from_str(&guards.anon_csrf("anon.2")).unwrap());
        assert!(v.check_csrf(&h).is_err());
        h.insert(security::CSRF_HEADER, HeaderValue::from_str(&guards.anon_csrf("anon.1")).unwrap());
        assert!(v.check_csrf(&h).is_ok());
        h.remove(security::CSRF_HEADER);
        assert!(v.check_csrf(&h).is_err());
    }
}
