//! Kubernetes: the `LanewatchSite` custom resource (`crd.rs`), the reconciler's pure decisions
//! (`decide.rs`) and its I/O (`reconcile.rs`), and [`reconcile_sites`], the kube-runtime `Controller` over
//! one namespace that the leader runs for one term (a singleton, see `leader`).
//!
//! A resource's config goes through the same validated rollout as a GraphQL edit, and its site
//! is then managed by it: GraphQL edits of that site are refused, naming the resource. When a
//! resource is deleted its claim is released by [`release_orphans`] (the site and its config
//! versions stay). Tested with scripted API-server exchanges in `tests.rs` and against kmock's
//! emulator in the e2e test `kube.rs`.

pub mod crd;
pub mod decide;
pub mod reconcile;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use tokio::sync::watch;

pub use crd::{LanewatchSite, crd_yaml};
pub use reconcile::Context;

/// How often claims of deleted resources are released.
const ORPHAN_SWEEP: Duration = Duration::from_secs(30);

/// The `[kubernetes]` settings the controller needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSettings {
    pub namespace: String,
    pub field_manager: String,
}

/// Runs the LanewatchSite controller until `stop` turns true (the term is over, or shutdown);
/// reconciliations under way finish first.
pub async fn reconcile_sites(ctx: Context, mut stop: watch::Receiver<bool>) {
    let sites: Api<LanewatchSite> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let stopping = Arc::new(tokio::sync::Notify::new());
    let trigger = stopping.clone();
    let controller = Controller::new(sites, watcher::Config::default())
        .graceful_shutdown_on(async move { trigger.notified().await });
    let store = controller.store();
    let ctx = Arc::new(ctx);
    let sweep_ctx = ctx.clone();
    let mut sweep_stop = stop.clone();
    let sweep = tokio::spawn(async move {
        tokio::select! {
            ready = store.wait_until_ready() => if ready.is_err() { return },
            _ = sweep_stop.wait_for(|s| *s) => return,
        }
        loop {
            if let Err(e) = release_orphans(&sweep_ctx, &store).await {
                tracing::warn!(error = %e, "cannot release the claims of deleted LanewatchSites");
            }
            tokio::select! {
                _ = sweep_stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(ORPHAN_SWEEP) => {}
            }
        }
    });
    tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        stopping.notify_one();
    });
    tracing::info!(namespace = %ctx.namespace, "watching LanewatchSites");
    controller
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((site, _)) => tracing::debug!(resource = %site, "LanewatchSite reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {} // logged by error_policy
                Err(e) => tracing::warn!(error = %e, "LanewatchSite controller"),
            }
        })
        .await;
    let _ = sweep.await;
}

/// Releases the claim of every site whose managing resource (in this namespace) is gone.
pub async fn release_orphans(
    ctx: &Context,
    store: &Store<LanewatchSite>,
) -> Result<usize, crate::db::DbError> {
    let live: Vec<(String, String)> = store
        .state()
        .iter()
        .map(|s| (kube::ResourceExt::name_any(s.as_ref()), s.spec.site_id.trim().to_owned()))
        .collect();
    let mut released = 0;
    for manager in ctx.db.site_managers(&ctx.namespace).await? {
        if !live.iter().any(|(name, site)| *name == manager.name && *site == manager.site_id)
            && ctx.db.release_managed_site(&ctx.fence, &manager).await?
        {
            tracing::info!(site_id = %manager.site_id, resource = %manager, "LanewatchSite gone; the site is editable through the API again");
            released += 1;
        }
    }
    Ok(released)
}
