//! Config rollout: a site's agent config is validated with the agent's own validator
//! (`lanewatch-agent-config`, file checks left to the device), stored as the site's next
//! version with `config_version` stamped into it, and offered to the site's agents.
//!
//! Per agent and version the state moves pending → staged → applied, or to rejected:
//! - pending: stored, not delivered (agent offline, or no answer in time);
//! - staged / rejected: the agent's `ConfigAck` (recorded by the gateway, whichever request or
//!   none it answers, so an agent that could not run a staged config reports it later);
//! - applied: the agent's Hello reports the version (`config_version`, stamped in its file):
//!   its components were rebuilt with it and it reconnected.
//!
//! [`reconcile`] runs for an agent whenever its session opens (on the replica holding it) and
//! when a new version is stored (the replica of the mutation offers it to its own sessions and
//! a `SiteConfigChanged` event reaches the others): it pushes the site's newest version if the
//! agent reports an older one and its state for the newest is pending or absent. Staged,
//! applied and rejected versions are never pushed again, so an agent that cannot run a config
//! is not sent it in a loop; a newer edit (or a rollback, which is a newer version) is.

use std::time::Duration;

use chrono::Utc;
use lanewatch_agent_config::{AgentConfig, RemoteHost};

use crate::db::{Db, NewSiteConfig};
use crate::domain::{AgentConfigState, RolloutState, SiteConfigVersion};
use crate::error::{Error, ErrorKind};
use crate::events::EventKind;
use crate::sessions::{AGENT_REQUEST_TIMEOUT, AgentSessions};

/// How long a mutation waits for the online agents of its site to leave `pending`.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(AGENT_REQUEST_TIMEOUT.as_secs() + 3);
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// Largest config text accepted (a device config is a few kilobytes).
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;

/// Validates config text for `site_id` as the agent would, without the file checks only the
/// device can make. The error names the field and its line.
pub fn validate(site_id: &str, text: &str) -> Result<AgentConfig, Error> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(Error::invalid(format!(
            "config of {} bytes exceeds the limit of {MAX_CONFIG_BYTES}",
            text.len()
        )));
    }
    let config = lanewatch_agent_config::parse_and_validate(text, &RemoteHost)
        .map_err(|e| Error::invalid(format!("invalid config: {e}")))?;
    if config.site_id != site_id {
        let line = lanewatch_agent_config::line_of_field(text, "site_id")
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        return Err(Error::invalid(format!(
            "invalid config: site_id{line}: is {:?}, but this is the config of site {site_id:?}",
            config.site_id
        )));
    }
    Ok(config)
}

/// Refuses a change made outside Kubernetes (GraphQL, an agent's local UI) to a site that a
/// LanewatchSite custom resource manages: the resource is the site's one source of truth.
pub async fn ensure_not_managed(db: &Db, site_id: &str) -> Result<(), Error> {
    let manager = db
        .site_manager(site_id)
        .await
        .map_err(|e| Error::unavailable(format!("database unavailable: {e}")))?;
    match manager {
        None => Ok(()),
        Some(m) => Err(Error::new(
            ErrorKind::FailedPrecondition,
            format!(
                "site {site_id:?} is managed by Kubernetes ({m}): change that resource (e.g. in git) instead"
            ),
        )),
    }
}

/// Stores `text` as the site's next version (after validating it) and offers it to the site's
/// agents; returns once every online agent of the site answered (or [`SETTLE_TIMEOUT`]).
pub async fn publish(
    db: &Db,
    sessions: &dyn AgentSessions,
    new: &NewSiteConfig<'_>,
    text: &str,
) -> Result<SiteConfigVersion, Error> {
    validate(new.site_id, text)?;
    let stored = db
        .insert_site_config(new, |version| lanewatch_agent_config::stamp_config_version(text, version))
        .await
        .map_err(|e| Error::unavailable(format!("database unavailable: {e}")))?;
    tracing::info!(
        site_id = new.site_id,
        version = stored.version,
        by = new.created_by,
        "site config stored"
    );
    sessions.offer_site_config(new.site_id);
    sessions
        .events()
        .publish(EventKind::SiteConfigChanged { site_id: stored.site_id.clone(), version: stored.version });
    settle(db, sessions, &stored).await;
    Ok(stored)
}

/// Waits (bounded) until no online agent of the site is `pending` for `config`.
async fn settle(db: &Db, sessions: &dyn AgentSessions, config: &SiteConfigVersion) {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        let settled = async {
            let states = db.config_states(&config.site_id, config.version).await.ok()?;
            let agents = db.agents().await.ok()?;
            let waiting = agents.iter().filter(|a| a.site_id == config.site_id).any(|a| {
                sessions.counts_as_online(a)
                    && states.iter().any(|s| s.agent_id == a.id && s.state == RolloutState::Pending)
            });
            Some(!waiting)
        }
        .await;
        if settled == Some(true) || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// Records a config an agent was edited to on the device (its local UI; `Hello.local_config`)
/// as the site's next version, created by `agent:<id>`; `None` when the site's newest version
/// already is that text (the agent reconnected before it staged it). Validated as any edit; a
/// refused text stores nothing. The caller offers the new version to the site's agents (the
/// editing agent included: it then runs the recorded version).
pub async fn record_local_edit(
    db: &Db,
    agent_id: &str,
    site_id: &str,
    text: &str,
) -> Result<Option<SiteConfigVersion>, Error> {
    validate(site_id, text)?;
    ensure_not_managed(db, site_id).await?;
    // an agent that reconnects before it staged the recorded version sends the same edit again
    let newest = db
        .site_config(site_id, None)
        .await
        .map_err(|e| Error::unavailable(format!("database unavailable: {e}")))?;
    if newest.is_some_and(|n| lanewatch_agent_config::stamp_config_version(text, n.version) == n.toml) {
        return Ok(None);
    }
    let actor = format!("agent:{agent_id}");
    let new = NewSiteConfig {
        site_id,
        comment: Some("edited on the agent (local UI)"),
        rolled_back_from: None,
        created_by: &actor,
        created_at: Utc::now(),
        fence: None,
    };
    let stored = db
        .insert_site_config(&new, |version| lanewatch_agent_config::stamp_config_version(text, version))
        .await
        .map_err(|e| Error::unavailable(format!("database unavailable: {e}")))?;
    tracing::info!(
        site_id,
        agent_id,
        version = stored.version,
        "local edit on the agent stored as a site config version"
    );
    Ok(Some(stored))
}

/// What a new session of `agent` (on this replica) starts: an edit made on the device becomes
/// the site's next version (offered to the site's agents), then [`reconcile`].
pub async fn session_opened(sessions: &dyn AgentSessions, db: &Db, agent: &crate::domain::AgentHello) {
    if !agent.local_config.is_empty() {
        match record_local_edit(db, &agent.agent_id, &agent.site_id, &agent.local_config).await {
            Ok(Some(_)) => sessions.offer_site_config(&agent.site_id),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(agent_id = %agent.agent_id, error = %e.message, "the agent's local config edit was not recorded")
            }
        }
    }
    reconcile(sessions, db, &agent.agent_id, &agent.site_id, agent.config_version).await;
}

/// Brings one connected agent (its session on this replica) to its site's newest config:
/// records `applied` for the version its Hello reports, then pushes the newest version if the
/// agent runs an older one and has not staged, applied or rejected it. Errors are logged.
pub async fn reconcile(sessions: &dyn AgentSessions, db: &Db, agent_id: &str, site_id: &str, reported: u64) {
    if let Err(e) = try_reconcile(sessions, db, agent_id, site_id, reported).await {
        tracing::warn!(agent_id, site_id, error = %e.message, "config rollout for the agent failed");
    }
}

async fn try_reconcile(
    sessions: &dyn AgentSessions,
    db: &Db,
    agent_id: &str,
    site_id: &str,
    reported: u64,
) -> Result<(), Error> {
    let storage = |e: crate::db::DbError| Error::unavailable(format!("database unavailable: {e}"));
    let Some(newest) = db.site_config(site_id, None).await.map_err(storage)? else { return Ok(()) };
    let state = |version, state, error| AgentConfigState {
        agent_id: agent_id.to_owned(),
        site_id: site_id.to_owned(),
        version,
        state,
        error,
        updated_at: Utc::now(),
    };
    if reported > 0 && db.site_config(site_id, Some(reported)).await.map_err(storage)?.is_some() {
        use RolloutState::*;
        if db
            .set_config_state(&state(reported, Applied, None), &[Pending, Staged, Rejected])
            .await
            .map_err(storage)?
        {
            tracing::info!(agent_id, site_id, version = reported, "agent runs the site config");
        }
    }
    if newest.version <= reported {
        return Ok(());
    }
    let current = db.config_state(agent_id, newest.version).await.map_err(storage)?;
    if current.as_ref().is_some_and(|s| s.state != RolloutState::Pending) {
        return Ok(());
    }
    if current.is_none() {
        db.set_config_state(&state(newest.version, RolloutState::Pending, None), &[])
            .await
            .map_err(storage)?;
    }
    let Some(_pushing) = sessions.begin_push(agent_id, newest.version) else { return Ok(()) };
    tracing::info!(agent_id, site_id, version = newest.version, reported, "pushing site config");
    // the gateway records the agent's ConfigAck; an agent that does not answer stays pending
    match sessions.push_config(agent_id, newest.version, newest.toml.clone()).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind == ErrorKind::InvalidArgument => Ok(()), // rejected, recorded with the reason
        Err(e) => Err(e),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A site config the validator accepts (the site resource's tests use it too).
    pub(crate) const VALID: &str = r#"version = 1
agent_id = "a1"
site_id = "s1"

[control_plane]
url = "http://127.0.0.1:1"

[site]
lanes = 2

[simulator]
seed = 1
flow_veh_h_per_lane = 900

[[cameras]]
id = "front"
lanes = [0, 1]

[cameras.source]
kind = "simulator"
"#;

    #[test]
    fn validation_names_the_field_and_line() {
        assert!(validate("s1", VALID).is_ok());
        let bad = VALID.replace("= 900", "= 0");
        let err = validate("s1", &bad).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("simulator.flow_veh_h_per_lane (line 13)"), "{}", err.message);
        let err = validate("s1", &VALID.replace("lanes = 2", "lanes = 2\nbogus = 1")).unwrap_err();
        assert!(err.message.contains("bogus") && err.message.contains("line 10"), "{}", err.message);
    }

    #[test]
    fn a_config_for_another_site_is_refused() {
        let err = validate("s2", VALID).unwrap_err();
        assert!(err.message.contains("site_id (line 3)"), "{}", err.message);
    }

    #[tokio::test]
    async fn a_local_edit_becomes_the_next_version_once_by_its_agent() {
        let db = Db::connect("sqlite::memory:").await.unwrap();
        let edited = VALID.replace("lanes = 2", "lanes = 3");
        let first = record_local_edit(&db, "a1", "s1", &edited).await.unwrap().expect("recorded");
        assert_eq!(first.version, 1);
        assert_eq!(first.created_by, "agent:a1");
        assert!(first.toml.contains("lanes = 3"));
        // the same edit sent again (a reconnect before staging it) records nothing new
        assert!(record_local_edit(&db, "a1", "s1", &edited).await.unwrap().is_none());
        // another edit is the next version; a refused one stores nothing
        let other = VALID.replace("= 900", "= 1000");
        let second = record_local_edit(&db, "a1", "s1", &other).await.unwrap().expect("recorded");
        assert_eq!(second.version, 2);
        assert!(record_local_edit(&db, "a1", "s1", &VALID.replace("= 900", "= 0")).await.is_err());
        assert_eq!(db.site_config("s1", None).await.unwrap().unwrap().version, 2);
    }

    #[tokio::test]
    async fn a_site_managed_by_a_resource_refuses_other_edits_naming_it() {
        use crate::db::leader::{ManagedSite, SiteManager};
        let db = Db::connect("sqlite::memory:").await.unwrap();
        assert!(ensure_not_managed(&db, "s1").await.is_ok());
        let fence = db.begin_leader_term("singletons", "r1", Utc::now()).await.unwrap();
        let manager = SiteManager { site_id: "s1".into(), namespace: "lw".into(), name: "north".into() };
        let site = ManagedSite { manager: &manager, jurisdiction: None, lanes: &[] };
        db.claim_managed_site(&fence, &site, Utc::now()).await.unwrap().unwrap();
        let err = record_local_edit(&db, "a1", "s1", VALID).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::FailedPrecondition);
        assert!(err.message.contains("managed by Kubernetes (LanewatchSite lw/north)"), "{}", err.message);
        assert_eq!(db.site_config("s1", None).await.unwrap(), None, "the local edit stored nothing");
    }

    #[test]
    fn file_checks_are_left_to_the_device() {
        let text =
            VALID.replace("kind = \"simulator\"", "kind = \"file_replay\"\npath = \"/nonexistent/frames\"");
        assert!(validate("s1", &text).is_ok(), "{:?}", validate("s1", &text).err());
    }
}
