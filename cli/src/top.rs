//! `lanewatch top AGENT`: a live terminal view of one agent, in the spirit of htop and
//! observer_cli: its process (CPU, memory, threads, descriptors, uptime, versions) and a sortable
//! table of its supervised components, asked from the agent again every `--interval`, from which
//! an operator restarts a component (`r`, then `y`).
//!
//! The screen is a pure function of [`Model`] ([`render`]), so it is tested on ratatui's
//! `TestBackend`. The event loop ([`run`]) only feeds the model: the answers of refreshes and of
//! restart commands (each a task that reports back on a channel) and the keys. A failed refresh
//! keeps the last good answer on screen, marked stale, and says why in the footer.

use std::cmp::Reverse;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Local};
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use futures::StreamExt as _;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style, Stylize as _};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, HighlightSpacing, Padding, Paragraph, Row, Table, TableState};
use ratatui::{DefaultTerminal, Frame};
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::api::Api;
use crate::fleet;

/// The shortest `--interval`: every refresh asks the agent itself, over its uplink.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// How much of a component's last failure the table shows.
const FAILURE_CHARS: usize = 80;

/// Parses `--interval`: a duration as `--for` and `--since` take it (`200ms`, `1s`, `1m`),
/// from [`MIN_INTERVAL`] to [`MAX_INTERVAL`].
pub(crate) fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = crate::logs::parse_duration(text)?;
    let text = text.trim();
    if interval < MIN_INTERVAL {
        return Err(format!(
            "{text} is too short: each refresh asks the agent itself; use at least {}ms",
            MIN_INTERVAL.as_millis()
        ));
    }
    if interval > MAX_INTERVAL {
        return Err(format!("{text} is too long: use at most {}m", MAX_INTERVAL.as_secs() / 60));
    }
    Ok(interval)
}

/// Runs the live view until `q`, Esc, Ctrl-C or SIGTERM. Fails at once, before touching the
/// terminal, when stdout is not one.
pub async fn run(api: Api, agent_id: &str, interval: Duration) -> Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!(
            "`lanewatch top` draws on a terminal and stdout is not one; for scripts, use \
             `lanewatch inspect {agent_id} --json`"
        );
    }
    // installs a panic hook that restores the terminal before the panic is reported
    let mut terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(e) => {
            ratatui::restore();
            return Err(anyhow!(e).context("cannot set up the terminal (raw mode, alternate screen)"));
        }
    };
    let result = event_loop(&mut terminal, Arc::new(api), agent_id, interval).await;
    drop(terminal);
    ratatui::restore();
    result
}

/// What the tasks the loop starts report back.
enum Msg {
    Refreshed(Result<Snapshot, String>),
    Restarted { component: String, answer: Result<String, String> },
}

async fn event_loop(
    terminal: &mut DefaultTerminal,
    api: Arc<Api>,
    agent_id: &str,
    interval: Duration,
) -> Result<()> {
    let mut model = Model::new(agent_id);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut keys = EventStream::new();
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    // a slow answer delays the next refresh instead of piling refreshes up
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refreshing = false;
    loop {
        terminal.draw(|frame| render(frame, &model)).context("drawing the screen")?;
        tokio::select! {
            _ = tick.tick(), if !refreshing => {
                refreshing = true;
                let (api, tx, agent_id) = (api.clone(), tx.clone(), agent_id.to_owned());
                tokio::spawn(async move {
                    let answer = fetch(&api, &agent_id).await.map_err(|e| format!("{e:#}"));
                    let _ = tx.send(Msg::Refreshed(answer));
                });
            }
            Some(msg) = rx.recv() => match msg {
                Msg::Refreshed(answer) => {
                    refreshing = false;
                    model.refreshed(answer, Local::now());
                }
                Msg::Restarted { component, answer } => {
                    model.restart_answered(&component, answer);
                    // show the new restart count without waiting a whole interval
                    tick.reset_immediately();
                }
            },
            event = keys.next() => match event {
                Some(Ok(Event::Key(key))) => match model.key(key) {
                    Action::None => {}
                    Action::Quit => return Ok(()),
                    Action::Restart(component) => {
                        let (api, tx, agent_id) = (api.clone(), tx.clone(), agent_id.to_owned());
                        tokio::spawn(async move {
                            let answer = restart(&api, &agent_id, &component).await;
                            let answer = answer.map_err(|e| format!("{e:#}"));
                            let _ = tx.send(Msg::Restarted { component, answer });
                        });
                    }
                },
                // a resize (or anything else) only needs the redraw at the top of the loop
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(anyhow!(e).context("reading the keyboard")),
                None => return Ok(()),
            },
            _ = terminate.recv() => return Ok(()),
            _ = hangup.recv() => return Ok(()),
        }
    }
}

/// One refresh: the agent as `lanewatch inspect` asks it, live.
async fn fetch(api: &Api, agent_id: &str) -> Result<Snapshot> {
    let data = api.query(fleet::INSPECT, json!({ "id": agent_id })).await?;
    Snapshot::from_api(agent_id, &data["agent"])
}

/// Restarts `component` under a fresh command id; the agent's answer as the footer shows it.
async fn restart(api: &Api, agent_id: &str, component: &str) -> Result<String> {
    let id = uuid::Uuid::now_v7().to_string();
    let result = fleet::restart_component(api, agent_id, component, Some(&id)).await?;
    let message = result["message"].as_str().unwrap_or("(no message)");
    Ok(format!("{agent_id}: {message} (command {id})"))
}

/// One answer of the agent, converted from the API's JSON here at the edge.
#[derive(Clone, Debug, PartialEq)]
struct Snapshot {
    site: String,
    online: bool,
    health: String,
    /// Null from agents too old to report it.
    process: Option<Process>,
    components: Vec<Component>,
}

#[derive(Clone, Debug, PartialEq)]
struct Process {
    cpu_seconds: f64,
    /// CPU seconds per second since the process started.
    cpu_ratio: f64,
    rss_bytes: u64,
    threads: u64,
    open_fds: u64,
    uptime_secs: f64,
    software_version: String,
    config_version: u64,
    model_version: Option<String>,
    /// The agent's clock minus the control plane's, and the round trip it was measured over.
    clock: Option<(f64, f64)>,
}

#[derive(Clone, Debug, PartialEq)]
struct Component {
    name: String,
    /// As the API spells it (`RUNNING`, `BACKING_OFF`, …).
    status: String,
    restarts: u64,
    processed: u64,
    /// Items processed per second over the last minute; none from older agents.
    rate: Option<f64>,
    /// Busy time over wall time in the last minute (1.0: one core); none from older agents.
    busy: Option<f64>,
    /// `(depth, capacity)`; none for a source.
    inbox: Option<(u64, u64)>,
    last_failure: Option<String>,
}

impl Snapshot {
    fn from_api(agent_id: &str, agent: &Value) -> Result<Self> {
        if agent.is_null() {
            bail!("no agent with id {agent_id:?} (`lanewatch agents` lists them)");
        }
        let process = match &agent["process"] {
            Value::Null => None,
            p => Some(Process {
                cpu_seconds: float(p, "cpuSeconds")?,
                cpu_ratio: float(p, "cpuRatio")?,
                rss_bytes: count(p, "rssBytes")?,
                threads: count(p, "threads")?,
                open_fds: count(p, "openFds")?,
                uptime_secs: float(p, "uptimeSecs")?,
                software_version: string(p, "softwareVersion")?,
                config_version: count(p, "configVersion")?,
                model_version: p["modelVersion"].as_str().map(str::to_owned),
                clock: p["clockOffsetMs"].as_f64().zip(p["clockRoundTripMs"].as_f64()),
            }),
        };
        let components = agent["components"]
            .as_array()
            .context("the API's answer has no `components` list")?
            .iter()
            .map(|c| {
                let inbox = match &c["inbox"] {
                    Value::Null => None,
                    inbox => Some((count(inbox, "depth")?, count(inbox, "capacity")?)),
                };
                Ok(Component {
                    name: string(c, "name")?,
                    status: string(c, "status")?,
                    restarts: count(c, "restarts")?,
                    processed: count(c, "processed")?,
                    rate: c["rates"]["oneMinute"]["processedPerSec"].as_f64(),
                    busy: c["busyRatio"].as_f64(),
                    inbox,
                    last_failure: c["lastFailure"].as_str().map(str::to_owned),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            site: string(agent, "site")?,
            online: agent["online"].as_bool().context("the API's answer has no boolean `online`")?,
            health: string(agent, "health")?,
            process,
            components,
        })
    }
}

fn float(v: &Value, key: &str) -> Result<f64> {
    v[key].as_f64().with_context(|| format!("the API's answer has no number `{key}`"))
}

fn count(v: &Value, key: &str) -> Result<u64> {
    v[key].as_u64().with_context(|| format!("the API's answer has no count `{key}`"))
}

fn string(v: &Value, key: &str) -> Result<String> {
    v[key].as_str().map(str::to_owned).with_context(|| format!("the API's answer has no string `{key}`"))
}

/// The column the component table is sorted by; `s` moves to the next. A new column is one
/// more variant: the compiler then asks for its label, its order and its place in the cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SortBy {
    /// Busiest first (over the last minute): where the time goes.
    Busy,
    /// Fullest inbox first (sources, without one, last): where work piles up.
    InboxDepth,
    /// Most restarted first.
    Restarts,
    /// Most processed first.
    Processed,
    Name,
}

impl SortBy {
    fn next(self) -> Self {
        match self {
            SortBy::Busy => SortBy::InboxDepth,
            SortBy::InboxDepth => SortBy::Restarts,
            SortBy::Restarts => SortBy::Processed,
            SortBy::Processed => SortBy::Name,
            SortBy::Name => SortBy::Busy,
        }
    }

    fn label(self) -> &'static str {
        match self {
            SortBy::Busy => "busy",
            SortBy::InboxDepth => "inbox depth",
            SortBy::Restarts => "restarts",
            SortBy::Processed => "processed",
            SortBy::Name => "name",
        }
    }

    /// Sorts `rows` by this column, ties by name.
    fn sort(self, rows: &mut [&Component]) {
        match self {
            SortBy::Busy => rows.sort_by(|a, b| {
                let busy = |c: &Component| c.busy.unwrap_or(-1.0);
                busy(b).total_cmp(&busy(a)).then_with(|| a.name.cmp(&b.name))
            }),
            SortBy::InboxDepth => {
                rows.sort_by_key(|c| (Reverse(c.inbox.map(|(depth, _)| depth)), c.name.clone()))
            }
            SortBy::Restarts => rows.sort_by_key(|c| (Reverse(c.restarts), c.name.clone())),
            SortBy::Processed => rows.sort_by_key(|c| (Reverse(c.processed), c.name.clone())),
            SortBy::Name => rows.sort_by(|a, b| a.name.cmp(&b.name)),
        }
    }

    /// The table column it sorts (0 = name, as in [`COLUMNS`]).
    fn column(self) -> usize {
        match self {
            SortBy::Name => 0,
            SortBy::Busy => 2,
            SortBy::Restarts => 3,
            SortBy::InboxDepth => 4,
            SortBy::Processed => 5,
        }
    }
}

const COLUMNS: [&str; 7] = ["NAME", "STATUS", "BUSY", "RESTARTS", "INBOX", "PROCESSED", "LAST FAILURE"];

/// The footer's message under a refresh error: a question, or the outcome of the last command.
#[derive(Clone, Debug, PartialEq)]
enum Notice {
    None,
    /// `r` was pressed on this component: `y` restarts it, any other key cancels.
    Confirm(String),
    Sending(String),
    Answer(String),
    Failed(String),
    Info(String),
}

/// What a key asks of the event loop.
#[derive(Debug, PartialEq)]
enum Action {
    None,
    Quit,
    Restart(String),
}

/// Everything the screen shows.
struct Model {
    agent_id: String,
    /// The last good answer and when it came.
    last: Option<(Snapshot, DateTime<Local>)>,
    /// The CPU share between the last two answers (the header's "now").
    cpu_recent: Option<f64>,
    /// Why the latest refresh failed, and when; the data shown is then stale.
    refresh_error: Option<(String, DateTime<Local>)>,
    sort: SortBy,
    /// The selected component, by name, so that it stays selected as rows move.
    selected: Option<String>,
    notice: Notice,
}

impl Model {
    fn new(agent_id: &str) -> Self {
        Self {
            agent_id: agent_id.to_owned(),
            last: None,
            cpu_recent: None,
            refresh_error: None,
            sort: SortBy::Busy,
            selected: None,
            notice: Notice::None,
        }
    }

    fn refreshed(&mut self, answer: Result<Snapshot, String>, at: DateTime<Local>) {
        let snapshot = match answer {
            Ok(snapshot) => snapshot,
            Err(e) => {
                self.refresh_error = Some((e, at));
                return;
            }
        };
        self.refresh_error = None;
        let before = self.last.as_ref().and_then(|(s, _)| s.process.as_ref());
        self.cpu_recent = match (before, &snapshot.process) {
            (Some(a), Some(b)) if b.uptime_secs > a.uptime_secs && b.cpu_seconds >= a.cpu_seconds => {
                Some((b.cpu_seconds - a.cpu_seconds) / (b.uptime_secs - a.uptime_secs))
            }
            _ => None,
        };
        self.last = Some((snapshot, at));
        let names = self.row_names();
        if !self.selected.as_ref().is_some_and(|s| names.contains(s)) {
            self.selected = names.first().cloned();
        }
    }

    fn restart_answered(&mut self, component: &str, answer: Result<String, String>) {
        self.notice = match answer {
            Ok(message) => Notice::Answer(message),
            Err(e) => Notice::Failed(format!("restart of {component} failed: {e}")),
        };
    }

    /// The components in table order.
    fn rows(&self) -> Vec<&Component> {
        let mut rows: Vec<&Component> =
            self.last.as_ref().map(|(s, _)| s.components.iter().collect()).unwrap_or_default();
        self.sort.sort(&mut rows);
        rows
    }

    fn row_names(&self) -> Vec<String> {
        self.rows().into_iter().map(|c| c.name.clone()).collect()
    }

    fn selected_index(&self) -> Option<usize> {
        let selected = self.selected.as_ref()?;
        self.rows().iter().position(|c| &c.name == selected)
    }

    fn move_selection(&mut self, down: bool) {
        let names = self.row_names();
        if names.is_empty() {
            return;
        }
        let index = match (self.selected_index(), down) {
            (None, _) => 0,
            (Some(i), true) => (i + 1).min(names.len() - 1),
            (Some(i), false) => i.saturating_sub(1),
        };
        self.selected = Some(names[index].clone());
    }

    fn key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if let Notice::Confirm(component) = &self.notice {
            let component = component.clone();
            if matches!(key.code, KeyCode::Char('y' | 'Y')) {
                self.notice = Notice::Sending(component.clone());
                return Action::Restart(component);
            }
            self.notice = Notice::Info(format!("restart of {component} cancelled"));
            return Action::None;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(true),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(false),
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('r') => {
                self.notice = match self.selected_index().and(self.selected.clone()) {
                    Some(component) => Notice::Confirm(component),
                    None => Notice::Info("no component selected".to_owned()),
                }
            }
            _ => {}
        }
        Action::None
    }
}

/// Draws `model`: the header (agent and process), the component table, the footer (refresh
/// errors, the restart prompt or answer, the keys).
fn render(frame: &mut Frame, model: &Model) {
    let width = usize::from(frame.area().width.max(1));
    let footer: Vec<Line> = footer(model)
        .into_iter()
        .flat_map(|(text, style)| wrap(&text, width).into_iter().map(move |l| Line::styled(l, style)))
        .collect();
    let [header_area, table_area, footer_area] = Layout::vertical([
        Constraint::Length(5),
        Constraint::Fill(1),
        Constraint::Length(footer.len() as u16),
    ])
    .areas(frame.area());
    frame.render_widget(header(model), header_area);
    let mut state = TableState::default().with_selected(model.selected_index());
    frame.render_stateful_widget(table(model), table_area, &mut state);
    frame.render_widget(Paragraph::new(footer), footer_area);
}

fn header(model: &Model) -> Paragraph<'static> {
    let (freshness, lines) = match &model.last {
        None => (
            Span::raw(" waiting for the first answer "),
            vec![Line::from(format!("asking {} …", model.agent_id))],
        ),
        Some((s, at)) => {
            let freshness = match &model.refresh_error {
                None => Span::raw(format!(" refreshed {} ", at.format("%H:%M:%S"))),
                Some(_) => Span::styled(
                    format!(" STALE: from {} ", at.format("%H:%M:%S")),
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                ),
            };
            let online = if s.online { "yes" } else { "no" };
            let mut lines = vec![fields([
                ("site", s.site.clone()),
                ("online", online.into()),
                ("health", s.health.to_lowercase()),
            ])];
            match &s.process {
                None => lines.push(Line::from("(this agent does not report its process)")),
                Some(p) => {
                    let cpu = match model.cpu_recent {
                        Some(now) => format!("{} (avg {})", percent(now), percent(p.cpu_ratio)),
                        None => format!("{} avg", percent(p.cpu_ratio)),
                    };
                    lines.push(fields([
                        ("cpu", cpu),
                        ("rss", bytes(p.rss_bytes)),
                        ("threads", p.threads.to_string()),
                        ("fds", p.open_fds.to_string()),
                        ("uptime", uptime(p.uptime_secs)),
                    ]));
                    lines.push(fields([
                        ("software", p.software_version.clone()),
                        ("config", format!("v{}", p.config_version)),
                        ("model", p.model_version.clone().unwrap_or_else(|| "-".to_owned())),
                        (
                            "clock",
                            p.clock.map_or_else(
                                || "-".to_owned(),
                                |(offset, rtt)| format!("{offset:+.1} ms (±{:.1})", rtt / 2.0),
                            ),
                        ),
                    ]));
                }
            }
            (freshness, lines)
        }
    };
    let block = Block::bordered()
        .padding(Padding::horizontal(1))
        .title(Line::from(format!(" lanewatch top · {} ", model.agent_id)).bold())
        .title(Line::from(freshness).right_aligned());
    Paragraph::new(lines).block(block)
}

/// `label value   label value …`, the labels dimmed.
fn fields<const N: usize>(pairs: [(&'static str, String); N]) -> Line<'static> {
    let mut spans = Vec::new();
    for (i, (label, value)) in pairs.into_iter().enumerate() {
        let gap = if i == 0 { "" } else { "   " };
        spans.push(Span::styled(format!("{gap}{label} "), Style::new().fg(Color::DarkGray)));
        spans.push(Span::raw(value));
    }
    Line::from(spans)
}

fn table(model: &Model) -> Table<'static> {
    let rows = model.rows();
    let header = Row::new(COLUMNS.iter().enumerate().map(|(i, name)| {
        if i == model.sort.column() {
            Cell::from(format!("{name}▼")).add_modifier(Modifier::UNDERLINED)
        } else {
            Cell::from(*name)
        }
    }))
    .bold();
    let body: Vec<Row> = rows
        .iter()
        .map(|c| {
            let status = c.status.to_lowercase().replace('_', "-");
            let status_style = match c.status.as_str() {
                "RUNNING" => Style::new().fg(Color::Green),
                "FAILED" => Style::new().fg(Color::Red),
                "BACKING_OFF" | "STARTING" => Style::new().fg(Color::Yellow),
                "PAUSED" => Style::new().fg(Color::Magenta),
                _ => Style::new(),
            };
            let inbox = c.inbox.map_or_else(|| "-".to_owned(), |(depth, cap)| format!("{depth}/{cap}"));
            let failure = c.last_failure.as_deref().map_or_else(|| "-".to_owned(), truncate);
            Row::new([
                Cell::from(c.name.clone()),
                Cell::from(status).style(status_style),
                Cell::from(c.busy.map_or_else(|| "-".to_owned(), |b| format!("{:.1}%", b * 100.0))),
                Cell::from(c.restarts.to_string()),
                Cell::from(inbox),
                Cell::from(match c.rate {
                    Some(rate) => format!("{} ({rate:.1}/s)", c.processed),
                    None => c.processed.to_string(),
                }),
                Cell::from(failure),
            ])
        })
        .collect();
    let name_width = rows.iter().map(|c| c.name.chars().count()).max().unwrap_or(0).clamp(12, 32);
    let widths = [
        Constraint::Length(name_width as u16),
        Constraint::Length(11),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(12),
        Constraint::Length(16),
        Constraint::Fill(1),
    ];
    let title = format!(" components ({}) · sorted by {} ", rows.len(), model.sort.label());
    Table::new(body, widths)
        .header(header)
        .block(Block::bordered().title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ")
        .highlight_spacing(HighlightSpacing::Always)
}

/// The footer's messages, each wrapped to the screen's width when drawn: why the last refresh
/// failed, the restart prompt or answer, the keys.
fn footer(model: &Model) -> Vec<(String, Style)> {
    let mut lines = Vec::new();
    if let Some((e, at)) = &model.refresh_error {
        let shown = match &model.last {
            Some((_, data_at)) => format!(" (showing the answer from {})", data_at.format("%H:%M:%S")),
            None => String::new(),
        };
        let text = format!("refresh failed at {}{shown}: {e}", at.format("%H:%M:%S"));
        lines.push((text, Style::new().fg(Color::Red)));
    }
    let notice = match &model.notice {
        Notice::None => None,
        Notice::Confirm(c) => {
            Some((format!("restart {c}? y/n"), Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)))
        }
        Notice::Sending(c) => Some((format!("restarting {c} …"), Style::new())),
        Notice::Answer(a) => Some((a.clone(), Style::new().fg(Color::Green))),
        Notice::Failed(e) => Some((e.clone(), Style::new().fg(Color::Red))),
        Notice::Info(i) => Some((i.clone(), Style::new())),
    };
    lines.extend(notice);
    let keys = format!("↑↓/jk select   s sort ({})   r restart   q quit", model.sort.label());
    lines.push((keys, Style::new().fg(Color::DarkGray)));
    lines
}

/// How many screen lines one footer message may take; the rest is cut with an ellipsis.
const FOOTER_LINES: usize = 3;

/// `text` (newlines as spaces) cut into lines of `width` characters, at most [`FOOTER_LINES`].
fn wrap(text: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().map(|c| if c.is_whitespace() { ' ' } else { c }).collect();
    let mut lines: Vec<String> = chars.chunks(width).map(|c| c.iter().collect()).collect();
    if lines.len() > FOOTER_LINES {
        lines.truncate(FOOTER_LINES);
        let last = &mut lines[FOOTER_LINES - 1];
        last.pop();
        last.push('…');
    }
    lines
}

/// A share of one core as a percentage (`0.125` → `12.5%`).
fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// Bytes in binary units, one decimal from KiB up (`47513600` → `45.3 MiB`).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// An uptime to two units (`42s`, `5m03s`, `2h05m`, `3d04h`).
fn uptime(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// A failure on one line, cut to [`FAILURE_CHARS`] with an ellipsis.
fn truncate(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(FAILURE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests;
