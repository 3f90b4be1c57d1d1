//! The HTTP surface (axum): GraphQL and GraphiQL, capture images, health and readiness probes,
//! Prometheus metrics, and the fleet console (`console`, merged in at `/`). `/graphql` (POST) and `/images/{id}` resolve the
//! `Authorization: Bearer <key>` header into a `Principal` first; without one they answer 401
//! unless anonymous local access is allowed. `/images/{id}` also accepts, without a key, an
//! unexpired signed link from `links.rs` (403 when expired or tampered with); `&width=` asks for
//! a JPEG thumbnail made from the stored image. `/graphql/ws`
//! serves subscriptions (graphql-transport-ws and graphql-ws); the key travels in the
//! `connection_init` payload as `{"authorization": "Bearer <key>"}` (or the upgrade's header).

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use uuid::Uuid;

use crate::auth::{self, Action, Principal};
use crate::blob::{BlobError, BlobStore};
use crate::db::Db;
use crate::error::Error;
use crate::graphql::LanewatchSchema;
use crate::links::ImageLinks;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub schema: LanewatchSchema,
    pub db: Db,
    pub blobs: BlobStore,
    pub metrics: Metrics,
    /// Requests without a key act as an operator (`auth.allow_anonymous_local`).
    pub allow_anonymous: bool,
    /// Verifies signed `/images/{id}` links.
    pub links: ImageLinks,
}

/// The API routes, and the console's when it is given (tests of the API alone leave it out).
pub fn router(state: AppState, console: Option<crate::console::Console>) -> Router {
    let api = Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/images/{id}", get(image))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    match console {
        Some(console) => api.merge(crate::console::router(console)),
        None => api,
    }
}

async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").subscription_endpoint("/graphql/ws").finish())
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

/// Subscriptions: the principal comes from `connection_init`, else from the upgrade request.
async fn graphql_ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let header_auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            let schema = state.schema.clone();
            GraphQLWebSocket::new(socket, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let from_payload = payload
                        .get("authorization")
                        .or_else(|| payload.get("Authorization"))
                        .and_then(|v| v.as_str())
                        .map(str::to_owned);
                    let authorization = from_payload.or(header_auth);
                    let who = auth::authenticate(&state.db, authorization.as_deref(), state.allow_anonymous)
                        .await
                        .map_err(|e| {
                            tracing::info!(code = e.kind.metric_label(), error = %e.message, "subscription refused");
                            async_graphql::Error::new(e.message)
                        })?;
                    let mut data = async_graphql::Data::default();
                    data.insert(who);
                    Ok(data)
                })
                .serve()
        })
}

/// `?expires=<unix secs>&sig=<hex>` of a signed image link, and `&width=` for a thumbnail.
#[derive(Debug, serde::Deserialize)]
struct LinkParams {
    expires: Option<i64>,
    sig: Option<String>,
    width: Option<u32>,
}

/// A JPEG of the image scaled to `width` pixels wide (never wider than the original).
fn thumbnail(bytes: &[u8], width: u32) -> Result<Vec<u8>, String> {
    let img = image::load_from_memory(bytes).map_err(|e| format!("the stored image does not decode: {e}"))?;
    let img = if img.width() > width { img.thumbnail(width, u32::MAX) } else { img };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode_image(&img.to_rgb8())
        .map_err(|e| format!("cannot encode the thumbnail: {e}"))?;
    Ok(out)
}

async fn image(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(link): Query<LinkParams>,
) -> Result<Response, Error> {
    let id = Uuid::parse_str(&id).map_err(|_| Error::invalid(format!("image id {id:?} is not a uuid")))?;
    // a request with a key is judged by its key; without one, a signed link is judged by its
    // signature and expiry (the API handed it to someone allowed to see the capture)
    let visibility = match (&link, headers.contains_key(header::AUTHORIZATION)) {
        (LinkParams { expires: Some(expires), sig: Some(sig), .. }, false) => {
            state.links.verify(id, *expires, sig, chrono::Utc::now()).inspect_err(|e| {
                tracing::info!(capture_id = %id, error = %e.message, "image link refused");
            })?;
            crate::domain::Visibility::All
        }
        _ => {
            let who = principal(&state, &headers).await?;
            who.authorize(Action::ReadCaptures)?;
            who.visibility()
        }
    };
    let capture = state
        .db
        .capture(id, &visibility)
        .await
        .map_err(|e| Error::unavailable(format!("database unavailable: {e}")))?
        .ok_or_else(|| Error::not_found(format!("no capture with id {id}")))?;
    let bytes = state.blobs.get(&capture.image_key).await.map_err(|e| match e {
        BlobError::NotFound { .. } => {
            Error::not_found(format!("image of capture {id} is missing from the blob store"))
        }
        other => Error::unavailable(format!("blob store unavailable: {other}")),
    })?;
    // the answer depends on the caller's key: shared caches must not keep it
    let cache = (header::CACHE_CONTROL, "private, max-age=31536000, immutable");
    if let Some(width) = link.width {
        if !crate::links::THUMBNAIL_WIDTHS.contains(&width) {
            return Err(Error::invalid(format!("width must be between 64 and 1024, got {width}")));
        }
        let small = tokio::task::spawn_blocking(move || thumbnail(&bytes, width))
            .await
            .map_err(|e| Error::unavailable(format!("thumbnail task failed: {e}")))?
            .map_err(|e| Error::unavailable(format!("image of capture {id}: {e}")))?;
        return Ok(([(header::CONTENT_TYPE, "image/jpeg"), cache], small).into_response());
    }
    Ok(([(header::CONTENT_TYPE, capture.image_content_type.mime()), cache], bytes).into_response())
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

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    lanewatch_web::exposition::respond(&headers, state.metrics.render())
}
