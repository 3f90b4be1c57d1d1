//! Form and query-string fields as GraphQL variables: an empty field is no filter (`null`), and a
//! field that does not parse is an error that names it, shown on the page; and filters back into
//! a query string (for the live stream's URL and the next page's link).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// A query string of `pairs`, each value percent-encoded.
pub fn query(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={}", lanewatch_web::html::encode(v))).collect::<Vec<_>>().join("&")
}

/// Trimmed text, or `null` when empty.
pub fn opt(s: &str) -> Value {
    if s.trim().is_empty() { Value::Null } else { json!(s.trim()) }
}

/// A whole number, or `null` when empty.
pub fn opt_int(field: &str, s: &str) -> Result<Value, String> {
    if s.trim().is_empty() {
        return Ok(Value::Null);
    }
    s.trim()
        .parse::<i64>()
        .map(|n| json!(n))
        .map_err(|_| format!("{field} must be a whole number, got {s:?}"))
}

/// A time (RFC 3339, or a `datetime-local` value read as UTC), or `null` when empty.
pub fn opt_time(field: &str, s: &str) -> Result<Value, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Value::Null);
    }
    let parsed = DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).or_else(|_| {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
            .map(|n| n.and_utc())
    });
    parsed
        .map(|t| json!(t.to_rfc3339()))
        .map_err(|_| format!("{field} must be a date and time (UTC), got {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_null_and_bad_input_names_its_field() {
        assert_eq!(opt("  "), Value::Null);
        assert_eq!(opt(" a "), json!("a"));
        assert_eq!(opt_int("lane", "2").unwrap(), json!(2));
        assert!(opt_int("lane", "two").unwrap_err().contains("lane must be a whole number"));
        assert_eq!(opt_time("from", "2026-12-07T10:00").unwrap(), json!("2026-12-07T10:00:00+00:00"));
        assert_eq!(opt_time("from", "").unwrap(), Value::Null);
        assert!(opt_time("to", "yesterday").unwrap_err().starts_with("to must be a date"));
        assert_eq!(query(&[("site", "a b"), ("after", "")]), "site=a%20b&after=");
    }
}
