//! Charts drawn on the server as inline SVG (no charting script): a site's vehicles per hour as
//! bars stacked by occupancy with the violation rate as a line, and a component's history as a
//! status strip with its processed count and restarts. Each chart carries a text alternative
//! (`role="img"` and a label) and a visually hidden table of its numbers.

use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

const W: f64 = 720.0;
const H: f64 = 200.0;
const PAD_L: f64 = 40.0;
const PAD_R: f64 = 40.0;
const PAD_T: f64 = 10.0;
const PAD_B: f64 = 24.0;

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Hourly {
    pub hour: DateTime<Utc>,
    pub vehicles: i64,
    pub occupancy: Distribution,
    pub violations: i64,
    pub violation_rate: f64,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Distribution {
    pub zero: i64,
    pub one: i64,
    pub two: i64,
    pub three_plus: i64,
    pub unknown: i64,
}

/// (label, colour) of the occupancy classes, bottom to top.
const CLASSES: [(&str, &str); 5] =
    [("1", "#79b8ff"), ("2", "#3fb950"), ("3+", "#a371f7"), ("0", "#e3b341"), ("unknown", "#6e7781")];

/// The non-empty classes of an hour as (class index, vehicles below it, vehicles in it).
fn stacked(d: &Distribution) -> Vec<(usize, i64, i64)> {
    let mut below = 0;
    let mut out = Vec::new();
    for (k, count) in [d.one, d.two, d.three_plus, d.zero, d.unknown].into_iter().enumerate() {
        if count > 0 {
            out.push((k, below, count));
        }
        below += count;
    }
    out
}

/// Vehicles per hour stacked by occupancy, and the violation rate (right axis, 0–100 %).
pub fn hourly(site: &str, hours: &[Hourly]) -> Markup {
    let total: i64 = hours.iter().map(|h| h.vehicles).sum();
    let max = hours.iter().map(|h| h.vehicles).max().unwrap_or(0).max(1) as f64;
    let n = hours.len().max(1) as f64;
    let plot_w = W - PAD_L - PAD_R;
    let plot_h = H - PAD_T - PAD_B;
    let bar = plot_w / n;
    let y = |v: f64| PAD_T + plot_h - v / max * plot_h;
    let rate_y = |r: f64| PAD_T + plot_h - r.clamp(0.0, 1.0) * plot_h;
    let line: String = hours
        .iter()
        .enumerate()
        .map(|(i, h)| format!("{:.1},{:.1}", PAD_L + bar * (i as f64 + 0.5), rate_y(h.violation_rate)))
        .collect::<Vec<_>>()
        .join(" ");
    let label = format!("Vehicles per hour at {site} by occupancy, {total} in all, with the violation rate");
    html! {
        figure.chart {
            @if hours.is_empty() {
                p.muted { "No vehicles counted in this period." }
            } @else {
                svg viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(label) width="100%" {
                    line x1=(PAD_L) x2=(W - PAD_R) y1=(PAD_T + plot_h) y2=(PAD_T + plot_h) stroke="#2e3a47" {}
                    text x="4" y=(PAD_T + 10.0) fill="#9aa7b4" font-size="11" { (max as i64) }
                    text x=(W - PAD_R + 4.0) y=(PAD_T + 10.0) fill="#ff7b72" font-size="11" { "100 %" }
                    @for (i, h) in hours.iter().enumerate() {
                        @let x = PAD_L + bar * i as f64 + 1.0;
                        g {
                            title { (h.hour.format("%H:00")) ": " (h.vehicles) " vehicles, " (h.violations) " violations (" (format!("{:.0}", h.violation_rate * 100.0)) " %)" }
                            @for (k, below, count) in stacked(&h.occupancy) {
                                rect x=(format!("{x:.1}")) y=(format!("{:.1}", y((below + count) as f64)))
                                    width=(format!("{:.1}", (bar - 2.0).max(1.0)))
                                    height=(format!("{:.1}", (y(below as f64) - y((below + count) as f64)).max(0.5)))
                                    fill=(CLASSES[k].1) {}
                            }
                        }
                        @if i % 3 == 0 {
                            text x=(format!("{x:.1}")) y=(H - 6.0) fill="#9aa7b4" font-size="11" { (h.hour.format("%H:00")) }
                        }
                    }
                    polyline points=(line) fill="none" stroke="#ff7b72" stroke-width="2" {}
                }
                figcaption {
                    @for (label, colour) in CLASSES {
                        span.legend { span.swatch style={ "background:" (colour) } {} (label) " occupants" }
                    }
                    span.legend { span.swatch style="background:#ff7b72" {} "violation rate" }
                }
                table.sr {
                    caption { (label) }
                    thead { tr { th { "Hour (UTC)" } th { "Vehicles" } th { "0" } th { "1" } th { "2" } th { "3+" } th { "Unknown" } th { "Violations" } } }
                    tbody { @for h in hours {
                        tr { td { (h.hour.format("%Y-%m-%d %H:00")) } td { (h.vehicles) } td { (h.occupancy.zero) } td { (h.occupancy.one) }
                             td { (h.occupancy.two) } td { (h.occupancy.three_plus) } td { (h.occupancy.unknown) } td { (h.violations) } }
                    } }
                }
            }
        }
    }
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPoint {
    pub at: DateTime<Utc>,
    pub status: String,
    pub processed: i64,
    pub restarts_added: i64,
}

fn status_colour(status: &str) -> &'static str {
    match status {
        "RUNNING" => "#3fb950",
        "STARTING" | "BACKING_OFF" | "PAUSED" => "#e3b341",
        "FAILED" | "STOPPED" => "#ff7b72",
        _ => "#6e7781",
    }
}

/// A component's history: a strip coloured by status, its processed count per point as a line,
/// and a mark at each point with restarts.
pub fn history(component: &str, points: &[HistoryPoint], from: DateTime<Utc>, to: DateTime<Utc>) -> Markup {
    let span = (to - from).num_milliseconds().max(1) as f64;
    let plot_w = W - PAD_L - PAD_R;
    let x =
        |at: &DateTime<Utc>| PAD_L + ((*at - from).num_milliseconds() as f64 / span).clamp(0.0, 1.0) * plot_w;
    let max = points.iter().map(|p| p.processed).max().unwrap_or(0).max(1) as f64;
    let strip_y = H - PAD_B - 14.0;
    let plot_h = strip_y - PAD_T - 6.0;
    let line: String = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(&p.at), PAD_T + plot_h - p.processed as f64 / max * plot_h))
        .collect::<Vec<_>>()
        .join(" ");
    let restarts: i64 = points.iter().map(|p| p.restarts_added).sum();
    let label = format!("History of {component}: {} points, {restarts} restarts", points.len());
    html! {
        figure.chart {
            @if points.is_empty() {
                p.muted { "No history in this period." }
            } @else {
                svg viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(label) width="100%" {
                    text x="4" y=(PAD_T + 10.0) fill="#9aa7b4" font-size="11" { (max as i64) }
                    polyline points=(line) fill="none" stroke="#79b8ff" stroke-width="1.5" {}
                    @for (i, p) in points.iter().enumerate() {
                        @let x0 = x(&p.at);
                        @let x1 = points.get(i + 1).map_or(W - PAD_R, |n| x(&n.at));
                        rect x=(format!("{x0:.1}")) y=(format!("{strip_y:.1}")) width=(format!("{:.1}", (x1 - x0).max(1.0))) height="10" fill=(status_colour(&p.status)) {
                            title { (p.at.format("%H:%M:%S")) " " (p.status.to_lowercase()) }
                        }
                        @if p.restarts_added > 0 {
                            line x1=(format!("{x0:.1}")) x2=(format!("{x0:.1}")) y1=(PAD_T) y2=(strip_y) stroke="#ff7b72" stroke-dasharray="3 2" {
                                title { (p.at.format("%H:%M:%S")) ": " (p.restarts_added) " restart(s)" }
                            }
                        }
                    }
                    text x=(PAD_L) y=(H - 6.0) fill="#9aa7b4" font-size="11" { (from.format("%H:%M")) }
                    text x=(W - PAD_R - 30.0) y=(H - 6.0) fill="#9aa7b4" font-size="11" { (to.format("%H:%M")) }
                }
                figcaption {
                    span.legend { span.swatch style="background:#79b8ff" {} "processed per point" }
                    span.legend { span.swatch style="background:#3fb950" {} "running" }
                    span.legend { span.swatch style="background:#e3b341" {} "starting, backing off, paused" }
                    span.legend { span.swatch style="background:#ff7b72" {} "failed or stopped; dashed: restart" }
                }
            }
        }
    }
}
