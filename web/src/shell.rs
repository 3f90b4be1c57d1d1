//! The page shell both UIs render every page in: the head (the shared assets, the CSRF token as a
//! meta tag and as the `X-CSRF-Token` header htmx sends with every request), a skip link, the
//! top bar with the product name, the section navigation (the current one marked
//! `aria-current`), who is looking and a logout button, then the page's title and body. `bare`
//! is the shell without a session (login pages).

use maud::{DOCTYPE, Markup, html};

use crate::security::CSRF_HEADER;

/// What a UI puts around its pages.
pub struct Shell<'a> {
    /// "Lanewatch", "Lanewatch agent".
    pub product: &'a str,
    /// The sections: (path, label), in order.
    pub nav: &'a [(&'a str, &'a str)],
    /// The CSRF token of the viewer's session.
    pub csrf: &'a str,
    /// Who is looking, in the top bar.
    pub who: Markup,
    /// A logout button (a login session rather than the loopback viewer).
    pub logout: bool,
}

impl Shell<'_> {
    /// A whole page; `active` is the navigation path to mark as current.
    pub fn page(&self, title: &str, active: &str, body: Markup) -> Markup {
        let headers = format!("{{\"{CSRF_HEADER}\":\"{}\"}}", self.csrf);
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="csrf-token" content=(self.csrf);
                    title { (title) " · " (self.product) }
                    (crate::assets::head())
                }
                body hx-headers=(headers) {
                    a.skip href="#main" { "Skip to content" }
                    header.top {
                        span.brand { (self.product) }
                        nav aria-label="Sections" {
                            ul {
                                @for (path, label) in self.nav {
                                    li {
                                        @if *path == active {
                                            a href=(path) aria-current="page" { (label) }
                                        } @else {
                                            a href=(path) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        span.who { (self.who) }
                        @if self.logout {
                            form method="post" action="/logout" hx-post="/logout" hx-target="body" {
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                    main id="main" tabindex="-1" {
                        h1 { (title) }
                        (body)
                    }
                }
            }
        }
    }
}

/// A page without a session or navigation (login).
pub fn bare(product: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (product) }
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

    #[test]
    fn the_current_section_is_marked_and_text_is_escaped() {
        let shell = Shell {
            product: "Lanewatch",
            nav: &[("/", "Fleet"), ("/jobs", "Jobs")],
            csrf: "tok",
            who: html! { "<b>me</b>" },
            logout: true,
        };
        let page = shell.page("<script>x</script>", "/jobs", html! { "body" }).into_string();
        assert!(page.contains(r#"<a href="/jobs" aria-current="page">Jobs</a>"#), "{page}");
        assert!(page.contains(r#"<a href="/">Fleet</a>"#));
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;") && !page.contains("<script>x"));
        assert!(page.contains("&lt;b&gt;me&lt;/b&gt;"));
        assert!(page.contains(r#"name="csrf-token" content="tok""#) && page.contains("Log out"));
    }
}
