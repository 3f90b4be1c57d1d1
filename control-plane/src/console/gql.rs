//! The console reads and writes through the GraphQL schema, in process, as the viewer's
//! principal: the same authorization (`Principal::authorize`, `Visibility`), validation and audit
//! as any API client, and no second path into the database. Answers are deserialized into the
//! page modules' own small serde structs (connections: [`Page`]).

use async_graphql::{Request, Variables};
use serde::de::DeserializeOwned;

use crate::auth::Principal;
use crate::graphql::LanewatchSchema;

/// A Relay connection's `pageInfo`, as the console reads it.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageInfo {
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}

/// A connection's `nodes` and `pageInfo`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub nodes: Vec<T>,
    pub page_info: PageInfo,
}

/// Why an operation failed, as the API said it (shown on the page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub message: String,
    /// The error's `extensions.code` (`PERMISSION_DENIED`, `INVALID_ARGUMENT`, ...).
    pub code: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs one operation as `who` and decodes its `data`.
pub async fn run<T: DeserializeOwned>(
    schema: &LanewatchSchema,
    who: &Principal,
    query: &str,
    variables: serde_json::Value,
) -> Result<T, ApiError> {
    let request = Request::new(query).variables(Variables::from_json(variables)).data(who.clone());
    let response = schema.execute(request).await;
    if let Some(first) = response.errors.first() {
        let code = first.extensions.as_ref().and_then(|e| e.get("code")).and_then(|v| match v {
            async_graphql::Value::String(s) => Some(s.clone()),
            async_graphql::Value::Enum(n) => Some(n.to_string()),
            _ => None,
        });
        let message = response.errors.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; ");
        return Err(ApiError { message, code });
    }
    let data = response
        .data
        .into_json()
        .map_err(|e| ApiError { message: format!("the api's answer is not json: {e}"), code: None })?;
    serde_json::from_value(data).map_err(|e| ApiError {
        message: format!("the console cannot read the api's answer: {e}"),
        code: None,
    })
}
