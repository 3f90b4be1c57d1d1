//! The console's page shell and the small pieces every page shares: the head with the vendored
//! assets, the navigation, the viewer's identity and logout, the CSRF header htmx sends with
//! every request, badges, times, and inline error boxes. maud escapes every interpolated value,
//! so text from agents, sites and configs can never become markup.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::session::{CSRF_HEADER, Viewer};

/// The top-level sections, in navigation order: (path, label).
const NAV: &[(&str, &str)] = &[
    ("/", "Fleet"),
    ("/captures", "Captures"),
    ("/review", "Review"),
    ("/sites", "Sites"),
    ("/jobs", "Jobs"),
    ("/admin", "Admin"),
];

/// A whole page: `active` is the navigation path to highlight.
pub fn page(title: &str, viewer: &Viewer, active: &str, body: Markup) -> Markup {
    let headers = serde_json::json!({ CSRF_HEADER: viewer.csrf }).to_string();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(viewer.csrf);
                title { (title) " · Lanewatch" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/htmx.min.js" defer {}
                script src="/assets/htmx-sse.js" defer {}
                script src="/assets/console.js" defer {}
            }
            body hx-headers=(headers) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "Lanewatch" }
                    nav aria-label="Sections" {
                        ul {
                            @for (path, label) in NAV {
                                li {
                                    @if *path == active {
                                        a href=(path) aria-current="page" { (label) }
                                    } @else {
                                        a href=(path) { (label) }
                                    }
                                }
                            }
                            li { a href="/graphql" { "GraphiQL" } }
                        }
                    }
                    span.who {
                        (viewer.principal.role.as_str())
                        @if let Some(key) = &viewer.principal.key_id { " · key " code { (key) } }
                        @else { " · anonymous (loopback)" }
                    }
                    @if viewer.logged_in {
                        form method="post" action="/logout" hx-post="/logout" hx-target="body" {
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
                div #toast role="status" aria-live="polite" {}
            }
        }
    }
}

/// A bare page without navigation (login, errors before a viewer exists).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Lanewatch" }
                link rel="stylesheet" href="/assets/console.css";
            }
            body {
                main id="main" .narrow { h1 { (title) } (body) }
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;

    #[test]
    fn interpolated_text_is_escaped() {
        let v = Viewer { principal: Principal::anonymous_local(), csrf: "t".into(), logged_in: false };
        let html = page("<script>alert(1)</script>", &v, "/", error_box("<img src=x onerror=alert(1)>"))
            .into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn badge_classes_keep_only_safe_characters() {
        let html = badge("VIOLATION_CANDIDATE\" onmouseover=\"x").into_string();
        assert!(html.contains("class=\"badge b-VIOLATION_CANDIDATEonmouseoverx\""), "{html}");
    }
}
