//! The leader lock on Kubernetes: a coordination.k8s.io Lease held through kube-lease-manager,
//! which takes and renews it with server-side apply. The holder renews `grace_secs` before the
//! lease expires; a renewal that fails (API server unreachable, or the lease taken) reports
//! the lock lost at once, so this replica stops its singletons about `grace_secs` before
//! another replica can take the expired lease. The fencing epoch covers what is left: a write
//! that was already on its way when the lease passed on.

use futures::future::BoxFuture;
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseManagerBuilder};

use super::{LeaderError, LeaderLock};

/// Where and how the Lease is held (`[kubernetes]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub namespace: String,
    pub lease_name: String,
    /// This replica's name in the lease's `holderIdentity` (the pod's name).
    pub identity: String,
    pub duration_secs: u64,
    pub grace_secs: u64,
    pub field_manager: String,
}

pub struct LeaseLock {
    manager: LeaseManager,
    name: String,
}

impl LeaseLock {
    /// Makes sure the Lease exists (creating it if needed) and returns the lock, not yet held.
    pub async fn new(client: kube::Client, settings: &LeaseSettings) -> Result<Self, LeaderError> {
        let manager = LeaseManagerBuilder::new(client, &settings.lease_name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.duration_secs)
            .with_grace(settings.grace_secs)
            .with_field_manager(&settings.field_manager)
            .with_create_mode(LeaseCreateMode::AutoCreate)
            .build()
            .await
            .map_err(|e| LeaderError::Lease { lease: settings.lease_name.clone(), message: e.to_string() })?;
        Ok(Self { manager, name: settings.lease_name.clone() })
    }
}

impl LeaderLock for LeaseLock {
    fn name(&self) -> &str {
        &self.name
    }

    fn changed(&mut self) -> BoxFuture<'_, Result<bool, LeaderError>> {
        Box::pin(async move {
            self.manager
                .changed()
                .await
                .map_err(|e| LeaderError::Lease { lease: self.name.clone(), message: e.to_string() })
        })
    }

    fn release(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.manager.release().await {
                tracing::warn!(lease = %self.name, error = %e, "cannot release the lease; it expires by itself");
            }
        })
    }
}
