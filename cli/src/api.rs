//! The control plane's public GraphQL API as the CLI calls it: one request with a bearer key,
//! and every way it can fail turned into an error that says what is wrong (unreachable, no or a
//! refused key, and the API's own errors with their codes: permission, not found, offline,
//! timeout).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The decisions the API knows (`Decision`), in the order the CLI shows them.
pub const DECISIONS: &[&str] = &["COMPLIANT", "VIOLATION_CANDIDATE", "UNREADABLE", "UNKNOWN", "TEST"];

/// A client of one control plane's `/graphql`.
pub struct Api {
    client: reqwest::Client,
    /// `http://host:port`, without a trailing slash.
    url: String,
    key: Option<String>,
}

impl Api {
    /// `url` is the control plane's HTTP address (`http://host:port`; `host:port` is taken as
    /// http); `key` its API key (`lw_<id>_<secret>`), if any.
    pub fn new(url: &str, key: Option<String>) -> Result<Self> {
        let url = url.trim().trim_end_matches('/');
        if url.is_empty() {
            bail!("the control plane's URL is empty (pass --url or set LANEWATCH_URL)");
        }
        let url = if url.contains("://") { url.to_owned() } else { format!("http://{url}") };
        if !url.starts_with("http://") && !url.starts_with("https://") {
            bail!("the control plane's URL must be http:// or https://, got {url:?}");
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .context("building the HTTP client")?;
        Ok(Self { client, url, key: key.filter(|k| !k.trim().is_empty()) })
    }

    /// Runs one query or mutation and returns its `data`.
    pub async fn query(&self, query: &str, variables: Value) -> Result<Value> {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.url))
            .json(&serde_json::json!({ "query": query, "variables": variables }));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the control plane at {}", self.url))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            match &self.key {
                None => bail!(
                    "the control plane at {} wants an API key: pass --api-key or set LANEWATCH_API_KEY",
                    self.url
                ),
                Some(_) => {
                    bail!("the control plane at {} refused the API key (unknown or revoked)", self.url)
                }
            }
        }
        let text = response.text().await.context("reading the control plane's answer")?;
        let body: Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "the control plane answered {status} with something that is not GraphQL: {}",
                excerpt(&text)
            )
        })?;
        if let Some(errors) = body.get("errors").filter(|e| !e.is_null()) {
            return Err(GraphqlErrors(errors.clone()).into());
        }
        if !status.is_success() {
            bail!("the control plane answered {status}: {}", excerpt(&text));
        }
        Ok(body.get("data").cloned().unwrap_or(Value::Null))
    }
}

fn excerpt(text: &str) -> &str {
    let end = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
    text[..end].trim()
}

/// The `errors` of a GraphQL answer.
#[derive(Debug)]
pub struct GraphqlErrors(pub Value);

impl GraphqlErrors {
    fn codes(&self) -> impl Iterator<Item = &str> {
        self.0.as_array().into_iter().flatten().filter_map(|e| e.pointer("/extensions/code")?.as_str())
    }

    pub fn has_code(&self, code: &str) -> bool {
        self.codes().any(|c| c == code)
    }
}

impl std::fmt::Display for GraphqlErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let errors = self.0.as_array().map(Vec::as_slice).unwrap_or_default();
        if errors.is_empty() {
            return write!(f, "the control plane answered with errors: {}", self.0);
        }
        for (i, e) in errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            let message = e["message"].as_str().unwrap_or("(no message)");
            let what = match e.pointer("/extensions/code").and_then(Value::as_str) {
                Some("PERMISSION_DENIED") => "permission denied",
                Some("UNAUTHENTICATED") => "not authenticated",
                Some("NOT_FOUND") => "not found",
                Some("UNAVAILABLE") => "unavailable",
                Some("DEADLINE_EXCEEDED") => "timed out",
                Some("INVALID_ARGUMENT") => "invalid",
                Some("FAILED_PRECONDITION") => "refused",
                _ => "",
            };
            // the API's messages often open with the same words already
            if what.is_empty() || message.to_lowercase().starts_with(what) {
                f.write_str(message)?;
            } else {
                write!(f, "{what}: {message}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for GraphqlErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_is_wrong() {
        let e = GraphqlErrors(serde_json::json!([
            { "message": "agent a-1 is offline", "extensions": { "code": "UNAVAILABLE" } },
            { "message": "operators and admins only", "extensions": { "code": "PERMISSION_DENIED" } },
        ]));
        assert_eq!(
            e.to_string(),
            "unavailable: agent a-1 is offline; permission denied: operators and admins only"
        );
        assert!(e.has_code("UNAVAILABLE") && !e.has_code("NOT_FOUND"));
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(Api::new("127.0.0.1:8080/", None).unwrap().url, "http://127.0.0.1:8080");
        assert!(Api::new(" ", None).err().unwrap().to_string().contains("LANEWATCH_URL"));
        assert!(Api::new("ftp://x", None).err().unwrap().to_string().contains("http://"));
    }
}
