//! Site configs: the `siteConfig` and `siteConfigHistory` queries, the audited
//! `updateSiteConfig` and `rollbackSiteConfig` mutations (published through `rollout`), and the
//! GraphQL objects of config versions and of each agent's rollout state. A site managed by a
//! LanewatchSite custom resource refuses both mutations, naming the resource.

use async_graphql::{ComplexObject, Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::{audited, guard, page_size, parts, storage, storage_error};
use crate::auth::Action;
use crate::domain;
use crate::error::Error;

#[derive(Default)]
pub struct ConfigsQuery;

#[Object]
impl ConfigsQuery {
    /// A site's agent config: the newest version, or `version` (admins and operators).
    async fn site_config(
        &self,
        ctx: &Context<'_>,
        site_id: String,
        version: Option<u64>,
    ) -> async_graphql::Result<Option<SiteConfig>> {
        let (api, _) = guard(ctx, Action::ConfigureSites)?;
        let config = api.db.site_config(&site_id, version).await.map_err(storage_error)?;
        Ok(config.map(SiteConfig::from))
    }

    /// A site's config versions, newest first (admins and operators).
    async fn site_config_history(
        &self,
        ctx: &Context<'_>,
        site_id: String,
        #[graphql(default = 20)] first: i32,
    ) -> async_graphql::Result<Vec<SiteConfig>> {
        let (api, _) = guard(ctx, Action::ConfigureSites)?;
        let limit = page_size(first)?;
        let history = api.db.site_config_history(&site_id, limit).await.map_err(storage_error)?;
        Ok(history.into_iter().map(SiteConfig::from).collect())
    }
}

#[derive(Default)]
pub struct ConfigsMutation;

#[Object]
impl ConfigsMutation {
    /// Stores a new version of a site's agent config (admins and operators) and pushes it to
    /// the site's online agents, answering once they acked (or after a few seconds). The text
    /// is validated as the agent validates it; an error names the field and its line, and
    /// nothing is stored. Offline agents get it when they reconnect.
    async fn update_site_config(
        &self,
        ctx: &Context<'_>,
        site_id: String,
        toml: String,
        comment: Option<String>,
    ) -> async_graphql::Result<SiteConfig> {
        let (api, who) = parts(ctx)?;
        let result = async {
            who.authorize(Action::ConfigureSites)?;
            crate::rollout::ensure_not_managed(&api.db, &site_id).await?;
            let actor = who.actor();
            let new = new_site_config(&site_id, comment.as_deref(), None, &actor);
            crate::rollout::publish(&api.db, &api.gateway, &new, &toml).await.map(SiteConfig::from)
        }
        .await;
        let target = config_target(&site_id, &result);
        audited(api, who, "updateSiteConfig", &target, result).await
    }

    /// Makes the content of an earlier `version` the site's newest version (admins and
    /// operators), pushed like `updateSiteConfig`.
    async fn rollback_site_config(
        &self,
        ctx: &Context<'_>,
        site_id: String,
        version: u64,
        comment: Option<String>,
    ) -> async_graphql::Result<SiteConfig> {
        let (api, who) = parts(ctx)?;
        let result = async {
            who.authorize(Action::ConfigureSites)?;
            crate::rollout::ensure_not_managed(&api.db, &site_id).await?;
            let earlier =
                api.db.site_config(&site_id, Some(version)).await.map_err(storage)?.ok_or_else(|| {
                    Error::not_found(format!("site {site_id:?} has no config version {version}"))
                })?;
            let actor = who.actor();
            let comment = comment.unwrap_or_else(|| format!("rollback to version {version}"));
            let new = new_site_config(&site_id, Some(&comment), Some(version), &actor);
            crate::rollout::publish(&api.db, &api.gateway, &new, &earlier.toml).await.map(SiteConfig::from)
        }
        .await;
        let target = config_target(&site_id, &result);
        audited(api, who, "rollbackSiteConfig", &target, result).await
    }
}

fn new_site_config<'a>(
    site_id: &'a str,
    comment: Option<&'a str>,
    rolled_back_from: Option<u64>,
    actor: &'a str,
) -> crate::db::NewSiteConfig<'a> {
    crate::db::NewSiteConfig {
        site_id,
        comment: comment.map(str::trim).filter(|c| !c.is_empty()),
        rolled_back_from,
        created_by: actor,
        created_at: Utc::now(),
        fence: None,
    }
}

/// The audit target of a config mutation: the version it stored, when it stored one.
fn config_target(site_id: &str, result: &Result<SiteConfig, Error>) -> String {
    match result {
        Ok(c) => format!("site/{site_id}/config/{}", c.version),
        Err(_) => format!("site/{site_id}/config"),
    }
}

/// One version of a site's agent config.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct SiteConfig {
    site: String,
    /// 1, 2, 3, … per site; the agent reports it as `Agent.configVersion` once it runs it.
    version: u64,
    /// The agent config file (TOML) as pushed, `config_version` stamped.
    toml: String,
    comment: Option<String>,
    /// The version whose content this one restores, for a rollback.
    rolled_back_from: Option<u64>,
    /// The API key (or `anonymous-local`) that made it.
    created_by: String,
    created_at: DateTime<Utc>,
}

impl From<domain::SiteConfigVersion> for SiteConfig {
    fn from(c: domain::SiteConfigVersion) -> Self {
        Self {
            site: c.site_id,
            version: c.version,
            toml: c.toml,
            comment: c.comment,
            rolled_back_from: c.rolled_back_from,
            created_by: c.created_by,
            created_at: c.created_at,
        }
    }
}

#[ComplexObject]
impl SiteConfig {
    /// Each agent's state with this version, by agent id.
    async fn rollout(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<AgentConfigRollout>> {
        let (api, _) = guard(ctx, Action::ConfigureSites)?;
        let states = api.db.config_states(&self.site, self.version).await.map_err(storage_error)?;
        Ok(states.into_iter().map(AgentConfigRollout::from).collect())
    }
}

/// Where one agent stands with one config version.
#[derive(SimpleObject)]
pub struct AgentConfigRollout {
    agent_id: ID,
    version: u64,
    state: RolloutState,
    /// The agent's reason, when it rejected the version (or could not run it).
    error: Option<String>,
    updated_at: DateTime<Utc>,
}

impl From<domain::AgentConfigState> for AgentConfigRollout {
    fn from(s: domain::AgentConfigState) -> Self {
        Self {
            agent_id: ID(s.agent_id),
            version: s.version,
            state: RolloutState::from_domain(s.state),
            error: s.error,
            updated_at: s.updated_at,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum RolloutState {
    /// Stored, not delivered yet (the agent is offline or did not answer).
    Pending,
    /// Validated and written by the agent; in force once its components restarted.
    Staged,
    /// The agent reported (in its Hello) that it runs this version.
    Applied,
    /// The agent refused the version or could not run it and went back to its previous one.
    Rejected,
}

impl RolloutState {
    fn from_domain(s: domain::RolloutState) -> Self {
        match s {
            domain::RolloutState::Pending => Self::Pending,
            domain::RolloutState::Staged => Self::Staged,
            domain::RolloutState::Applied => Self::Applied,
            domain::RolloutState::Rejected => Self::Rejected,
        }
    }
}
