//! An agent's recent logs, read from the ring it keeps in memory: the `agentLogs` query (filters
//! by level, target, time and text under a size cap, as Azure IoT Edge's `GetModuleLogs`) and
//! the stream behind the `agentLogs` subscription, which follows the ring by sequence number with
//! requests the agent holds until a line matches (no fixed-rate polling). Operators and admins.

use async_graphql::{Context, ErrorExtensions, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};

use super::{guard, storage};
use crate::auth::Action;
use crate::domain::{self, LogQuery};
use crate::error::Error;
use crate::gateway::Gateway;

/// Most lines one `agentLogs` answer returns.
pub const MAX_LOG_LINES: i32 = 1000;
/// How long a follower's request lets the agent wait for a matching line.
const FOLLOW_WAIT_MS: u32 = 2000;

#[derive(Default)]
pub struct LogsQuery;

#[Object]
impl LogsQuery {
    /// The newest lines of an agent's in-memory log ring that match every filter given, oldest
    /// first, asked live (operators and admins). `level` is the least severe wanted (`warn`:
    /// warnings and errors); `target` a prefix of the emitting module; `grep` text in the message
    /// or a field, ignoring case. At most `limit` (1-1000) lines and `maxBytes` of text (the
    /// agent caps answers at 256 KiB; through another replica at 4 KiB). To follow, pass the
    /// last answer's `lastSeq` as `afterSeq`, with `waitMs` (up to 3000) to let the agent hold
    /// the answer until a line comes. Unknown agent: NOT_FOUND; offline: UNAVAILABLE.
    #[allow(clippy::too_many_arguments)]
    async fn agent_logs(
        &self,
        ctx: &Context<'_>,
        agent_id: ID,
        level: Option<String>,
        target: Option<String>,
        since: Option<DateTime<Utc>>,
        grep: Option<String>,
        #[graphql(default = 100)] limit: i32,
        max_bytes: Option<u32>,
        after_seq: Option<u64>,
        #[graphql(default = 0)] wait_ms: u32,
    ) -> async_graphql::Result<AgentLogs> {
        let (api, _) = guard(ctx, Action::ReadFleet)?;
        let result = async {
            if !(1..=MAX_LOG_LINES).contains(&limit) {
                return Err(Error::invalid(format!(
                    "limit must be between 1 and {MAX_LOG_LINES}, got {limit}"
                )));
            }
            if wait_ms > 3000 {
                return Err(Error::invalid(format!("waitMs must be at most 3000, got {wait_ms}")));
            }
            let query = LogQuery {
                level: parse_level(level.as_deref())?,
                target: target.filter(|t| !t.is_empty()),
                since,
                grep: grep.filter(|g| !g.is_empty()),
                limit: limit.unsigned_abs(),
                max_bytes: max_bytes.unwrap_or(0),
                after_seq,
                wait_ms,
            };
            known_agent(api, &agent_id).await?;
            api.gateway.request_logs(&agent_id, query).await
        }
        .await;
        result.map(AgentLogs::from).map_err(|e| e.extend())
    }
}

async fn known_agent(api: &super::ApiContext, agent_id: &str) -> Result<(), Error> {
    match api.db.agent(agent_id).await.map_err(storage)? {
        Some(_) => Ok(()),
        None => Err(Error::not_found(format!("no agent with id {agent_id:?}"))),
    }
}

/// A level name as `RUST_LOG` spells it, any case; `None` for every level.
fn parse_level(level: Option<&str>) -> Result<Option<String>, Error> {
    let Some(level) = level.map(str::trim).filter(|l| !l.is_empty()) else { return Ok(None) };
    let lower = level.to_ascii_lowercase();
    match lower.as_str() {
        "error" | "warn" | "info" | "debug" | "trace" => Ok(Some(lower)),
        _ => {
            Err(Error::invalid(format!("unknown log level {level:?}: use error, warn, info, debug or trace")))
        }
    }
}

/// The lines that follow in an agent's log ring from now on, matching the filters: what the
/// `agentLogs` subscription sends. Starts with the newest `last` lines; ends with an error when
/// the agent goes offline or stops answering.
pub(super) async fn follow(
    ctx: &Context<'_>,
    agent_id: ID,
    level: Option<String>,
    target: Option<String>,
    grep: Option<String>,
    last: u32,
) -> async_graphql::Result<BoxStream<'static, async_graphql::Result<LogLine>>> {
    let (api, _) = guard(ctx, Action::ReadFleet)?;
    let query = LogQuery {
        level: parse_level(level.as_deref()).map_err(|e| e.extend())?,
        target: target.filter(|t| !t.is_empty()),
        grep: grep.filter(|g| !g.is_empty()),
        ..LogQuery::default()
    };
    known_agent(api, &agent_id).await.map_err(|e| e.extend())?;
    let gateway = api.gateway.clone();
    let agent_id = agent_id.to_string();
    // the first answer: the newest `last` lines, or none, and the cursor to follow from
    let first = gateway
        .request_logs(&agent_id, LogQuery { limit: last.max(1), ..query.clone() })
        .await
        .map_err(|e| e.extend())?;
    let backlog = if last == 0 { Vec::new() } else { first.lines };
    let cursor = first.last_seq;
    let state = Follow { gateway, agent_id, query, cursor, done: false };
    let backlog = stream::iter(backlog.into_iter().map(|l| Ok(LogLine::from(l))));
    let live = stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let query =
            LogQuery { after_seq: Some(state.cursor), wait_ms: FOLLOW_WAIT_MS, ..state.query.clone() };
        match state.gateway.request_logs(&state.agent_id, query).await {
            Ok(page) => {
                state.cursor = page.last_seq.max(state.cursor);
                let lines: Vec<_> = page.lines.into_iter().map(|l| Ok(LogLine::from(l))).collect();
                Some((stream::iter(lines), state))
            }
            Err(e) => {
                state.done = true;
                Some((stream::iter(vec![Err(e.extend())]), state))
            }
        }
    })
    .flatten();
    Ok(backlog.chain(live).boxed())
}

struct Follow {
    gateway: Gateway,
    agent_id: String,
    query: LogQuery,
    cursor: u64,
    done: bool,
}

/// An answer of `agentLogs`.
#[derive(SimpleObject)]
pub struct AgentLogs {
    /// Oldest first.
    lines: Vec<LogLine>,
    /// More lines matched than `limit` or the byte cap let through (the oldest were left out).
    truncated: bool,
    /// The newest sequence number the agent's ring held: pass it as `afterSeq` to follow.
    last_seq: u64,
}

impl From<domain::LogPage> for AgentLogs {
    fn from(p: domain::LogPage) -> Self {
        Self {
            lines: p.lines.into_iter().map(LogLine::from).collect(),
            truncated: p.truncated,
            last_seq: p.last_seq,
        }
    }
}

/// One structured line of an agent's log.
#[derive(SimpleObject, Clone)]
pub struct LogLine {
    /// Grows by one per line since the agent started.
    seq: u64,
    at: DateTime<Utc>,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    level: String,
    /// The module that wrote it, e.g. `lanewatch_edge_agent::uplink`.
    target: String,
    message: String,
    fields: Vec<LogField>,
}

#[derive(SimpleObject, Clone)]
pub struct LogField {
    name: String,
    value: String,
}

impl From<domain::LogLine> for LogLine {
    fn from(l: domain::LogLine) -> Self {
        Self {
            seq: l.seq,
            at: l.at,
            level: l.level,
            target: l.target,
            message: l.message,
            fields: l.fields.into_iter().map(|(name, value)| LogField { name, value }).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_checked_and_normalized() {
        assert_eq!(parse_level(Some("WARN")).unwrap().as_deref(), Some("warn"));
        assert_eq!(parse_level(Some(" ")).unwrap(), None);
        assert_eq!(parse_level(None).unwrap(), None);
        let err = parse_level(Some("loud")).unwrap_err();
        assert!(err.message.contains("unknown log level \"loud\""), "{}", err.message);
    }
}
