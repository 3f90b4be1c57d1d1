//! `lanewatch history AGENT COMPONENT [--since 1h] [--json]`: a component's history as the
//! agent's heartbeats reported it (`componentHistory`), also for an agent that is offline now:
//! a timeline in which consecutive points of the same status and restart count are one line
//! (from, to, status, restarts, processed at the end, deepest inbox, samples), then what the
//! range adds up to (times it left RUNNING, restarts). `--json` prints the API's answer.

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::api::Api;
use crate::fleet::{table, text};

const HISTORY: &str = "query($agent: ID!, $component: String!, $from: DateTime!, $to: DateTime!) {
  componentHistory(agentId: $agent, component: $component, from: $from, to: $to) {
    agentId component from to rawSince
    points { at resolution periodSecs samples status restarts processed inboxDepth notRunning
      leftRunning restartsAdded }
    summary { samples notRunning leftRunning restarts worstStatus lastStatus } } }";

pub async fn run(api: &Api, agent: &str, component: &str, since: DateTime<Utc>, as_json: bool) -> Result<()> {
    let to = Utc::now();
    if since > to {
        bail!(
            "--since {} is in the future; give a duration back (24h) or an earlier time",
            since.to_rfc3339()
        );
    }
    let vars =
        json!({ "agent": agent, "component": component, "from": since.to_rfc3339(), "to": to.to_rfc3339() });
    let data = api.query(HISTORY, vars).await?;
    let history = &data["componentHistory"];
    if as_json {
        println!("{}", serde_json::to_string_pretty(history)?);
    } else {
        print!("{}", render(history));
    }
    Ok(())
}

/// The human view of a `componentHistory` answer.
fn render(h: &Value) -> String {
    let (agent, component) = (text(&h["agentId"]), text(&h["component"]));
    let mut out = format!(
        "{component} on {agent}, {} to {} (raw samples since {}, rollups before)\n",
        time(&h["from"]),
        time(&h["to"]),
        time(&h["rawSince"])
    );
    let points = h["points"].as_array().cloned().unwrap_or_default();
    if points.is_empty() {
        out.push_str(&format!(
            "(no samples of {component} on {agent} in this range; `lanewatch inspect {agent}` lists its components)\n"
        ));
        return out;
    }
    let rows: Vec<Vec<String>> = runs(&points)
        .into_iter()
        .map(|run| {
            let (first, last) = (&run[0], &run[run.len() - 1]);
            let inbox = run.iter().filter_map(|p| p["inboxDepth"].as_u64()).max();
            let samples: u64 = run.iter().filter_map(|p| p["samples"].as_u64()).sum();
            let resolution = match first["resolution"].as_str() {
                Some("ROLLUP") => format!("{}s rollup", first["periodSecs"]),
                _ => "raw".to_owned(),
            };
            vec![
                time(&first["at"]),
                time(&last["at"]),
                text(&first["status"]).to_lowercase(),
                text(&first["restarts"]),
                text(&last["processed"]),
                inbox.map_or_else(|| "-".to_owned(), |d| d.to_string()),
                samples.to_string(),
                resolution,
            ]
        })
        .collect();
    out.push_str(&table(
        &["FROM", "TO", "STATUS", "RESTARTS", "PROCESSED", "INBOX", "SAMPLES", "RESOLUTION"],
        &rows,
    ));
    let s = &h["summary"];
    let times =
        |n: &Value| if n.as_u64() == Some(1) { "once".to_owned() } else { format!("{} times", text(n)) };
    out.push_str(&format!(
        "summary: {} samples; left RUNNING {}; restarted {}; not running in {} samples; worst {}; last {}\n",
        text(&s["samples"]),
        times(&s["leftRunning"]),
        times(&s["restarts"]),
        text(&s["notRunning"]),
        text(&s["worstStatus"]).to_lowercase(),
        text(&s["lastStatus"]).to_lowercase(),
    ));
    out
}

/// Consecutive points of the same status, restart count and resolution.
fn runs(points: &[Value]) -> Vec<Vec<&Value>> {
    let key = |p: &Value| (p["status"].clone(), p["restarts"].clone(), p["resolution"].clone());
    let mut out: Vec<Vec<&Value>> = Vec::new();
    for p in points {
        match out.last_mut() {
            Some(run) if key(run[0]) == key(p) => run.push(p),
            _ => out.push(vec![p]),
        }
    }
    out
}

fn time(v: &Value) -> String {
    v.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(|| "-".to_owned(), |t| t.with_timezone(&Utc).format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: &str, status: &str, restarts: u32, processed: u32, resolution: &str) -> Value {
        json!({ "at": at, "resolution": resolution, "periodSecs": if resolution == "RAW" { 0 } else { 60 },
            "samples": if resolution == "RAW" { 1 } else { 12 }, "status": status, "restarts": restarts,
            "processed": processed, "inboxDepth": 1 })
    }

    #[test]
    fn the_timeline_is_one_line_per_run_then_the_summary() {
        let h = json!({
            "agentId": "agent-a", "component": "acquire-front", "from": "2026-12-04T09:00:00Z",
            "to": "2026-12-04T10:00:00Z", "rawSince": "2026-12-03T10:00:00Z",
            "points": [
                point("2026-12-04T09:00:00Z", "RUNNING", 0, 10, "RAW"),
                point("2026-12-04T09:00:05Z", "RUNNING", 0, 20, "RAW"),
                point("2026-12-04T09:00:10Z", "BACKING_OFF", 1, 20, "RAW"),
                point("2026-12-04T09:00:15Z", "RUNNING", 1, 25, "RAW"),
            ],
            "summary": { "samples": 4, "notRunning": 1, "leftRunning": 1, "restarts": 1,
                "worstStatus": "BACKING_OFF", "lastStatus": "RUNNING" },
        });
        let text = render(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "acquire-front on agent-a, 2026-12-04T09:00:00Z to 2026-12-04T10:00:00Z (raw samples since \
             2026-12-03T10:00:00Z, rollups before)"
        );
        assert!(lines[1].starts_with("FROM") && lines[1].contains("RESTARTS  PROCESSED  INBOX"), "{text}");
        assert!(lines[2].starts_with("2026-12-04T09:00:00Z  2026-12-04T09:00:05Z  running"), "{text}");
        assert!(lines[2].ends_with("20         1      2        raw"), "{text}");
        assert!(lines[3].contains("backing_off  1"), "{text}");
        assert_eq!(lines.len(), 6, "{text}");
        assert_eq!(
            lines[5],
            "summary: 4 samples; left RUNNING once; restarted once; not running in 1 samples; worst backing_off; \
             last running"
        );
    }

    #[test]
    fn rollups_say_so_and_an_empty_range_says_what_to_do() {
        let h = json!({ "agentId": "a", "component": "uplink", "from": null, "to": null, "rawSince": null,
            "points": [point("2026-12-01T09:00:00Z", "FAILED", 2, 5, "ROLLUP")],
            "summary": { "samples": 12, "leftRunning": 0 } });
        assert!(render(&h).lines().nth(2).unwrap().ends_with("12       60s rollup"), "{}", render(&h));
        let empty = json!({ "agentId": "a", "component": "uplink", "points": [] });
        assert!(render(&empty).contains("(no samples of uplink on a in this range; `lanewatch inspect a`"));
    }
}
