//! Session cookies and CSRF checks. A session cookie is random (32 bytes, hex), `HttpOnly`,
//! `SameSite=Strict`, and `Secure` over https; servers keep only its SHA-256. A state-changing
//! request must carry its session's CSRF token in the `X-CSRF-Token` header (htmx sends it from
//! the page's `hx-headers`), compared in constant time, and must not come from another origin.

use axum::http::{HeaderMap, HeaderValue, header};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const CSRF_HEADER: &str = "x-csrf-token";

/// A random token, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What a server keeps of a cookie.
pub fn digest(cookie: &str) -> String {
    hex::encode(Sha256::digest(cookie.as_bytes()))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// A `Set-Cookie` value; `max_age_secs` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1; Max-Age=0"))
}

/// Constant-time equality of two tokens.
pub fn equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// Refuses a request whose `Origin` names another host than the one it was sent to.
pub fn same_origin(headers: &HeaderMap) -> Result<(), Refused> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    if origin == "null" || origin_host != host {
        return Err(Refused(format!(
            "cross-origin request refused: origin {origin:?} is not this site ({host})"
        )));
    }
    Ok(())
}

/// Checks a state-changing request against the session's token `expected`.
pub fn check_csrf(headers: &HeaderMap, expected: &str) -> Result<(), Refused> {
    same_origin(headers)?;
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if sent.is_empty() || !equal(sent, expected) {
        return Err(Refused("missing or wrong CSRF token: reload the page and try again".into()));
    }
    Ok(())
}

/// Whether a request wants a fragment or a stream rather than a page (htmx, SSE, a form post):
/// it gets 401 rather than a redirect to the login page.
pub fn wants_fragment(parts: &axum::http::request::Parts) -> bool {
    parts.headers.contains_key("hx-request")
        || parts.method != axum::http::Method::GET
        || parts.uri.path().starts_with("/live/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; lw_session=abc; b=2"));
        assert_eq!(cookie(&h, "lw_session"), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn another_origin_is_refused_and_the_same_one_passes() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h).is_ok(), "no origin: not a browser's cross-site request");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&h).is_ok());
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(same_origin(&h).is_err());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(same_origin(&h).is_err());
    }

    #[test]
    fn csrf_needs_the_exact_token() {
        let mut h = HeaderMap::new();
        assert!(check_csrf(&h, "abc").is_err());
        h.insert(CSRF_HEADER, HeaderValue::from_static("abd"));
        assert!(check_csrf(&h, "abc").is_err());
        h.insert(CSRF_HEADER, HeaderValue::from_static("abc"));
        assert!(check_csrf(&h, "abc").is_ok());
    }
}
