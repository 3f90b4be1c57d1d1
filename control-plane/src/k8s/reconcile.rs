//! The LanewatchSite reconciler's I/O: read the resource (and its ConfigMap), store the site
//! through the same validated rollout as a GraphQL edit (`rollout::validate`,
//! `rollout::publish`), claim the site for the resource, and write the status with server-side
//! apply. Every SQL write is fenced with the current leader term. The decisions are in
//! `decide.rs`.

use std::sync::Arc;

use chrono::Utc;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::crd::{LanewatchSite, LanewatchSiteStatus, RolloutStatus};
use super::decide::{self, ConfigSource, ConfigStep, DesiredSite, Observed, Outcome};
use crate::db::leader::{Fence, ManagedSite, SiteManager};
use crate::db::{Db, DbError, NewSiteConfig};
use crate::domain::RolloutState;
use crate::sessions::AgentSessions;

/// What every reconciliation of one leader term shares.
pub struct Context {
    pub client: kube::Client,
    pub db: Db,
    pub sessions: Arc<dyn AgentSessions>,
    pub namespace: String,
    /// The field manager of status writes (server-side apply).
    pub field_manager: String,
    /// This leader term's fencing token.
    pub fence: Fence,
}

/// Why a reconciliation failed (it is retried); a resource that asks for something refused
/// is not an error but a `Degraded` status.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("config rollout: {0}")]
    Rollout(crate::error::Error),
    #[error("the resource has no {0}")]
    Malformed(&'static str),
}

/// Reconciles one resource: applies it, then writes its status.
pub async fn reconcile(site: Arc<LanewatchSite>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let name = site.meta().name.clone().ok_or(ReconcileError::Malformed("metadata.name"))?;
    let namespace = site.namespace().unwrap_or_else(|| ctx.namespace.clone());
    let outcome = apply(&site, &name, &namespace, &ctx).await?;
    let site_id = site.spec.site_id.trim();
    let observed = match &outcome {
        Outcome::Applied { version } => observe(&ctx, site_id, *version).await?,
        Outcome::Refused { .. } => Observed::default(),
    };
    let status =
        decide::status(&outcome, &observed, site.meta().generation, site.status.as_ref(), Utc::now());
    if let Outcome::Refused { reason, message } = &outcome {
        tracing::warn!(resource = %format!("{namespace}/{name}"), reason, message, "LanewatchSite refused; nothing stored");
    }
    // an unchanged status is not written again: the write's own watch event would wake this
    // reconciliation once more (a real API server skips a no-op apply; an emulator may not)
    if site.status.as_ref() != Some(&status) {
        patch_status(&ctx, &namespace, &name, &status).await?;
    }
    Ok(Action::requeue(decide::requeue_after(&status)))
}

/// Retries a failed reconciliation after a short wait.
pub fn error_policy(site: Arc<LanewatchSite>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(resource = %site.name_any(), error = %error, "LanewatchSite reconciliation failed; retrying");
    Action::requeue(std::time::Duration::from_secs(10))
}

async fn apply(
    site: &LanewatchSite,
    name: &str,
    namespace: &str,
    ctx: &Context,
) -> Result<Outcome, ReconcileError> {
    let desired = match decide::desired(&site.spec) {
        Ok(d) => d,
        Err(e) => return Ok(Outcome::Refused { reason: "InvalidSpec", message: e.to_string() }),
    };
    let text = match config_text(ctx, namespace, &desired).await? {
        Ok(text) => text,
        Err(refused) => return Ok(refused),
    };
    if let Err(e) = crate::rollout::validate(&desired.site_id, &text) {
        return Ok(Outcome::Refused { reason: "InvalidConfig", message: e.message });
    }
    let manager = SiteManager {
        site_id: desired.site_id.clone(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    let managed = ManagedSite {
        manager: &manager,
        jurisdiction: desired.jurisdiction.as_deref(),
        lanes: &desired.lanes,
    };
    if let Err(other) = ctx.db.claim_managed_site(&ctx.fence, &managed, Utc::now()).await? {
        return Ok(Outcome::Refused {
            reason: "SiteConflict",
            message: format!(
                "site {:?} is already managed by {other}; one resource per site",
                desired.site_id
            ),
        });
    }
    let newest = ctx.db.site_config(&desired.site_id, None).await?;
    if let ConfigStep::Unchanged { version } = decide::config_step(&text, newest.as_ref()) {
        return Ok(Outcome::Applied { version });
    }
    let actor = format!("kubernetes:{namespace}/{name}");
    let comment =
        format!("LanewatchSite {namespace}/{name} generation {}", site.meta().generation.unwrap_or(0));
    let new = NewSiteConfig {
        site_id: &desired.site_id,
        comment: Some(&comment),
        rolled_back_from: None,
        created_by: &actor,
        created_at: Utc::now(),
        fence: Some(&ctx.fence),
    };
    let stored = crate::rollout::publish(&ctx.db, ctx.sessions.as_ref(), &new, &text)
        .await
        .map_err(ReconcileError::Rollout)?;
    tracing::info!(resource = %format!("{namespace}/{name}"), site_id = %desired.site_id, version = stored.version, "LanewatchSite config stored");
    Ok(Outcome::Applied { version: stored.version })
}

/// The config text, or the refusal when its ConfigMap or key is missing.
async fn config_text(
    ctx: &Context,
    namespace: &str,
    desired: &DesiredSite,
) -> Result<Result<String, Outcome>, ReconcileError> {
    match &desired.config {
        ConfigSource::Inline(text) => Ok(Ok(text.clone())),
        ConfigSource::ConfigMap { name, key } => {
            let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
            let Some(map) = maps.get_opt(name).await? else {
                return Ok(Err(Outcome::Refused {
                    reason: "ConfigMapNotFound",
                    message: format!("spec.agentConfig.configMapRef: no ConfigMap {namespace}/{name}"),
                }));
            };
            match map.data.as_ref().and_then(|d| d.get(key)) {
                Some(text) => Ok(Ok(text.clone())),
                None => Ok(Err(Outcome::Refused {
                    reason: "ConfigMapKeyNotFound",
                    message: format!(
                        "spec.agentConfig.configMapRef: ConfigMap {namespace}/{name} has no key {key:?}"
                    ),
                })),
            }
        }
    }
}

/// The site's agents and the rollout of `version`.
async fn observe(ctx: &Context, site_id: &str, version: u64) -> Result<Observed, ReconcileError> {
    let agents = ctx.db.agents().await?;
    let of_site: Vec<_> = agents.iter().filter(|a| a.site_id == site_id).collect();
    let online = of_site.iter().filter(|a| ctx.sessions.counts_as_online(a)).count();
    let mut rollout = RolloutStatus { version, ..RolloutStatus::default() };
    for state in ctx.db.config_states(site_id, version).await? {
        match state.state {
            RolloutState::Pending => rollout.pending += 1,
            RolloutState::Staged => rollout.staged += 1,
            RolloutState::Applied => rollout.applied += 1,
            RolloutState::Rejected => rollout.rejected += 1,
        }
    }
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(Observed { agents_online: count(online), agents_total: count(of_site.len()), rollout: Some(rollout) })
}

/// Writes the status by server-side apply, as this field manager (forcing: the control plane
/// owns the status).
pub async fn patch_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &LanewatchSiteStatus,
) -> Result<(), ReconcileError> {
    let api: Api<LanewatchSite> = Api::namespaced(ctx.client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": "lanewatch.io/v1alpha1",
        "kind": "LanewatchSite",
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(&ctx.field_manager).force(), &Patch::Apply(&body)).await?;
    Ok(())
}
