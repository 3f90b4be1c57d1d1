//! Page pieces both UIs use: inline error and success boxes, status badges, times, and
//! query-string encoding. Everything goes through `maud`, which escapes interpolated text, so
//! data from agents, configs or logs can never become markup.

use chrono::{DateTime, Utc};
use maud::{Markup, html};

/// An inline error box (`role=alert`, so screen readers announce it).
pub fn error_box(message: &str) -> Markup {
    html! { div.error role="alert" { (message) } }
}

/// A success note.
pub fn ok_box(message: &str) -> Markup {
    html! { div.ok role="status" { (message) } }
}

/// A status badge whose class is derived from an enum value (`b-OK`, `b-VIOLATION_CANDIDATE`).
pub fn badge(value: &str) -> Markup {
    let class = format!(
        "badge b-{}",
        value.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>()
    );
    html! { span class=(class) { (value.replace('_', " ").to_lowercase()) } }
}

/// A time as a `<time>` element: UTC text, machine-readable datetime.
pub fn time(at: &DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S UTC")) } }
}

/// "12 s ago" relative to `now`, with the absolute time in the tooltip.
pub fn ago(at: &DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    let secs = (now - *at).num_seconds().max(0);
    let text = match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    };
    html! { time datetime=(at.to_rfc3339()) title=(at.format("%Y-%m-%d %H:%M:%S UTC")) { (text) } }
}

/// Percent-encodes a query-string value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Bytes in words (`1.5 MiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolated_text_is_escaped() {
        let html = error_box("<img src=x onerror=alert(1)>").into_string();
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(html.contains("&lt;img"));
    }

    #[test]
    fn badge_classes_keep_only_safe_characters() {
        let html = badge("VIOLATION_CANDIDATE\" onmouseover=\"x").into_string();
        assert!(html.contains("class=\"badge b-VIOLATION_CANDIDATEonmouseoverx\""), "{html}");
    }

    #[test]
    fn encoding_and_sizes() {
        assert_eq!(encode("/captures?site=a b"), "%2Fcaptures%3Fsite%3Da%20b");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
