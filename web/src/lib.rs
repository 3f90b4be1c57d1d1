//! The web plumbing that the control plane's console and the agent's local UI share, so that
//! both look and behave alike and neither writes it twice:
//!
//! - `html`: page pieces (badges, times, inline errors, query-string encoding); `maud` escapes
//!   every interpolated value.
//! - `shell`: the page shell (head, navigation, who is looking, logout) every page sits in.
//! - `security`: session cookies, CSRF token comparison, the same-origin check.
//! - `live`: server push of HTML fragments over SSE, sent only when they changed, ending when the
//!   process drains.
//! - `exposition`: `/metrics` in OpenMetrics or the Prometheus text format, as the scraper asks.
//! - `assets`: the shared stylesheet and script and the vendored htmx (`vendor/`), served from
//!   the binary.

pub mod assets;
pub mod exposition;
pub mod html;
pub mod live;
pub mod security;
pub mod shell;
