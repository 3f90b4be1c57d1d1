//! The control plane's GraphQL API as the CLI calls it: one request with a bearer key, its
//! `errors` turned into an error that keeps their codes.

use anyhow::Result;

/// One GraphQL request with the demo's key; its `errors` become an error naming their codes.
pub async fn graphql(
    client: &reqwest::Client,
    http: &str,
    key: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value> {
    let response: serde_json::Value = client
        .post(format!("http://{http}/graphql"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if let Some(errors) = response.get("errors") {
        return Err(GraphqlErrors(errors.clone()).into());
    }
    Ok(response)
}

/// The `errors` of a GraphQL answer.
#[derive(Debug)]
pub struct GraphqlErrors(serde_json::Value);

impl GraphqlErrors {
    pub fn has_code(&self, code: &str) -> bool {
        self.0.as_array().is_some_and(|errors| {
            errors.iter().any(|e| e.pointer("/extensions/code").and_then(|c| c.as_str()) == Some(code))
        })
    }
}

impl std::fmt::Display for GraphqlErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the control plane answered with errors: {}", self.0)
    }
}

impl std::error::Error for GraphqlErrors {}
