//! The console's page shell: the head with the shared assets (`lanewatch_web::assets`), the
//! navigation, the viewer's identity and logout, and the CSRF header htmx sends with every
//! request; the pieces every page uses (badges, times, inline errors) come from
//! `lanewatch_web::html`. maud escapes every interpolated value, so text from agents, sites and
//! configs can never become markup.

use maud::{DOCTYPE, Markup, html};

use super::session::Viewer;
pub use lanewatch_web::html::{ago, badge, encode, error_box, ok_box, time};
use lanewatch_web::security::CSRF_HEADER;

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
                (lanewatch_web::assets::head())
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
                link rel="stylesheet" href="/assets/lanewatch.css";
            }
            body {
                main id="main" .narrow { h1 { (title) } (body) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;

    #[test]
    fn the_title_and_body_are_escaped() {
        let v = Viewer { principal: Principal::anonymous_local(), csrf: "t".into(), logged_in: false };
        let html = page("<script>alert(1)</script>", &v, "/", error_box("<img src=x onerror=alert(1)>"))
            .into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }
}
