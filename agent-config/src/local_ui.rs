//! The `[local_ui]` section: where the agent's web UI listens, and what protects it off
//! loopback (TLS and a local admin password, kept as an argon2 PHC hash, never in clear).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::HostChecks;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalUiConfig {
    pub enabled: bool,
    /// `127.0.0.1:8090` by default; port 0 picks a free port (the ready file names it).
    pub listen: SocketAddr,
    /// The admin password's argon2 hash (`lanewatch-agent hash-password` prints one). Required
    /// off loopback; on loopback, set it to require a login there too.
    pub password_hash: Option<String>,
    /// Required off loopback.
    pub tls: Option<LocalUiTls>,
    /// How long a login lasts.
    pub session_ttl_secs: u64,
    pub login_attempts_per_minute: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalUiTls {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Default for LocalUiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            password_hash: None,
            tls: None,
            session_ttl_secs: 8 * 3600,
            login_attempts_per_minute: 10,
        }
    }
}

pub(crate) fn validate_local_ui(ui: &LocalUiConfig, host: &dyn HostChecks, out: &mut Vec<(String, String)>) {
    if !ui.enabled {
        return;
    }
    let loopback = ui.listen.ip().is_loopback();
    if !loopback && ui.tls.is_none() {
        out.push((
            "local_ui.tls".into(),
            format!("is required when local_ui.listen ({}) is not a loopback address", ui.listen),
        ));
    }
    match &ui.password_hash {
        None if !loopback => out.push((
            "local_ui.password_hash".into(),
            format!(
                "is required when local_ui.listen ({}) is not a loopback address (lanewatch-agent hash-password makes one)",
                ui.listen
            ),
        )),
        Some(hash) if !hash.starts_with("$argon2") => out.push((
            "local_ui.password_hash".into(),
            "must be an argon2 hash ($argon2id$…; lanewatch-agent hash-password makes one), never the password".into(),
        )),
        _ => {}
    }
    if let Some(tls) = &ui.tls {
        for (field, path) in [("cert_path", &tls.cert_path), ("key_path", &tls.key_path)] {
            if let Err(reason) = host.file(path) {
                out.push((format!("local_ui.tls.{field}"), reason));
            }
        }
    }
    if !(60..=7 * 86_400).contains(&ui.session_ttl_secs) {
        out.push((
            "local_ui.session_ttl_secs".into(),
            format!("must be between 60 and 604800, got {}", ui.session_ttl_secs),
        ));
    }
    if !(1..=1000).contains(&ui.login_attempts_per_minute) {
        out.push((
            "local_ui.login_attempts_per_minute".into(),
            format!("must be between 1 and 1000, got {}", ui.login_attempts_per_minute),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RemoteHost;

    fn errors(ui: &LocalUiConfig) -> Vec<String> {
        let mut out = Vec::new();
        validate_local_ui(ui, &RemoteHost, &mut out);
        out.into_iter().map(|(field, _)| field).collect()
    }

    #[test]
    fn off_loopback_needs_tls_and_a_password_hash() {
        assert!(errors(&LocalUiConfig::default()).is_empty(), "loopback without either is fine");
        let open = LocalUiConfig { listen: "0.0.0.0:8090".parse().unwrap(), ..LocalUiConfig::default() };
        assert_eq!(errors(&open), vec!["local_ui.tls", "local_ui.password_hash"]);
        let tls = LocalUiTls { cert_path: "ui.crt".into(), key_path: "ui.key".into() };
        let guarded = LocalUiConfig {
            tls: Some(tls),
            password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into()),
            ..open.clone()
        };
        assert!(errors(&guarded).is_empty());
        let plain = LocalUiConfig { password_hash: Some("hunter2".into()), ..guarded };
        assert_eq!(errors(&plain), vec!["local_ui.password_hash"], "a password in clear is refused");
        let off = LocalUiConfig { enabled: false, ..open };
        assert!(errors(&off).is_empty(), "a disabled UI needs nothing");
    }
}
