//! The console's pages in the shared shell (`lanewatch_web::shell`): its sections, and the
//! viewer's role and key; the pieces every page uses (badges, times, inline errors) come from
//! `lanewatch_web::html`. maud escapes every interpolated value, so text from agents, sites and
//! configs can never become markup.

use lanewatch_web::shell::Shell;
use maud::{Markup, html};

use super::session::Viewer;
pub use lanewatch_web::html::{ago, badge, encode, error_box, ok_box, time};

/// The top-level sections, in navigation order: (path, label).
const NAV: &[(&str, &str)] = &[
    ("/", "Fleet"),
    ("/captures", "Captures"),
    ("/review", "Review"),
    ("/sites", "Sites"),
    ("/jobs", "Jobs"),
    ("/admin", "Admin"),
    ("/graphql", "GraphiQL"),
];

/// A whole page: `active` is the navigation path to highlight.
pub fn page(title: &str, viewer: &Viewer, active: &str, body: Markup) -> Markup {
    let who = html! {
        (viewer.principal.role.as_str())
        @if let Some(key) = &viewer.principal.key_id { " · key " code { (key) } }
        @else { " · anonymous (loopback)" }
    };
    let shell = Shell { product: "Lanewatch", nav: NAV, csrf: &viewer.csrf, who, logout: viewer.logged_in };
    shell.page(title, active, body)
}

/// A bare page without navigation (login, errors before a viewer exists).
pub fn bare(title: &str, body: Markup) -> Markup {
    lanewatch_web::shell::bare("Lanewatch", title, body)
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
