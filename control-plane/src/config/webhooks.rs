//! The `[webhooks]` section: how deliveries connect (timeouts, the response body read at most,
//! the CIDRs an operator allows despite the address policy), the retry schedule, and after how
//! long a failing endpoint is disabled.

use serde::Deserialize;

use super::ConfigError;

/// The vehicle push service (`[webhooks]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhooksConfig {
    pub connect_timeout_ms: u64,
    /// A delivery without a full answer within this is a failed attempt.
    pub timeout_ms: u64,
    /// How much of a receiver's answer is read and kept with the attempt.
    pub max_body_bytes: usize,
    /// Receivers in these ranges are allowed although private, loopback, etc. (and may be plain
    /// http), e.g. `["10.20.0.0/16"]` for an agency's VPN.
    pub allow_cidrs: Vec<String>,
    /// Seconds to wait after each failed attempt before the next (Svix's schedule by default:
    /// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h); its length + 1 is the number of attempts.
    pub retry_schedule_secs: Vec<u64>,
    /// An endpoint whose deliveries all failed for this long is disabled (`endpoint.disabled`).
    pub disable_after_secs: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 5_000,
            timeout_ms: 15_000,
            max_body_bytes: 1024,
            allow_cidrs: Vec::new(),
            retry_schedule_secs: vec![5, 300, 1800, 7200, 18_000, 36_000, 36_000],
            disable_after_secs: 5 * 86_400,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileWebhooks {
    connect_timeout_ms: u64,
    timeout_ms: u64,
    max_body_bytes: u64,
    allow_cidrs: Vec<String>,
    retry_schedule_secs: Vec<u64>,
    disable_after_secs: u64,
}

impl Default for FileWebhooks {
    fn default() -> Self {
        let d = WebhooksConfig::default();
        Self {
            connect_timeout_ms: d.connect_timeout_ms,
            timeout_ms: d.timeout_ms,
            max_body_bytes: d.max_body_bytes as u64,
            allow_cidrs: d.allow_cidrs,
            retry_schedule_secs: d.retry_schedule_secs,
            disable_after_secs: d.disable_after_secs,
        }
    }
}

pub(super) fn validate_webhooks(w: &FileWebhooks) -> Result<WebhooksConfig, ConfigError> {
    let range = |field: &str, v: u64, min: u64, max: u64| {
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError::new(format!("webhooks.{field}"), format!("{v} is outside {min}..={max}")))
        }
    };
    for (i, cidr) in w.allow_cidrs.iter().enumerate() {
        crate::webhooks::client::Cidr::parse(cidr)
            .map_err(|e| ConfigError::new(format!("webhooks.allow_cidrs[{i}]"), e.to_string()))?;
    }
    if w.retry_schedule_secs.len() > 20 {
        return Err(ConfigError::new("webhooks.retry_schedule_secs", "at most 20 retries"));
    }
    for (i, s) in w.retry_schedule_secs.iter().enumerate() {
        range(&format!("retry_schedule_secs[{i}]"), *s, 0, 7 * 86_400)?;
    }
    Ok(WebhooksConfig {
        connect_timeout_ms: range("connect_timeout_ms", w.connect_timeout_ms, 100, 60_000)?,
        timeout_ms: range("timeout_ms", w.timeout_ms, 100, 300_000)?,
        max_body_bytes: range("max_body_bytes", w.max_body_bytes, 0, 1 << 20)? as usize,
        allow_cidrs: w.allow_cidrs.clone(),
        retry_schedule_secs: w.retry_schedule_secs.clone(),
        disable_after_secs: range("disable_after_secs", w.disable_after_secs, 1, 365 * 86_400)?,
    })
}
