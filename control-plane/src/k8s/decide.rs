//! The LanewatchSite reconciler's decisions as pure functions, tested without I/O: what a spec
//! asks for ([`desired`]), whether its config is a new version ([`config_step`]), and the
//! status that an outcome and the observed agents give ([`status`], [`requeue_after`]).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::crd::{LanewatchSiteSpec, LanewatchSiteStatus, RolloutStatus, SiteCondition};
use crate::domain::{HovPolicy, SiteConfigVersion, TimeWindow};

/// A spec problem, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field}: {why}")]
pub struct SpecError {
    pub field: String,
    pub why: String,
}

fn spec_error(field: impl Into<String>, why: impl Into<String>) -> SpecError {
    SpecError { field: field.into(), why: why.into() }
}

/// Where the config text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    Inline(String),
    ConfigMap { name: String, key: String },
}

/// What a LanewatchSite asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredSite {
    pub site_id: String,
    pub jurisdiction: Option<String>,
    pub lanes: Vec<(u32, HovPolicy)>,
    pub config: ConfigSource,
}

/// Checks a spec (what the CRD's schema cannot say) and turns it into domain types.
pub fn desired(spec: &LanewatchSiteSpec) -> Result<DesiredSite, SpecError> {
    let site_id = spec.site_id.trim();
    if site_id.is_empty() || site_id.len() > 128 {
        return Err(spec_error("siteId", "must be 1 to 128 characters"));
    }
    let jurisdiction = match spec.jurisdiction.as_deref().map(str::trim) {
        Some("") => return Err(spec_error("jurisdiction", "must not be empty; leave it out for none")),
        j => j.map(str::to_owned),
    };
    let mut lanes: Vec<(u32, HovPolicy)> = Vec::with_capacity(spec.lanes.len());
    for (i, lane) in spec.lanes.iter().enumerate() {
        if lanes.iter().any(|(l, _)| *l == lane.lane) {
            return Err(spec_error(
                format!("lanes[{i}].lane"),
                format!("lane {} is listed twice", lane.lane),
            ));
        }
        if !(1..=9).contains(&lane.min_occupants) {
            return Err(spec_error(
                format!("lanes[{i}].minOccupants"),
                format!("must be between 1 and 9, got {}", lane.min_occupants),
            ));
        }
        let mut windows = Vec::with_capacity(lane.windows.len());
        for (j, w) in lane.windows.iter().enumerate() {
            let field = |end: &str| format!("lanes[{i}].windows[{j}].{end}");
            let start_minute = minute_of(&w.start).map_err(|why| spec_error(field("start"), why))?;
            let end_minute = minute_of(&w.end).map_err(|why| spec_error(field("end"), why))?;
            if start_minute == end_minute {
                return Err(spec_error(field("end"), "must differ from start"));
            }
            windows.push(TimeWindow { start_minute, end_minute });
        }
        lanes.push((lane.lane, HovPolicy { min_occupants: lane.min_occupants, windows }));
    }
    let source = &spec.agent_config;
    let config = match (&source.inline, &source.config_map_ref) {
        (Some(text), None) => ConfigSource::Inline(text.clone()),
        (None, Some(r)) if !r.name.is_empty() && !r.key.is_empty() => {
            ConfigSource::ConfigMap { name: r.name.clone(), key: r.key.clone() }
        }
        (None, Some(_)) => {
            return Err(spec_error("agentConfig.configMapRef", "name and key must not be empty"));
        }
        _ => return Err(spec_error("agentConfig", "set exactly one of inline and configMapRef")),
    };
    Ok(DesiredSite { site_id: site_id.to_owned(), jurisdiction, lanes, config })
}

/// Minutes after midnight of `HH:MM`.
fn minute_of(text: &str) -> Result<u16, String> {
    let bad = || format!("{text:?} is not a time of day HH:MM (00:00 to 23:59)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// Whether the desired text must become a new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigStep {
    /// The site's newest version already is this text.
    Unchanged {
        version: u64,
    },
    Publish,
}

/// Compares the desired text with the site's newest version (which has `config_version`
/// stamped into it), as an agent's repeated local edit is compared.
pub fn config_step(text: &str, newest: Option<&SiteConfigVersion>) -> ConfigStep {
    match newest {
        Some(n) if lanewatch_agent_config::stamp_config_version(text, n.version) == n.toml => {
            ConfigStep::Unchanged { version: n.version }
        }
        _ => ConfigStep::Publish,
    }
}

/// How a reconciliation ended for the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The config is the site's newest version (stored now or before).
    Applied { version: u64 },
    /// The resource asks for something refused; nothing was stored.
    Refused { reason: &'static str, message: String },
}

/// What the control plane sees of the site's agents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub agents_online: u32,
    pub agents_total: u32,
    pub rollout: Option<RolloutStatus>,
}

/// The status for `outcome`: conditions Ready, Progressing and Degraded (each keeping its
/// `lastTransitionTime` while its status stays), the observed generation and agents.
pub fn status(
    outcome: &Outcome,
    observed: &Observed,
    generation: Option<i64>,
    previous: Option<&LanewatchSiteStatus>,
    now: DateTime<Utc>,
) -> LanewatchSiteStatus {
    let (ready, progressing, degraded) = match outcome {
        Outcome::Refused { reason, message } => (
            (false, *reason, message.clone()),
            (false, *reason, "nothing was stored".to_owned()),
            (true, *reason, message.clone()),
        ),
        Outcome::Applied { version } => {
            let r = observed.rollout.clone().unwrap_or_default();
            if r.rejected > 0 {
                let msg = format!("{} agent(s) rejected config version {version}", r.rejected);
                (
                    (false, "AgentsRejected", msg.clone()),
                    (r.pending + r.staged > 0, "Rollout", msg.clone()),
                    (true, "AgentsRejected", msg),
                )
            } else if r.pending + r.staged > 0 {
                let msg = format!(
                    "config version {version}: {} pending, {} staged, {} applied",
                    r.pending, r.staged, r.applied
                );
                (
                    (false, "RollingOut", msg.clone()),
                    (true, "RollingOut", msg),
                    (false, "AsExpected", String::new()),
                )
            } else {
                let msg =
                    format!("config version {version} is the site's newest; {} agent(s) run it", r.applied);
                (
                    (true, "Applied", msg.clone()),
                    (false, "Applied", msg),
                    (false, "AsExpected", String::new()),
                )
            }
        }
    };
    let condition = |type_: &str, (on, reason, message): (bool, &str, String)| {
        let status = if on { "True" } else { "False" }.to_owned();
        let before = previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == type_));
        let last_transition_time = match before {
            Some(b) if b.status == status => b.last_transition_time.clone(),
            _ => now.to_rfc3339_opts(SecondsFormat::Secs, true),
        };
        SiteCondition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            last_transition_time,
            observed_generation: generation,
        }
    };
    LanewatchSiteStatus {
        observed_generation: generation,
        conditions: vec![
            condition("Ready", ready),
            condition("Progressing", progressing),
            condition("Degraded", degraded),
        ],
        agents_online: observed.agents_online,
        agents_total: observed.agents_total,
        rollout: observed.rollout.clone(),
    }
}

/// When to look again: soon while a rollout is under way, otherwise at the resync period
/// (agents' counts, and a referenced ConfigMap's edits, are picked up then).
pub fn requeue_after(status: &LanewatchSiteStatus) -> Duration {
    let progressing = status.conditions.iter().any(|c| c.type_ == "Progressing" && c.status == "True");
    if progressing { Duration::from_secs(5) } else { Duration::from_secs(60) }
}

#[cfg(test)]
mod tests {
    use super::super::crd::{AgentConfigSource, ConfigMapKeyRef, LanePolicySpec, TimeWindowSpec};
    use super::*;

    fn spec() -> LanewatchSiteSpec {
        LanewatchSiteSpec {
            site_id: "s1".into(),
            jurisdiction: Some("CA".into()),
            lanes: vec![LanePolicySpec {
                lane: 0,
                min_occupants: 2,
                windows: vec![TimeWindowSpec { start: "22:00".into(), end: "06:30".into() }],
            }],
            agent_config: AgentConfigSource { inline: Some("version = 1".into()), config_map_ref: None },
        }
    }

    #[test]
    fn a_spec_becomes_domain_types() {
        let d = desired(&spec()).unwrap();
        assert_eq!(d.site_id, "s1");
        assert_eq!(d.lanes[0].1.windows, vec![TimeWindow { start_minute: 1320, end_minute: 390 }]);
        assert_eq!(d.config, ConfigSource::Inline("version = 1".into()));
    }

    #[test]
    fn a_bad_spec_names_its_field() {
        let field = |f: fn(&mut LanewatchSiteSpec)| {
            let mut s = spec();
            f(&mut s);
            desired(&s).unwrap_err().to_string()
        };
        assert!(field(|s| s.site_id = " ".into()).starts_with("spec.siteId:"));
        assert!(field(|s| s.lanes[0].min_occupants = 0).starts_with("spec.lanes[0].minOccupants:"));
        let e = field(|s| s.lanes[0].windows[0].end = "24:00".into());
        assert_eq!(e, "spec.lanes[0].windows[0].end: \"24:00\" is not a time of day HH:MM (00:00 to 23:59)");
        assert!(field(|s| s.lanes.push(s.lanes[0].clone())).contains("listed twice"));
        let both = field(|s| {
            s.agent_config.config_map_ref = Some(ConfigMapKeyRef { name: "c".into(), key: "k".into() })
        });
        assert_eq!(both, "spec.agentConfig: set exactly one of inline and configMapRef");
        assert!(field(|s| s.agent_config.inline = None).starts_with("spec.agentConfig:"));
        assert!(field(|s| s.jurisdiction = Some("".into())).starts_with("spec.jurisdiction:"));
    }

    #[test]
    fn the_same_text_is_not_a_new_version() {
        let text = "version = 1\nsite_id = \"s1\"\n";
        let newest = SiteConfigVersion {
            site_id: "s1".into(),
            version: 3,
            toml: lanewatch_agent_config::stamp_config_version(text, 3),
            comment: None,
            rolled_back_from: None,
            created_by: "kubernetes".into(),
            created_at: Utc::now(),
        };
        assert_eq!(config_step(text, Some(&newest)), ConfigStep::Unchanged { version: 3 });
        assert_eq!(config_step("version = 1\nsite_id = \"s2\"\n", Some(&newest)), ConfigStep::Publish);
        assert_eq!(config_step(text, None), ConfigStep::Publish);
    }

    fn of<'a>(s: &'a LanewatchSiteStatus, t: &str) -> &'a SiteCondition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn conditions_follow_the_outcome_and_the_rollout() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let t1 = t0 + chrono::Duration::minutes(5);
        let refused = Outcome::Refused {
            reason: "InvalidConfig",
            message: "invalid config: cameras[0].lanes (line 14): ..".into(),
        };
        let s = status(&refused, &Observed::default(), Some(2), None, t0);
        assert_eq!((of(&s, "Degraded").status.as_str(), of(&s, "Ready").status.as_str()), ("True", "False"));
        assert!(of(&s, "Degraded").message.contains("line 14"));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(requeue_after(&s), Duration::from_secs(60));

        let rolling = Observed {
            agents_online: 2,
            agents_total: 3,
            rollout: Some(RolloutStatus { version: 4, pending: 1, staged: 0, applied: 1, rejected: 0 }),
        };
        let s2 = status(&Outcome::Applied { version: 4 }, &rolling, Some(3), Some(&s), t1);
        assert_eq!(of(&s2, "Progressing").status, "True");
        assert_eq!(of(&s2, "Degraded").status, "False");
        assert_eq!(of(&s2, "Degraded").last_transition_time, "2026-01-01T00:05:00Z");
        assert_eq!(of(&s2, "Ready").last_transition_time, "2026-01-01T00:00:00Z", "Ready stayed False");
        assert_eq!((s2.agents_online, s2.agents_total), (2, 3));
        assert_eq!(requeue_after(&s2), Duration::from_secs(5));

        let done = Observed {
            rollout: Some(RolloutStatus { version: 4, applied: 2, ..Default::default() }),
            ..rolling.clone()
        };
        let s3 = status(&Outcome::Applied { version: 4 }, &done, Some(3), Some(&s2), t1);
        assert_eq!(
            (of(&s3, "Ready").status.as_str(), of(&s3, "Progressing").status.as_str()),
            ("True", "False")
        );

        let rejected = Observed {
            rollout: Some(RolloutStatus { version: 4, rejected: 1, applied: 1, ..Default::default() }),
            ..rolling
        };
        let s4 = status(&Outcome::Applied { version: 4 }, &rejected, Some(3), Some(&s3), t1);
        assert_eq!(of(&s4, "Degraded").reason, "AgentsRejected");
        assert_eq!(of(&s4, "Ready").status, "False");
    }
}
