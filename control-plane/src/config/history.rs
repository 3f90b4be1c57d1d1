//! The `[history]` section: how long component history is kept raw and as rollups, how often
//! the rollup and retention task runs, and how many samples may wait for the writer.

use serde::Deserialize;

use super::ConfigError;

/// Component history (`[history]`): the component lines of every heartbeat, kept as raw samples
/// for `raw_retention_secs` and as rollups of `rollup_secs` for `rollup_retention_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Record heartbeat samples and run the rollup/retention task.
    pub enabled: bool,
    /// How long raw samples (one per component per heartbeat) are kept.
    pub raw_retention_secs: u64,
    /// The rollup period: raw samples are summarized per agent, component and period.
    pub rollup_secs: u64,
    /// How long rollups are kept.
    pub rollup_retention_secs: u64,
    /// How often the rollup and retention task runs.
    pub maintenance_interval_secs: u64,
    /// Rows one retention statement deletes at most (the task repeats it until done).
    pub batch_rows: u64,
    /// Samples waiting for the writer at most; new ones are dropped (and counted) past it.
    pub queue_samples: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            raw_retention_secs: 86_400,
            rollup_secs: 60,
            rollup_retention_secs: 30 * 86_400,
            maintenance_interval_secs: 30,
            batch_rows: 10_000,
            queue_samples: 200_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileHistory {
    enabled: bool,
    raw_retention_secs: u64,
    rollup_secs: u64,
    rollup_retention_secs: u64,
    maintenance_interval_secs: u64,
    batch_rows: u64,
    queue_samples: u64,
}

impl Default for FileHistory {
    fn default() -> Self {
        let d = HistoryConfig::default();
        Self {
            enabled: d.enabled,
            raw_retention_secs: d.raw_retention_secs,
            rollup_secs: d.rollup_secs,
            rollup_retention_secs: d.rollup_retention_secs,
            maintenance_interval_secs: d.maintenance_interval_secs,
            batch_rows: d.batch_rows,
            queue_samples: d.queue_samples as u64,
        }
    }
}

pub(super) fn validate_history(h: &FileHistory) -> Result<HistoryConfig, ConfigError> {
    fn range(field: &str, v: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError::new(format!("history.{field}"), format!("{v} is outside {min}..={max}")))
        }
    }
    let raw_retention_secs = range("raw_retention_secs", h.raw_retention_secs, 600, 7 * 86_400)?;
    let rollup_secs = range("rollup_secs", h.rollup_secs, 10, 3600)?;
    if !3600u64.is_multiple_of(rollup_secs) {
        return Err(ConfigError::new(
            "history.rollup_secs",
            format!("{rollup_secs} does not divide an hour evenly (e.g. 10, 30, 60, 300, 600, 3600)"),
        ));
    }
    let rollup_retention_secs = range("rollup_retention_secs", h.rollup_retention_secs, 3600, 400 * 86_400)?;
    if rollup_retention_secs < raw_retention_secs {
        return Err(ConfigError::new(
            "history.rollup_retention_secs",
            "must be at least history.raw_retention_secs: rollups are what is kept longer",
        ));
    }
    let maintenance_interval_secs = range("maintenance_interval_secs", h.maintenance_interval_secs, 1, 3600)?;
    let batch_rows = range("batch_rows", h.batch_rows, 100, 1_000_000)?;
    let queue_samples = range("queue_samples", h.queue_samples, 1000, 10_000_000)?;
    Ok(HistoryConfig {
        enabled: h.enabled,
        raw_retention_secs,
        rollup_secs,
        rollup_retention_secs,
        maintenance_interval_secs,
        batch_rows,
        queue_samples: usize::try_from(queue_samples).unwrap_or(usize::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Env, Overrides};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, &Overrides::default(), &Env::default())
    }

    fn field_of(text: &str) -> String {
        parse(text).unwrap_err().field
    }

    #[test]
    fn history_has_defaults_and_is_validated() {
        assert_eq!(parse("version = 1").unwrap().history, HistoryConfig::default());
        let c = parse("version = 1\n[history]\nraw_retention_secs = 3600\nrollup_secs = 300").unwrap();
        assert_eq!((c.history.raw_retention_secs, c.history.rollup_secs), (3600, 300));
        assert!(!parse("version = 1\n[history]\nenabled = false").unwrap().history.enabled);
        for (toml, field) in [
            ("raw_retention_secs = 10", "history.raw_retention_secs"),
            ("rollup_secs = 7", "history.rollup_secs"),
            ("rollup_secs = 70", "history.rollup_secs"),
            ("raw_retention_secs = 90000\nrollup_retention_secs = 3600", "history.rollup_retention_secs"),
            ("batch_rows = 0", "history.batch_rows"),
            ("queue_samples = 10", "history.queue_samples"),
            ("maintenance_interval_secs = 0", "history.maintenance_interval_secs"),
            ("keep = 1", "history.keep"),
        ] {
            assert_eq!(field_of(&format!("version = 1\n[history]\n{toml}")), field, "{toml}");
        }
        let e = parse("version = 1\n[history]\nrollup_secs = 70").unwrap_err();
        assert!(e.why.contains("does not divide an hour"), "{e}");
    }
}
