//! `lanewatch logs AGENT`: the newest lines of an agent's in-memory log ring, filtered by level,
//! target, time and text (`agentLogs`), and with `--follow` the lines that come after, asked
//! with requests the agent holds until a line matches (no fixed-rate polling). `--json` prints
//! the API's answer, or one JSON line per log line when following.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::api::Api;

const LOGS: &str = "query($agent: ID!, $level: String, $target: String, $since: DateTime, $grep: String,
  $limit: Int!, $after: Int, $wait: Int!) {
  agentLogs(agentId: $agent, level: $level, target: $target, since: $since, grep: $grep,
    limit: $limit, afterSeq: $after, waitMs: $wait) {
    lines { seq at level target message fields { name value } } truncated lastSeq } }";

/// How long a follower's request lets the agent wait for a line.
const FOLLOW_WAIT_MS: u64 = 2000;

/// What `lanewatch logs` was asked for.
pub struct LogsArgs<'a> {
    pub agent: &'a str,
    pub level: Option<&'a str>,
    pub target: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub grep: Option<&'a str>,
    pub limit: u32,
    pub follow: bool,
    pub json: bool,
}

/// `--since`: a duration back from now (`10m`, `1h 30m`) or an RFC 3339 time.
pub fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(at.with_timezone(&Utc));
    }
    let back = parse_duration(text)?;
    let back = chrono::Duration::from_std(back).map_err(|_| format!("{text:?} is too long ago"))?;
    Ok(Utc::now() - back)
}

/// A duration as people write it: `90s`, `10m`, `1h 30m`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}): write e.g. 30s, 10m or 1h 30m"))
}

pub async fn run(api: &Api, args: &LogsArgs<'_>) -> Result<()> {
    if !(1..=1000).contains(&args.limit) {
        bail!("--limit must be between 1 and 1000, got {}", args.limit);
    }
    let vars = |after: Option<u64>, wait: u64| {
        json!({
            "agent": args.agent, "level": args.level, "target": args.target,
            "since": args.since.map(|t| t.to_rfc3339()), "grep": args.grep,
            "limit": args.limit, "after": after, "wait": wait,
        })
    };
    let first = api.query(LOGS, vars(None, 0)).await?;
    let page = &first["agentLogs"];
    if args.json && !args.follow {
        println!("{}", serde_json::to_string_pretty(page)?);
        return Ok(());
    }
    print_lines(page, args.json)?;
    if !args.follow {
        if page["truncated"].as_bool() == Some(true) {
            eprintln!("(older matching lines left out: raise --limit or narrow the filters)");
        }
        return Ok(());
    }
    let mut cursor = page["lastSeq"].as_u64().context("the API's answer has no lastSeq")?;
    loop {
        let data = api.query(LOGS, vars(Some(cursor), FOLLOW_WAIT_MS)).await?;
        let page = &data["agentLogs"];
        print_lines(page, args.json)?;
        cursor = page["lastSeq"].as_u64().unwrap_or(cursor).max(cursor);
    }
}

fn print_lines(page: &Value, as_json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for line in page["lines"].as_array().into_iter().flatten() {
        if as_json {
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}", human(line))?;
        }
    }
    out.flush()?;
    Ok(())
}

/// One line as the agent's stderr shows it: time, level, target, message, fields.
fn human(line: &Value) -> String {
    let at = line["at"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map_or_else(
        || "-".to_owned(),
        |t| t.with_timezone(&Utc).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    );
    let mut text = format!(
        "{at} {:>5} {}: {}",
        line["level"].as_str().unwrap_or("").to_uppercase(),
        line["target"].as_str().unwrap_or(""),
        line["message"].as_str().unwrap_or("")
    );
    for field in line["fields"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            " {}={}",
            field["name"].as_str().unwrap_or(""),
            field["value"].as_str().unwrap_or("")
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_back_or_a_time() {
        let before = Utc::now() - chrono::Duration::minutes(10);
        let since = parse_since("10m").unwrap();
        assert!((since - before).num_seconds().abs() <= 1);
        assert_eq!(parse_since("2026-12-04T10:00:00Z").unwrap().to_rfc3339(), "2026-12-04T10:00:00+00:00");
        assert!(parse_since("soon").unwrap_err().contains("write e.g. 30s, 10m or 1h 30m"));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn a_line_reads_like_the_agents_stderr() {
        let line = json!({"seq": 3, "at": "2026-12-04T10:00:00.5Z", "level": "warn",
            "target": "lanewatch_edge_agent::uplink", "message": "session failed",
            "fields": [{"name": "code", "value": "Unavailable"}]});
        assert_eq!(
            human(&line),
            "2026-12-04T10:00:00.500Z  WARN lanewatch_edge_agent::uplink: session failed code=Unavailable"
        );
    }
}
