//! The agent's own logs, readable remotely: a `tracing` layer ([`RingLayer`]) keeps the most
//! recent structured lines (time, level, target, message, fields) in a ring bounded in bytes
//! ([`LogRing`]), which the uplink answers `LogsRequest`s from (filters by level, target, time,
//! text, under a size cap, as Azure IoT Edge's `GetModuleLogs` does) and follows live by
//! sequence number. [`LogFilter`] swaps the active filter at run time (`tracing-subscriber`'s
//! `reload`) for a limited time, after which the agent's base filter comes back by itself.
//!
//! The ring sees what the active filter lets through, exactly as stderr does.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// How many bytes of log lines the ring holds by default.
pub const DEFAULT_RING_BYTES: usize = 1 << 20;
/// A line's message and fields are cut to this many bytes each; a line never takes more than
/// about twice this in the ring.
pub const MAX_TEXT_BYTES: usize = 2048;
/// The largest answer a remote reader gets, whatever it asks for.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// The longest a temporary log filter may last.
pub const MAX_FILTER_SECS: u32 = 24 * 3600;

/// One structured log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Grows by one per line recorded since the agent started; readers follow by it.
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub level: Level,
    pub target: String,
    pub message: String,
    /// The event's other fields, in the order they were written.
    pub fields: Vec<(String, String)>,
}

impl LogLine {
    /// What the line counts for against the ring's bound: its text plus a fixed overhead.
    fn cost(&self) -> usize {
        const OVERHEAD: usize = std::mem::size_of::<LogLine>();
        OVERHEAD
            + self.target.len()
            + self.message.len()
            + self
                .fields
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2 * std::mem::size_of::<String>())
                .sum::<usize>()
    }

    /// The bytes the line adds to an answer (what `max_bytes` limits).
    fn answer_bytes(&self) -> usize {
        self.target.len()
            + self.message.len()
            + self.fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }
}

/// What a reader asks of the ring. Every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// The least severe level wanted (`warn` means warn and error).
    pub level: Option<Level>,
    /// Only lines whose target starts with this (`lanewatch_edge_agent::uplink`).
    pub target: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Only lines whose message or a field value contains this text, ignoring case.
    pub grep: Option<String>,
    /// Only lines after this sequence number (following: the last answer's `last_seq`).
    pub after_seq: Option<u64>,
    /// At most this many lines, the newest (0: no limit but the byte cap).
    pub limit: usize,
    /// At most this many bytes of text (0 or above [`MAX_ANSWER_BYTES`]: that cap).
    pub max_bytes: usize,
}

impl LogQuery {
    fn matches(&self, line: &LogLine, grep: Option<&str>) -> bool {
        // tracing orders levels by verbosity: ERROR < WARN < … < TRACE
        self.level.is_none_or(|least| line.level <= least)
            && self.target.as_deref().is_none_or(|t| line.target.starts_with(t))
            && self.since.is_none_or(|since| line.at >= since)
            && self.after_seq.is_none_or(|after| line.seq > after)
            && grep.is_none_or(|needle| {
                contains_ignoring_case(&line.message, needle)
                    || line.fields.iter().any(|(_, v)| contains_ignoring_case(v, needle))
            })
    }
}

fn contains_ignoring_case(haystack: &str, lowercase_needle: &str) -> bool {
    haystack.to_lowercase().contains(lowercase_needle)
}

/// A ring's answer: the newest matching lines, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// More lines matched than the limit or the byte cap let through (the oldest were left out).
    pub truncated: bool,
    /// The newest sequence number the ring held when it answered; follow from here.
    pub last_seq: u64,
}

#[derive(Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
    next_seq: u64,
    /// Lines pushed out to stay within the bound, since the start.
    dropped: u64,
}

/// The bounded ring of recent log lines; cheap to clone.
#[derive(Clone)]
pub struct LogRing {
    ring: Arc<Mutex<Ring>>,
    capacity_bytes: usize,
    /// The newest sequence number, for followers waiting for lines.
    newest: Arc<watch::Sender<u64>>,
}

impl LogRing {
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            ring: Arc::default(),
            capacity_bytes: capacity_bytes.max(4 * MAX_TEXT_BYTES),
            newest: Arc::new(watch::channel(0).0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a line (its `seq` is assigned here), dropping the oldest lines over the bound.
    pub fn push(&self, mut line: LogLine) {
        let seq = {
            let mut ring = self.lock();
            ring.next_seq += 1;
            line.seq = ring.next_seq;
            ring.bytes += line.cost();
            ring.lines.push_back(line);
            while ring.bytes > self.capacity_bytes {
                let Some(old) = ring.lines.pop_front() else { break };
                ring.bytes -= old.cost();
                ring.dropped += 1;
            }
            ring.next_seq
        };
        self.newest.send_replace(seq);
    }

    /// The bytes the ring's lines count for now, and its bound.
    pub fn usage(&self) -> (usize, usize) {
        (self.lock().bytes, self.capacity_bytes)
    }

    /// Lines held now, and lines dropped to stay within the bound since the start.
    pub fn counts(&self) -> (usize, u64) {
        let ring = self.lock();
        (ring.lines.len(), ring.dropped)
    }

    /// The newest matching lines within the query's limit and byte cap, oldest first.
    pub fn query(&self, query: &LogQuery) -> LogPage {
        let grep = query.grep.as_deref().filter(|g| !g.is_empty()).map(str::to_lowercase);
        let max_bytes = match query.max_bytes {
            0 => MAX_ANSWER_BYTES,
            n => n.min(MAX_ANSWER_BYTES),
        };
        let ring = self.lock();
        let mut page = LogPage { last_seq: ring.next_seq, ..LogPage::default() };
        let mut bytes = 0;
        for line in ring.lines.iter().rev() {
            if query.after_seq.is_some_and(|after| line.seq <= after) {
                break;
            }
            if !query.matches(line, grep.as_deref()) {
                continue;
            }
            let full = query.limit > 0 && page.lines.len() == query.limit;
            if full || bytes + line.answer_bytes() > max_bytes {
                page.truncated = true;
                break;
            }
            bytes += line.answer_bytes();
            page.lines.push(line.clone());
        }
        page.lines.reverse();
        page
    }

    /// Like [`LogRing::query`], but when nothing matches yet, waits up to `wait` for a line that
    /// does (following a log live without asking in a loop).
    pub async fn wait_query(&self, query: &LogQuery, wait: Duration) -> LogPage {
        let mut newest = self.newest.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        let mut query = query.clone();
        loop {
            // marked seen before the query, so a line pushed after it wakes the wait below
            newest.borrow_and_update();
            let page = self.query(&query);
            if !page.lines.is_empty() {
                return page;
            }
            // later lines only: the ones seen so far did not match
            query.after_seq = Some(page.last_seq);
            if tokio::time::timeout_at(deadline, newest.changed()).await.is_err() {
                return page;
            }
        }
    }

    /// The `tracing` layer that records every event into this ring.
    pub fn layer(&self) -> RingLayer {
        RingLayer { ring: self.clone() }
    }
}

/// Records each event the active filter lets through into a [`LogRing`].
pub struct RingLayer {
    ring: LogRing,
}

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut visitor = FieldVisitor::default();
        event.record(&mut visitor);
        self.ring.push(LogLine {
            seq: 0,
            at: Utc::now(),
            level: *meta.level(),
            target: meta.target().to_owned(),
            message: visitor.message,
            fields: visitor.fields,
        });
    }
}

#[derive(Default)]
struct FieldVisitor {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.put(field, text);
    }
}

impl FieldVisitor {
    fn put(&mut self, field: &Field, mut value: String) {
        truncate(&mut value, MAX_TEXT_BYTES);
        if field.name() == "message" {
            self.message = value;
        } else if self.fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() < MAX_TEXT_BYTES {
            self.fields.push((field.name().to_owned(), value));
        }
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary, marking the cut with `…`.
fn truncate(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
}

/// Parses a level name as `RUST_LOG` spells it (`error`, `warn`, `info`, `debug`, `trace`).
pub fn parse_level(text: &str) -> Result<Level, String> {
    text.parse::<Level>()
        .map_err(|_| format!("unknown log level {text:?}: use error, warn, info, debug or trace"))
}

/// The agent's active log filter, which an operator may replace for a while.
#[derive(Clone)]
pub struct LogFilter {
    handle: reload::Handle<EnvFilter, Registry>,
    state: Arc<Mutex<FilterState>>,
}

struct FilterState {
    /// The filter the agent started with; a temporary filter gives way to it when it expires.
    base: String,
    /// The filter in force now.
    current: String,
    /// When the temporary filter expires; `None` while the base is in force.
    expires_at: Option<DateTime<Utc>>,
    /// Bumped by every change, so that an older temporary filter's expiry does not undo a
    /// newer one.
    generation: u64,
}

impl LogFilter {
    /// A reloadable filter starting as `base` (parsed as `RUST_LOG` is), and the layer to put
    /// first on the registry.
    pub fn new(base: &str) -> Result<(Self, reload::Layer<EnvFilter, Registry>), String> {
        let filter = parse_filter(base)?;
        let (layer, handle) = reload::Layer::new(filter);
        let state =
            FilterState { base: base.to_owned(), current: base.to_owned(), expires_at: None, generation: 0 };
        Ok((Self { handle, state: Arc::new(Mutex::new(state)) }, layer))
    }

    /// The filter in force now and, for a temporary one, when it expires.
    pub fn current(&self) -> (String, Option<DateTime<Utc>>) {
        let state = self.lock();
        (state.current.clone(), state.expires_at)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FilterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `filter` in force for `for_secs` seconds (1 to [`MAX_FILTER_SECS`]); then the
    /// agent's base filter comes back by itself, unless another filter was set meanwhile (its
    /// own expiry then restores the base). Needs a tokio runtime.
    pub fn set_for(&self, filter: &str, for_secs: u32) -> Result<String, String> {
        if !(1..=MAX_FILTER_SECS).contains(&for_secs) {
            return Err(format!(
                "a temporary log filter lasts 1 to {MAX_FILTER_SECS} seconds, not {for_secs}"
            ));
        }
        let parsed = parse_filter(filter)?;
        let generation = {
            let mut state = self.lock();
            self.handle.reload(parsed).map_err(|e| format!("cannot change the log filter: {e}"))?;
            state.current = filter.to_owned();
            state.expires_at = Some(Utc::now() + chrono::Duration::seconds(i64::from(for_secs)));
            state.generation += 1;
            state.generation
        };
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(for_secs))).await;
            me.expire(generation);
        });
        tracing::info!(filter, for_secs, "log filter set");
        Ok(format!("log filter {filter:?} in force for {for_secs}s, then {:?} again", self.lock().base))
    }

    /// Restores the base filter if the temporary filter of `generation` is still in force.
    fn expire(&self, generation: u64) {
        let base = {
            let mut state = self.lock();
            if state.generation != generation {
                return;
            }
            let Ok(parsed) = parse_filter(&state.base) else { return };
            if let Err(e) = self.handle.reload(parsed) {
                tracing::warn!(error = %e, "cannot restore the log filter");
                return;
            }
            state.current = state.base.clone();
            state.expires_at = None;
            state.generation += 1;
            state.base.clone()
        };
        tracing::info!(filter = %base, "temporary log filter expired; base filter restored");
    }
}

/// The agent's logs as the uplink serves them: the ring and the filter.
#[derive(Clone)]
pub struct Logs {
    pub ring: LogRing,
    pub filter: LogFilter,
}

impl Logs {
    /// Installs the agent's subscriber: the reloadable filter (`RUST_LOG`, else `info`), then
    /// human-readable lines on stderr and the ring. Call once, first thing in `main`.
    pub fn install() -> Self {
        let base = std::env::var("RUST_LOG").ok().filter(|text| parse_filter(text).is_ok());
        let base = base.as_deref().unwrap_or("info");
        let (filter, filter_layer) = LogFilter::new(base).expect("the base filter parses");
        let ring = LogRing::new(DEFAULT_RING_BYTES);
        let stderr = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::registry().with(filter_layer).with(stderr).with(ring.layer()).init();
        Self { ring, filter }
    }

    /// A ring and filter installed nowhere (tests): the ring stays empty unless pushed to, and
    /// setting a filter fails.
    pub fn detached() -> Self {
        let (filter, _layer) = LogFilter::new("info").expect("the base filter parses");
        Self { ring: LogRing::new(DEFAULT_RING_BYTES), filter }
    }
}

fn parse_filter(text: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder().with_regex(false).parse(text).map_err(|e| {
        format!("invalid log filter {text:?}: {e} (expected e.g. \"info,lanewatch_edge_agent=debug\")")
    })
}

#[cfg(test)]
mod tests;
