//! Component history in domain terms: the sample the gateway takes of each component line of a
//! heartbeat, the points a history answer is made of (raw samples, or rollups of a period), the
//! summary of a range (how often the component left RUNNING, how many restarts), the latest
//! state of every agent × component, and the stored code of each status, ordered by severity.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{ComponentState, ComponentStatus};

/// The longest range one history query may cover.
pub const MAX_HISTORY_RANGE_DAYS: i64 = 31;

/// One component line of one heartbeat, stamped when the gateway received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSample {
    /// Shared by every sample of a session.
    pub agent_id: Arc<str>,
    pub component: String,
    pub at: DateTime<Utc>,
    pub status: ComponentStatus,
    pub restarts: u32,
    pub processed: u64,
    /// Items in its input channel; `None` for a source.
    pub inbox_depth: Option<u32>,
}

impl ComponentSample {
    pub fn of(agent_id: Arc<str>, state: ComponentState, at: DateTime<Utc>) -> Self {
        Self {
            agent_id,
            component: state.name,
            at,
            status: state.status,
            restarts: state.restarts,
            processed: state.processed,
            inbox_depth: state.inbox.map(|(depth, _)| depth),
        }
    }
}

impl ComponentStatus {
    /// Every status, best first: the order of [`ComponentStatus::code`].
    pub const BY_SEVERITY: [Self; 7] = [
        Self::Running,
        Self::Starting,
        Self::Paused,
        Self::Stopped,
        Self::Unknown,
        Self::BackingOff,
        Self::Failed,
    ];

    /// The stored small integer; larger is worse, so a rollup's `MAX` is its worst status.
    pub fn code(self) -> i16 {
        match self {
            Self::Running => 0,
            Self::Starting => 1,
            Self::Paused => 2,
            Self::Stopped => 3,
            Self::Unknown => 4,
            Self::BackingOff => 5,
            Self::Failed => 6,
        }
    }

    /// Reads a stored code; anything unrecognised is `Unknown`, never an error.
    pub fn from_code(code: i16) -> Self {
        Self::BY_SEVERITY.into_iter().find(|s| s.code() == code).unwrap_or(Self::Unknown)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Starting => "starting",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
            Self::Unknown => "unknown",
            Self::BackingOff => "backing_off",
            Self::Failed => "failed",
        }
    }

    /// A status as people and the API write it: `backing_off`, `BACKING_OFF`, `backing-off`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_lowercase().replace('-', "_");
        Self::BY_SEVERITY.into_iter().find(|s| s.as_str() == text)
    }
}

/// Which kind of row a history point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// One heartbeat's sample.
    Raw,
    /// The summary of one rollup period's samples.
    Rollup,
}

/// One point of a component's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPoint {
    /// The sample's time, or the start of the rollup's period.
    pub at: DateTime<Utc>,
    pub resolution: Resolution,
    /// The rollup's period; 0 for a raw sample.
    pub period_secs: u32,
    /// Samples summarized (1 for a raw sample).
    pub samples: u32,
    /// The status; a rollup's is the worst its period saw.
    pub status: ComponentStatus,
    /// The restart count; a rollup's is the highest its period saw.
    pub restarts: u32,
    /// Items processed; a rollup's is the count at the end of its period.
    pub processed: u64,
    /// The inbox depth; a rollup's is the highest its period saw. `None` for a source.
    pub inbox_depth: Option<u32>,
    /// Samples whose status was not RUNNING.
    pub not_running: u32,
    /// How often the component went from RUNNING to another status, the step into this point
    /// (or into this period) included.
    pub left_running: u32,
    /// Restarts counted from the previous sample to this one (or over this period); a restart
    /// count that went down (the agent restarted) counts from zero.
    pub restarts_added: u32,
}

impl HistoryPoint {
    /// A raw sample's point, its steps counted from the sample before it (`prev`), if any.
    pub fn raw(
        at: DateTime<Utc>,
        status: ComponentStatus,
        restarts: u32,
        processed: u64,
        inbox_depth: Option<u32>,
        prev: Option<(ComponentStatus, u32)>,
    ) -> Self {
        let running = status == ComponentStatus::Running;
        let (left_running, restarts_added) = match prev {
            None => (0, 0),
            Some((before, before_restarts)) => (
                u32::from(before == ComponentStatus::Running && !running),
                if restarts >= before_restarts { restarts - before_restarts } else { restarts },
            ),
        };
        Self {
            at,
            resolution: Resolution::Raw,
            period_secs: 0,
            samples: 1,
            status,
            restarts,
            processed,
            inbox_depth,
            not_running: u32::from(!running),
            left_running,
            restarts_added,
        }
    }
}

/// What a range of points adds up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistorySummary {
    pub samples: u64,
    pub not_running: u64,
    /// Times the component left RUNNING.
    pub left_running: u64,
    /// Restarts in the range.
    pub restarts: u64,
    /// The worst status seen; `None` without points.
    pub worst: Option<ComponentStatus>,
    /// The status of the newest point; `None` without points.
    pub last: Option<ComponentStatus>,
}

impl HistorySummary {
    pub fn of(points: &[HistoryPoint]) -> Self {
        let mut s = Self::default();
        for p in points {
            s.samples += u64::from(p.samples);
            s.not_running += u64::from(p.not_running);
            s.left_running += u64::from(p.left_running);
            s.restarts += u64::from(p.restarts_added);
            s.worst =
                Some(s.worst.map_or(p.status, |w| if p.status.code() > w.code() { p.status } else { w }));
        }
        s.last = points.last().map(|p| p.status);
        s
    }
}

/// A component's history over a range: rollups before `raw_since`, raw samples after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentHistory {
    /// Raw samples are kept from here on; older points are rollups.
    pub raw_since: DateTime<Utc>,
    /// Oldest first.
    pub points: Vec<HistoryPoint>,
    pub summary: HistorySummary,
}

/// Why a history range is refused, if it is.
pub fn check_history_range(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(), String> {
    if from > to {
        return Err(format!("from ({}) is after to ({})", from.to_rfc3339(), to.to_rfc3339()));
    }
    if to - from > chrono::Duration::days(MAX_HISTORY_RANGE_DAYS) {
        return Err(format!(
            "the range from {} to {} is longer than {MAX_HISTORY_RANGE_DAYS} days; ask for a shorter one",
            from.to_rfc3339(),
            to.to_rfc3339()
        ));
    }
    Ok(())
}

/// Which component names a fleet query matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameMatch {
    Exact(String),
    /// Written `acquire-*`.
    Prefix(String),
}

impl NameMatch {
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        match text.strip_suffix('*') {
            Some(prefix) => Self::Prefix(prefix.to_owned()),
            None => Self::Exact(text.to_owned()),
        }
    }
}

/// Which statuses a fleet query matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    Is(ComponentStatus),
    /// Any status but RUNNING.
    NotRunning,
}

impl StatusMatch {
    /// A status name, or `not_running`; the error lists what is accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().eq_ignore_ascii_case("not_running") || text.trim().eq_ignore_ascii_case("not-running")
        {
            return Ok(Self::NotRunning);
        }
        ComponentStatus::parse(text).map(Self::Is).ok_or_else(|| {
            let known: Vec<String> =
                ComponentStatus::BY_SEVERITY.iter().map(|s| s.as_str().to_uppercase()).collect();
            format!("unknown status {text:?}; one of {} or NOT_RUNNING", known.join(", "))
        })
    }
}

/// What `fleetComponents` filters by; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetComponentFilter {
    pub name: Option<NameMatch>,
    pub status: Option<StatusMatch>,
    pub site_id: Option<String>,
    /// Only components whose restart count grew at or after this time.
    pub restarted_since: Option<DateTime<Utc>>,
}

/// The newest sample of one agent × component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestComponent {
    pub agent_id: String,
    pub site_id: String,
    pub component: String,
    pub at: DateTime<Utc>,
    pub status: ComponentStatus,
    pub restarts: u32,
    pub processed: u64,
    pub inbox_depth: Option<u32>,
    /// When its restart count last grew, as far as the history saw it.
    pub last_restart_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ComponentStatus::{BackingOff, Failed, Running};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn codes_order_statuses_by_severity_and_round_trip() {
        for (i, s) in ComponentStatus::BY_SEVERITY.iter().enumerate() {
            assert_eq!(usize::try_from(s.code()).unwrap(), i);
            assert_eq!(ComponentStatus::from_code(s.code()), *s);
            assert_eq!(ComponentStatus::parse(&s.as_str().to_uppercase()), Some(*s));
        }
        assert_eq!(ComponentStatus::from_code(99), ComponentStatus::Unknown);
        assert_eq!(ComponentStatus::parse("backing-off"), Some(BackingOff));
        assert!(Failed.code() > BackingOff.code() && BackingOff.code() > Running.code());
    }

    #[test]
    fn a_summary_counts_leaving_running_and_restarts_across_resets() {
        // running, a stall (backing off, failed), running again after a restart; then the agent
        // restarts (its counts start over) and the component restarts once more
        let steps = [(Running, 0), (BackingOff, 1), (Failed, 1), (Running, 1), (Running, 0), (BackingOff, 1)];
        let mut prev = None;
        let mut points = Vec::new();
        for (i, (status, restarts)) in steps.into_iter().enumerate() {
            points.push(HistoryPoint::raw(at(i as i64 * 5), status, restarts, 10, Some(0), prev));
            prev = Some((status, restarts));
        }
        let s = HistorySummary::of(&points);
        assert_eq!(s.samples, 6);
        assert_eq!(s.not_running, 3);
        assert_eq!(s.left_running, 2);
        assert_eq!(s.restarts, 2, "1 (first stall) + 1 (after the reset to 0)");
        assert_eq!((s.worst, s.last), (Some(Failed), Some(BackingOff)));
        assert_eq!(HistorySummary::of(&[]), HistorySummary::default());
    }

    #[test]
    fn ranges_and_filters_are_checked() {
        assert!(check_history_range(at(0), at(0)).is_ok());
        assert!(check_history_range(at(10), at(0)).unwrap_err().contains("is after to"));
        let long = check_history_range(at(0), at(32 * 86_400)).unwrap_err();
        assert!(long.contains("longer than 31 days"), "{long}");
        assert_eq!(NameMatch::parse("acquire-*"), NameMatch::Prefix("acquire-".into()));
        assert_eq!(NameMatch::parse(" uplink "), NameMatch::Exact("uplink".into()));
        assert_eq!(StatusMatch::parse("not_running"), Ok(StatusMatch::NotRunning));
        assert_eq!(StatusMatch::parse("FAILED"), Ok(StatusMatch::Is(Failed)));
        let e = StatusMatch::parse("stalled").unwrap_err();
        assert!(e.contains("unknown status \"stalled\"") && e.contains("BACKING_OFF"), "{e}");
    }
}
