//! Metrics exposition for both binaries' `/metrics`: `prometheus-client` writes OpenMetrics; a
//! scraper that does not ask for it (`Accept` without `application/openmetrics-text`: older
//! Prometheus servers, `curl`, `promtool check metrics`) gets the Prometheus text format 0.0.4,
//! converted here: counter families are named with their `_total` suffix in `# HELP` and
//! `# TYPE`, and the `# UNIT` and `# EOF` lines go.

use std::collections::HashSet;

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus text format of an OpenMetrics exposition.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The `/metrics` answer in the format the scraper asked for.
pub fn respond(headers: &HeaderMap, openmetrics: String) -> Response {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if wants_openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS)], openmetrics).into_response()
    } else {
        ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], to_prometheus_text(&openmetrics)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_suffix_and_openmetrics_lines_go() {
        let om = "# HELP jobs Jobs.\n# TYPE jobs gauge\njobs{queue=\"a\"} 1\n\
                  # HELP bytes Bytes stored.\n# TYPE bytes counter\n# UNIT bytes bytes\nbytes_total 5\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP jobs Jobs.\n# TYPE jobs gauge\njobs{queue=\"a\"} 1\n\
             # HELP bytes_total Bytes stored.\n# TYPE bytes_total counter\nbytes_total 5\n"
        );
    }
}
