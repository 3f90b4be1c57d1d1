//! The HTTP surface (axum): GraphQL and GraphiQL, capture images, health and readiness probes,
//! Prometheus metrics and the operator console. `/graphql` (POST) and `/images/{id}` resolve the
//! `Authorization: Bearer <key>` header into a `Principal` first; without one they answer 401
//! unless anonymous local access is allowed.

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use uuid::Uuid;

use crate::auth::{self, Action, Principal};
use crate::blob::{BlobError, BlobStore};
use crate::db::Db;
use crate::error::Error;
use crate::graphql::LanewatchSchema;
use crate::metrics::Metrics;

const CONSOLE_HTML: &str = include_str!("../../console/index.html");

#[derive(Clone)]
pub struct AppState {
    pub schema: LanewatchSchema,
    pub db: Db,
    pub blobs: BlobStore,
    pub metrics: Metrics,
    /// Requests without a key act as an operator (`auth.allow_anonymous_local`).
    pub allow_anonymous: bool,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(console))
        .route("/graphql", get(graphiql).post(graphql))
        .route("/images/{id}", get(image))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn console() -> Html<&'static str> {
    Html(CONSOLE_HTML)
}

async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
}

async fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, Error> {
    let authorization = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| Error::unauthenticated("authorization header is not ascii"))?),
    };
    let result = auth::authenticate(&state.db, authorization, state.allow_anonymous).await;
    if let Err(e) = &result {
        tracing::info!(code = e.kind.metric_label(), error = %e.message, "request refused");
    }
    result
}

/// A GraphQL-shaped error body with the HTTP status of its kind (401 for a missing key).
fn graphql_error(e: &Error) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": e.message, "extensions": { "code": e.kind.graphql_code() } }]
    });
    let mut response = (e.kind.http_status(), axum::Json(body)).into_response();
    if e.kind == crate::error::ErrorKind::Unauthenticated {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"lanewatch\""),
        );
    }
    response
}

async fn graphql(State(state): State<AppState>, headers: HeaderMap, request: GraphQLRequest) -> Response {
    let who = match principal(&state, &headers).await {
        Ok(who) => who,
        Err(e) => return graphql_error(&e),
    };
    GraphQLResponse::from(state.schema.execute(request.into_inner().data(who)).await).into_response()
}

async fn image(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let who = principal(&state, &headers).await?;
    who.authorize(Action::ReadCaptures)?;
    let id = Uuid::parse_str(&id).map_err(|_| Error::invalid(format!("image id {id:?} is not a uuid")))?;
    let capture = state
        .db
        .capture(id, &who.visibility())
        .await
        .map_err(|e| Error::unavailable(format!("database unavailable: {e}")))?
        .ok_or_else(|| Error::not_found(format!("no capture with id {id}")))?;
    let bytes = state.blobs.get(&capture.image_key).await.map_err(|e| match e {
        BlobError::NotFound { .. } => {
            Error::not_found(format!("image of capture {id} is missing from the blob store"))
        }
        other => Error::unavailable(format!("blob store unavailable: {other}")),
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, capture.image_content_type.mime()),
            // the answer depends on the caller's key: shared caches must not keep it
            (header::CACHE_CONTROL, "private, max-age=31536000, immutable"),
        ],
        bytes,
    )
        .into_response())
}

async fn readyz(State(state): State<AppState>) -> Response {
    if let Err(e) = state.db.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("database not ready: {e}\n")).into_response();
    }
    if let Err(e) = state.blobs.check_ready().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("blob store not ready: {e}\n")).into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}
