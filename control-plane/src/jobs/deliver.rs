//! The `webhook.deliver` worker: one event to one endpoint, signed by the Standard Webhooks
//! specification (`webhook-id` the same across retries, `webhook-timestamp`, `webhook-signature`
//! with the current secret and, during a rotation's overlap, the previous one too), posted
//! through the SSRF-guarded client (`webhooks::client`), paced by the endpoint's rate and
//! concurrency limits, every attempt recorded with its status, body snippet and latency.
//!
//! A capture event re-reads its capture through the endpoint's `Visibility` at each attempt
//! (events carry ids, never rows): an agency's endpoint gets only what its key could read, and
//! a capture deleted meanwhile is not pushed. The payload carries the capture's metadata and a
//! time-limited image URL, never image bytes. A 2xx is a success; anything else is retried on
//! `webhooks.retry_schedule_secs`; an address the policy refuses, or an invalid URL, is not. An
//! endpoint whose deliveries all failed for `webhooks.disable_after_secs` is disabled, and an
//! `endpoint.disabled` event goes to the endpoints that subscribe to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::{JobError, Worker};
use crate::config::WebhooksConfig;
use crate::db::Db;
use crate::db::webhooks::{DELIVER, delivery_job, endpoint_visibility};
use crate::domain::{Capture, EventType, Job, WebhookAttempt, WebhookEndpoint, WebhookMessage};
use crate::links::ImageLinks;
use crate::webhooks::client::{DeliveryClient, DeliveryError};
use crate::webhooks::sign::{self, Secret};

/// Pacing of one endpoint on this replica: requests start at least `1 / rate` apart, and at most
/// `max_concurrency` are in flight.
struct Pace {
    next: tokio::sync::Mutex<tokio::time::Instant>,
    in_flight: Semaphore,
    rate_per_sec: f64,
}

impl Pace {
    fn new(rate_per_sec: f64, max_concurrency: u32) -> Self {
        Self {
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            in_flight: Semaphore::new(max_concurrency.max(1) as usize),
            rate_per_sec,
        }
    }

    /// Waits for this request's start slot.
    async fn slot(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let now = tokio::time::Instant::now();
            let at = (*next).max(now);
            *next = at + Duration::from_secs_f64(1.0 / self.rate_per_sec.max(0.001));
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

pub struct Deliver {
    pub db: Db,
    pub client: DeliveryClient,
    pub links: ImageLinks,
    pub config: WebhooksConfig,
    /// Each endpoint's pace, with the limits it was made for.
    paces: Mutex<HashMap<Uuid, PaceFor>>,
    /// Observes each attempt's latency (`lanewatch_webhook_delivery_seconds`).
    latency: Option<prometheus_client::metrics::histogram::Histogram>,
}

/// A pace and the (rate, concurrency) it was made for.
type PaceFor = (f64, u32, Arc<Pace>);

impl Deliver {
    pub fn new(db: Db, client: DeliveryClient, links: ImageLinks, config: WebhooksConfig) -> Self {
        Self { db, client, links, config, paces: Mutex::new(HashMap::new()), latency: None }
    }

    /// Observes every attempt's latency in `histogram`.
    pub fn observe_with(mut self, histogram: prometheus_client::metrics::histogram::Histogram) -> Self {
        self.latency = Some(histogram);
        self
    }

    /// The endpoint's pace, made anew when its limits changed.
    fn pace(&self, e: &WebhookEndpoint) -> Arc<Pace> {
        let mut paces = self.paces.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match paces.get(&e.id) {
            Some((rate, conc, pace)) if *rate == e.rate_per_sec && *conc == e.max_concurrency => pace.clone(),
            _ => {
                let pace = Arc::new(Pace::new(e.rate_per_sec, e.max_concurrency));
                paces.insert(e.id, (e.rate_per_sec, e.max_concurrency, pace.clone()));
                pace
            }
        }
    }

    /// The event's JSON body, or why it is not to be sent (`Discard`).
    async fn payload(
        &self,
        e: &WebhookEndpoint,
        event: EventType,
        capture_id: Option<Uuid>,
        data: &Value,
        now: DateTime<Utc>,
    ) -> Result<Value, JobError> {
        let data = match capture_id {
            None => data.clone(),
            Some(id) => {
                let capture = self
                    .db
                    .capture(id, &endpoint_visibility(e))
                    .await
                    .map_err(|err| JobError::Retry(format!("cannot read capture {id}: {err}")))?
                    .ok_or_else(|| {
                        JobError::Discard(format!(
                            "capture {id} is gone or not visible to this endpoint's agency: not pushed"
                        ))
                    })?;
                let url =
                    self.links.url(id, &capture.image_key, now).await.map_err(|err| {
                        JobError::Retry(format!("cannot sign the image url: {}", err.message))
                    })?;
                let expires = now + chrono::Duration::from_std(self.links.ttl()).unwrap_or_default();
                json!({ "capture": capture_json(&capture, &url, expires) })
            }
        };
        Ok(json!({ "type": event.as_str(), "timestamp": now.to_rfc3339(), "data": data }))
    }

    /// Disables a failing endpoint and tells those that subscribe to `endpoint.disabled`.
    async fn disable(
        &self,
        e: &WebhookEndpoint,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), JobError> {
        let reason = format!("every delivery failed since {}", since.to_rfc3339());
        let db_err = |err: crate::db::DbError| JobError::Retry(format!("cannot disable the endpoint: {err}"));
        if !self.db.disable_endpoint(e.id, &reason, now).await.map_err(db_err)? {
            return Ok(());
        }
        tracing::warn!(endpoint_id = %e.id, url = %e.url, %reason, "webhook endpoint disabled");
        let others =
            self.db.webhook_endpoints(&crate::domain::Visibility::All, None).await.map_err(db_err)?;
        let jobs: Vec<_> = others
            .iter()
            .filter(|o| o.id != e.id && o.wants(EventType::EndpointDisabled, None))
            .filter(|o| o.agency_id.is_none() || o.agency_id == e.agency_id)
            .map(|o| {
                let data = json!({ "endpoint": { "id": e.id.to_string(), "url": e.url, "reason": reason } });
                delivery_job(o.id, EventType::EndpointDisabled, None, data)
            })
            .collect();
        self.db.insert_jobs(&jobs, now).await.map_err(db_err)?;
        Ok(())
    }

    async fn deliver(&self, job: &Job) -> Result<(), JobError> {
        let arg = |k: &str| job.args[k].as_str().map(str::to_owned);
        let bad = |what: &str| JobError::Discard(format!("malformed delivery job: {what}"));
        let message_id = arg("message_id").ok_or_else(|| bad("no message_id"))?;
        let endpoint_id =
            arg("endpoint_id").and_then(|s| Uuid::parse_str(&s).ok()).ok_or_else(|| bad("endpoint_id"))?;
        let event = arg("event").and_then(|s| EventType::parse(&s)).ok_or_else(|| bad("event"))?;
        let capture_id = arg("capture_id").and_then(|s| Uuid::parse_str(&s).ok());
        let db_err = |err: crate::db::DbError| JobError::Retry(format!("database: {err}"));
        let endpoint = match self.db.webhook_endpoint(endpoint_id).await.map_err(db_err)? {
            Some(e) if e.enabled => e,
            Some(_) => return Err(JobError::Discard(format!("endpoint {endpoint_id} is disabled"))),
            None => return Err(JobError::Discard(format!("endpoint {endpoint_id} was deleted"))),
        };
        let now = Utc::now();
        let body = self.payload(&endpoint, event, capture_id, &job.args["data"], now).await?.to_string();
        let mut secrets = vec![
            Secret::parse(&endpoint.secret)
                .map_err(|e| JobError::Discard(format!("endpoint secret: {e}")))?,
        ];
        if let (Some(previous), Some(until)) = (&endpoint.previous_secret, endpoint.previous_secret_until)
            && until > now
            && let Ok(previous) = Secret::parse(previous)
        {
            secrets.push(previous);
        }
        let refs: Vec<&Secret> = secrets.iter().collect();
        let headers = sign::headers(&refs, &message_id, now.timestamp(), body.as_bytes());
        let mut all_headers: Vec<(&str, String)> = headers.to_vec();
        all_headers.push(("content-type", "application/json".to_owned()));

        let pace = self.pace(&endpoint);
        let _permit = pace.in_flight.acquire().await.map_err(|_| JobError::Retry("pacing closed".into()))?;
        pace.slot().await;
        let span = tracing::debug_span!(
            target: crate::traces::TARGET,
            "webhook.deliver",
            otel.kind = "client",
            webhook.endpoint = %endpoint_id,
            webhook.message = %message_id,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
        );
        // the receiver may continue the trace (W3C trace context; the signature covers the body)
        if let Some(traceparent) = crate::traces::traceparent_of(&span) {
            all_headers.push(("traceparent", traceparent));
        }
        let started = std::time::Instant::now();
        let post = self.client.post(&endpoint.url, &all_headers, Bytes::from(body.clone()));
        let outcome = tracing::Instrument::instrument(post, span.clone()).await;
        let last = job.attempt >= job.max_attempts;
        let (status, snippet, error, permanent) = match &outcome {
            Ok(r) => (Some(r.status), r.body_snippet.clone(), None, false),
            Err(
                e @ (DeliveryError::Refused { .. }
                | DeliveryError::InvalidUrl { .. }
                | DeliveryError::InvalidHeader { .. }),
            ) => (None, String::new(), Some(e.to_string()), true),
            Err(e) => (None, String::new(), Some(e.to_string()), false),
        };
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        if let Some(code) = status {
            span.record("http.response.status_code", code);
        }
        if !ok {
            let why = error.clone().unwrap_or_else(|| format!("receiver answered {}", status.unwrap_or(0)));
            crate::traces::failed(&span, &why);
        }
        drop(span);
        // a failure extends the endpoint's streak; past its period the endpoint is disabled
        let failing_since =
            if ok { None } else { Some(self.db.endpoint_failed(endpoint_id, now).await.map_err(db_err)?) };
        let disable_after =
            chrono::Duration::seconds(i64::try_from(self.config.disable_after_secs).unwrap_or(i64::MAX));
        let disable = failing_since.is_some_and(|since| now - since >= disable_after);
        let state = if ok {
            "delivered"
        } else if last || permanent || disable {
            "failed"
        } else {
            "pending"
        };
        let message = WebhookMessage {
            id: message_id.clone(),
            endpoint_id,
            event_type: event,
            capture_id,
            payload: body,
            state: state.to_owned(),
            attempts: job.attempt,
            last_status: status,
            created_at: now,
        };
        let latency = outcome.as_ref().map_or(started.elapsed(), |r| r.latency);
        if let Some(h) = &self.latency {
            h.observe(latency.as_secs_f64());
        }
        let attempt = WebhookAttempt {
            attempt: job.attempt,
            at: now,
            status,
            body_snippet: snippet,
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            error: error.clone(),
        };
        self.db.record_webhook_attempt(&message, &attempt).await.map_err(db_err)?;
        if ok {
            self.db.endpoint_succeeded(endpoint_id).await.map_err(db_err)?;
            return Ok(());
        }
        let why = error.unwrap_or_else(|| format!("receiver answered {}", status.unwrap_or(0)));
        if let (true, Some(since)) = (disable, failing_since) {
            self.disable(&endpoint, since, now).await?;
            return Err(JobError::Discard(format!("{why}; endpoint disabled")));
        }
        if permanent { Err(JobError::Discard(why)) } else { Err(JobError::Retry(why)) }
    }
}

/// A capture as a webhook payload shows it: metadata and a time-limited image URL.
fn capture_json(c: &Capture, image_url: &str, expires: DateTime<Utc>) -> Value {
    let m = &c.meta;
    json!({
        "id": m.id.to_string(),
        "agent_id": c.agent_id,
        "site": m.site_id,
        "lane": m.lane,
        "camera_id": m.camera_id,
        "captured_at": m.captured_at.to_rfc3339(),
        "vehicle_class": m.vehicle_class.as_str(),
        "speed_kmh": m.speed_kmh,
        "decision": c.decision.as_str(),
        "occupancy": {
            "status": m.occupancy_status.as_str(),
            "occupants": m.occupants,
            "confidence": m.confidence,
            "model_version": m.model_version,
            "sections": m.sections.iter().map(|s| json!({ "section": s.section, "occupants": s.occupants })).collect::<Vec<_>>(),
        },
        "image_url": image_url,
        "image_url_expires_at": expires.to_rfc3339(),
    })
}

impl Worker for Deliver {
    fn name(&self) -> &'static str {
        DELIVER
    }

    fn perform<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(self.deliver(job))
    }

    /// The retry schedule, not an exponential: after attempt n the n-th step.
    fn backoff(&self, attempt: u32) -> Duration {
        let steps = &self.config.retry_schedule_secs;
        let secs = steps.get(attempt.saturating_sub(1) as usize).or(steps.last()).copied().unwrap_or(5);
        super::jitter(Duration::from_secs(secs), 0.05)
    }

    fn timeout(&self) -> Duration {
        // pacing may hold an attempt before it is sent: room for a slow endpoint's queue
        Duration::from_millis(self.config.timeout_ms + self.config.connect_timeout_ms)
            + Duration::from_secs(60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_pace_starts_requests_one_over_the_rate_apart() {
        let pace = Pace::new(20.0, 4);
        let start = tokio::time::Instant::now();
        for _ in 0..41 {
            pace.slot().await;
        }
        // 41 requests at 20/s: the 41st starts 2 s after the first
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
