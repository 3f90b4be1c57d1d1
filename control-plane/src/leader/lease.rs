//! The leader lock on Kubernetes: a coordination.k8s.io Lease held through kube-lease-manager,
//! which takes and renews it with server-side apply. The holder renews `grace_secs` before the
//! lease expires; a renewal that fails (API server unreachable, or the lease taken) reports
//! the lock lost at once, so this replica stops its singletons about `grace_secs` before
//! another replica can take the expired lease. The fencing epoch covers what is left: a write
//! that was already on its way when the lease passed on.
//!
//! Each replica applies the Lease as a field manager of its own ([`lease_field_manager`]):
//! kube-lease-manager takes an orphaned Lease with an unforced apply, and it is the API
//! server's field-ownership conflict (409) between two managers that lets only one of two
//! replicas racing for it win. With one shared manager both applies would succeed.

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

/// The field manager this replica applies the Lease as: the configured one and the replica's
/// identity (unique per replica), within Kubernetes' 128 characters.
pub fn lease_field_manager(base: &str, identity: &str) -> String {
    // the identity's end is kept (where pod names differ), then as much of `base` as fits
    let id = tail(identity, 63);
    let head = head(base, 128 - id.len() - 1);
    format!("{head}-{id}")
}

fn head(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
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
            .with_field_manager(lease_field_manager(&settings.field_manager, &settings.identity))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replica_applies_the_lease_as_a_manager_of_its_own() {
        let a = lease_field_manager("lanewatch-control-plane", "lanewatch-7d9f-abcde");
        let b = lease_field_manager("lanewatch-control-plane", "lanewatch-7d9f-fghij");
        assert_eq!(a, "lanewatch-control-plane-lanewatch-7d9f-abcde");
        assert_ne!(a, b);
        let long = lease_field_manager(&"m".repeat(128), "pod-1");
        assert!(long.len() == 128 && long.ends_with("m-pod-1"), "{long}");
        let long_pod = lease_field_manager("lw", &"p".repeat(100));
        assert_eq!(long_pod, format!("lw-{}", "p".repeat(63)));
    }
}
