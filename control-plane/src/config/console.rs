//! The `[console]` section: how long a console login lasts and how many login attempts one
//! client address may make per minute (per replica).

use std::num::NonZeroU32;

use serde::Deserialize;

use super::ConfigError;

/// The fleet console (`[console]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// A session ends this long after its login (or at logout, or when its key is revoked).
    pub session_ttl_secs: u64,
    pub login_attempts_per_minute: NonZeroU32,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self { session_ttl_secs: 12 * 3600, login_attempts_per_minute: NonZeroU32::new(10).expect("10 > 0") }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConsole {
    session_ttl_secs: Option<u64>,
    login_attempts_per_minute: Option<u32>,
}

pub(super) fn validate_console(file: &FileConsole) -> Result<ConsoleConfig, ConfigError> {
    let defaults = ConsoleConfig::default();
    let session_ttl_secs = file.session_ttl_secs.unwrap_or(defaults.session_ttl_secs);
    if !(60..=30 * 86_400).contains(&session_ttl_secs) {
        return Err(ConfigError::new(
            "console.session_ttl_secs",
            format!("must be between 60 and 2592000 (30 days), got {session_ttl_secs}"),
        ));
    }
    let login_attempts_per_minute = match file.login_attempts_per_minute {
        None => defaults.login_attempts_per_minute,
        Some(n) => NonZeroU32::new(n).filter(|n| n.get() <= 1000).ok_or_else(|| {
            ConfigError::new(
                "console.login_attempts_per_minute",
                format!("must be between 1 and 1000, got {n}"),
            )
        })?,
    };
    Ok(ConsoleConfig { session_ttl_secs, login_attempts_per_minute })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(validate_console(&FileConsole::default()).unwrap(), ConsoleConfig::default());
        let e = validate_console(&FileConsole { session_ttl_secs: Some(5), login_attempts_per_minute: None })
            .unwrap_err();
        assert_eq!(e.field, "console.session_ttl_secs");
        let e = validate_console(&FileConsole { session_ttl_secs: None, login_attempts_per_minute: Some(0) })
            .unwrap_err();
        assert_eq!(e.field, "console.login_attempts_per_minute");
    }
}
