//! The `[kubernetes]` and `[leader]` sections: whether the control plane watches LanewatchSite
//! resources (and in which namespace, as which field manager), the Lease it may lead by, and
//! which lock elects the replica that runs the singleton loops.

use serde::Deserialize;

use super::ConfigError;

/// `[kubernetes]`: the LanewatchSite controller and the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// Watch LanewatchSite resources (in-cluster credentials, or `KUBECONFIG`).
    pub enabled: bool,
    /// The namespace of the LanewatchSites, their ConfigMaps and the Lease.
    pub namespace: String,
    /// The field manager of server-side apply (status writes, the Lease).
    pub field_manager: String,
    pub lease_name: String,
    /// How long a Lease stays held without renewal.
    pub lease_duration_secs: u64,
    /// The holder renews this long before the Lease expires, and stops leading when it cannot.
    pub lease_grace_secs: u64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            namespace: "default".to_owned(),
            field_manager: "lanewatch-control-plane".to_owned(),
            lease_name: "lanewatch-control-plane".to_owned(),
            lease_duration_secs: 15,
            lease_grace_secs: 5,
        }
    }
}

/// Which lock elects the replica that runs the singleton loops (`[leader] lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaderLockKind {
    /// A coordination.k8s.io Lease (needs `kubernetes.enabled`).
    Lease,
    /// A PostgreSQL advisory lock (needs a postgresql `database.url`).
    Postgres,
    /// No lock: this is the only replica (not with `cluster.enabled`).
    None,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileKubernetes {
    #[serde(default)]
    enabled: bool,
    namespace: Option<String>,
    field_manager: Option<String>,
    lease_name: Option<String>,
    lease_duration_secs: Option<u64>,
    lease_grace_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLeader {
    lock: Option<LeaderLockKind>,
}

/// A DNS-1123 label or subdomain, as Kubernetes names must be.
fn is_dns_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

pub(super) fn validate_kubernetes(file: &FileKubernetes) -> Result<KubernetesConfig, ConfigError> {
    let d = KubernetesConfig::default();
    let namespace = file.namespace.clone().unwrap_or(d.namespace);
    if !is_dns_name(&namespace, 63) || namespace.contains('.') {
        return Err(ConfigError::new(
            "kubernetes.namespace",
            format!("{namespace:?} is not a namespace name (a DNS-1123 label)"),
        ));
    }
    let lease_name = file.lease_name.clone().unwrap_or(d.lease_name);
    if !is_dns_name(&lease_name, 253) {
        return Err(ConfigError::new(
            "kubernetes.lease_name",
            format!("{lease_name:?} is not a resource name (a DNS-1123 subdomain)"),
        ));
    }
    let field_manager = file.field_manager.clone().unwrap_or(d.field_manager);
    if field_manager.trim().is_empty() || field_manager.len() > 128 {
        return Err(ConfigError::new("kubernetes.field_manager", "must be 1 to 128 characters"));
    }
    let lease_duration_secs = file.lease_duration_secs.unwrap_or(d.lease_duration_secs);
    if !(5..=300).contains(&lease_duration_secs) {
        return Err(ConfigError::new(
            "kubernetes.lease_duration_secs",
            format!("must be between 5 and 300, got {lease_duration_secs}"),
        ));
    }
    let lease_grace_secs = file.lease_grace_secs.unwrap_or(d.lease_grace_secs);
    if lease_grace_secs == 0 || lease_grace_secs >= lease_duration_secs {
        return Err(ConfigError::new(
            "kubernetes.lease_grace_secs",
            format!(
                "must be at least 1 and less than lease_duration_secs ({lease_duration_secs}), got {lease_grace_secs}"
            ),
        ));
    }
    Ok(KubernetesConfig {
        enabled: file.enabled,
        namespace,
        field_manager,
        lease_name,
        lease_duration_secs,
        lease_grace_secs,
    })
}

/// The lock: as configured, or a Lease on Kubernetes, PostgreSQL for a cluster, none otherwise.
pub(super) fn validate_leader(
    file: &FileLeader,
    kubernetes: &KubernetesConfig,
    cluster: bool,
    is_postgres: bool,
) -> Result<LeaderLockKind, ConfigError> {
    let lock = file.lock.unwrap_or(if kubernetes.enabled {
        LeaderLockKind::Lease
    } else if cluster {
        LeaderLockKind::Postgres
    } else {
        LeaderLockKind::None
    });
    match lock {
        LeaderLockKind::Lease if !kubernetes.enabled => {
            Err(ConfigError::new("leader.lock", "\"lease\" needs kubernetes.enabled = true"))
        }
        LeaderLockKind::Postgres if !is_postgres => {
            Err(ConfigError::new("leader.lock", "\"postgres\" needs a postgresql database.url"))
        }
        LeaderLockKind::None if cluster => Err(ConfigError::new(
            "leader.lock",
            "\"none\" with cluster.enabled would run the singleton loops on every replica; use \"lease\" or \"postgres\"",
        )),
        lock => Ok(lock),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, Env, Overrides};
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, &Overrides::default(), &Env::default())
    }

    #[test]
    fn defaults_pick_the_lock_by_deployment() {
        let c = parse("version = 1\n").unwrap();
        assert_eq!((c.kubernetes.enabled, c.leader_lock), (false, LeaderLockKind::None));
        let c = parse("version = 1\n[kubernetes]\nenabled = true\nnamespace = \"lw\"\n").unwrap();
        assert_eq!((c.kubernetes.namespace.as_str(), c.leader_lock), ("lw", LeaderLockKind::Lease));
        let pg = "version = 1\n[database]\nurl = \"postgres://db/lw\"\n[cluster]\nenabled = true\n[http]\nurl_signing_key = \"0123456789abcdef0123456789abcdef\"\n";
        assert_eq!(parse(pg).unwrap().leader_lock, LeaderLockKind::Postgres);
    }

    #[test]
    fn bad_values_name_their_field() {
        let field = |t: &str| parse(t).unwrap_err().field;
        assert_eq!(field("version = 1\n[kubernetes]\nnamespace = \"Lane_Watch\"\n"), "kubernetes.namespace");
        assert_eq!(
            field("version = 1\n[kubernetes]\nlease_duration_secs = 2\n"),
            "kubernetes.lease_duration_secs"
        );
        assert_eq!(
            field("version = 1\n[kubernetes]\nlease_grace_secs = 15\n"),
            "kubernetes.lease_grace_secs"
        );
        assert_eq!(field("version = 1\n[kubernetes]\nlease_name = \"-x\"\n"), "kubernetes.lease_name");
        assert_eq!(field("version = 1\n[leader]\nlock = \"lease\"\n"), "leader.lock");
        assert_eq!(field("version = 1\n[leader]\nlock = \"postgres\"\n"), "leader.lock");
        let e = parse("version = 1\n[leader]\nlock = \"zookeeper\"\n").unwrap_err();
        assert!(e.to_string().contains("zookeeper"), "{e}");
    }
}
