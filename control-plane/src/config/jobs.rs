//! The `[jobs]` section (the durable job queue: its queues and limits, polling, rescue of jobs
//! orphaned by a stopped replica, how long finished jobs are kept) and the `[retention]` section
//! (legal retention of captures per value class, overridden per jurisdiction).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ConfigError;

/// The job queue (`[jobs]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsConfig {
    /// Run queues and cron jobs on this replica.
    pub enabled: bool,
    /// How often an idle queue looks for due jobs (new jobs inserted here wake it at once).
    pub poll_interval_ms: u64,
    /// A job left `executing` by a replica not seen for this long is rescued.
    pub rescue_after_secs: u64,
    /// How long completed, discarded and cancelled jobs are kept for inspection.
    pub history_retention_secs: u64,
    /// Queue name → its limits. `maintenance` (retention, pruning) and `webhooks` always exist.
    pub queues: BTreeMap<String, QueueLimits>,
}

/// The limits a queue starts with; operators change them at run time (`resizeQueue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueLimits {
    /// Jobs one replica runs at once.
    pub limit: u32,
    /// Jobs all replicas run at once; absent: no limit across replicas.
    #[serde(default)]
    pub global_limit: Option<u32>,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval_ms: 1000,
            rescue_after_secs: 60,
            history_retention_secs: 7 * 86_400,
            queues: default_queues(),
        }
    }
}

fn default_queues() -> BTreeMap<String, QueueLimits> {
    BTreeMap::from([
        ("maintenance".to_owned(), QueueLimits { limit: 1, global_limit: Some(1) }),
        ("webhooks".to_owned(), QueueLimits { limit: 10, global_limit: None }),
    ])
}

/// Legal retention of captures (`[retention]`): a capture is deleted (image and row, with a
/// deletion record) once older than its class's days, where the class is its decision (test,
/// unknown and unreadable captures count as statistics) and a confirmed violation is kept for
/// `confirmed_violation_days`. A violation under review is never deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    pub enabled: bool,
    /// How often the retention sweep runs (a cron job of the `maintenance` queue).
    pub sweep_interval_secs: u64,
    /// Captures one sweep step deletes at most (it repeats until none is due).
    pub batch: u64,
    pub defaults: RetentionDays,
    /// Jurisdiction → its own days (those it leaves out are the defaults').
    pub jurisdictions: BTreeMap<String, RetentionDays>,
}

/// Days each class of capture is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionDays {
    pub statistics: u32,
    pub compliant: u32,
    pub violation_candidate: u32,
    pub confirmed_violation: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sweep_interval_secs: 3600,
            batch: 500,
            defaults: RetentionDays {
                statistics: 30,
                compliant: 90,
                violation_candidate: 180,
                confirmed_violation: 5 * 365,
            },
            jurisdictions: BTreeMap::new(),
        }
    }
}

impl RetentionConfig {
    /// The days of `jurisdiction` (the defaults without one, or for one not configured).
    pub fn days(&self, jurisdiction: Option<&str>) -> RetentionDays {
        jurisdiction.and_then(|j| self.jurisdictions.get(j)).copied().unwrap_or(self.defaults)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileJobs {
    enabled: bool,
    poll_interval_ms: u64,
    rescue_after_secs: u64,
    history_retention_secs: u64,
    queues: BTreeMap<String, QueueLimits>,
}

impl Default for FileJobs {
    fn default() -> Self {
        let d = JobsConfig::default();
        Self {
            enabled: d.enabled,
            poll_interval_ms: d.poll_interval_ms,
            rescue_after_secs: d.rescue_after_secs,
            history_retention_secs: d.history_retention_secs,
            queues: BTreeMap::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileRetention {
    enabled: bool,
    sweep_interval_secs: u64,
    batch: u64,
    statistics_days: u32,
    compliant_days: u32,
    violation_candidate_days: u32,
    confirmed_violation_days: u32,
    jurisdictions: BTreeMap<String, FileJurisdictionDays>,
}

impl Default for FileRetention {
    fn default() -> Self {
        let d = RetentionConfig::default();
        Self {
            enabled: d.enabled,
            sweep_interval_secs: d.sweep_interval_secs,
            batch: d.batch,
            statistics_days: d.defaults.statistics,
            compliant_days: d.defaults.compliant,
            violation_candidate_days: d.defaults.violation_candidate,
            confirmed_violation_days: d.defaults.confirmed_violation,
            jurisdictions: BTreeMap::new(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileJurisdictionDays {
    statistics_days: Option<u32>,
    compliant_days: Option<u32>,
    violation_candidate_days: Option<u32>,
    confirmed_violation_days: Option<u32>,
}

fn range(field: &str, v: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(ConfigError::new(field, format!("{v} is outside {min}..={max}")))
    }
}

pub(super) fn validate_jobs(j: &FileJobs) -> Result<JobsConfig, ConfigError> {
    let mut queues = default_queues();
    for (name, limits) in &j.queues {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(ConfigError::new(
                format!("jobs.queues.{name}"),
                "a queue name is letters, digits, _ and -",
            ));
        }
        range(&format!("jobs.queues.{name}.limit"), u64::from(limits.limit), 1, 1000)?;
        if let Some(g) = limits.global_limit {
            range(&format!("jobs.queues.{name}.global_limit"), u64::from(g), 1, 10_000)?;
        }
        queues.insert(name.clone(), *limits);
    }
    Ok(JobsConfig {
        enabled: j.enabled,
        poll_interval_ms: range("jobs.poll_interval_ms", j.poll_interval_ms, 50, 60_000)?,
        rescue_after_secs: range("jobs.rescue_after_secs", j.rescue_after_secs, 5, 86_400)?,
        history_retention_secs: range(
            "jobs.history_retention_secs",
            j.history_retention_secs,
            60,
            365 * 86_400,
        )?,
        queues,
    })
}

pub(super) fn validate_retention(r: &FileRetention) -> Result<RetentionConfig, ConfigError> {
    let days =
        |field: &str, v: u32| range(&format!("retention.{field}"), u64::from(v), 1, 36_500).map(|v| v as u32);
    let defaults = RetentionDays {
        statistics: days("statistics_days", r.statistics_days)?,
        compliant: days("compliant_days", r.compliant_days)?,
        violation_candidate: days("violation_candidate_days", r.violation_candidate_days)?,
        confirmed_violation: days("confirmed_violation_days", r.confirmed_violation_days)?,
    };
    let mut jurisdictions = BTreeMap::new();
    for (name, j) in &r.jurisdictions {
        let field = |f: &str| format!("jurisdictions.{name}.{f}");
        let pick = |f: &str, v: Option<u32>, default: u32| v.map_or(Ok(default), |v| days(&field(f), v));
        jurisdictions.insert(
            name.clone(),
            RetentionDays {
                statistics: pick("statistics_days", j.statistics_days, defaults.statistics)?,
                compliant: pick("compliant_days", j.compliant_days, defaults.compliant)?,
                violation_candidate: pick(
                    "violation_candidate_days",
                    j.violation_candidate_days,
                    defaults.violation_candidate,
                )?,
                confirmed_violation: pick(
                    "confirmed_violation_days",
                    j.confirmed_violation_days,
                    defaults.confirmed_violation,
                )?,
            },
        );
    }
    Ok(RetentionConfig {
        enabled: r.enabled,
        sweep_interval_secs: range("retention.sweep_interval_secs", r.sweep_interval_secs, 1, 86_400)?,
        batch: range("retention.batch", r.batch, 1, 10_000)?,
        defaults,
        jurisdictions,
    })
}
