//! The vehicle push service's rows (`webhook_endpoints`, `webhook_messages`,
//! `webhook_attempts`): endpoints and who sees them, the push jobs of a capture batch (inserted
//! by `insert_captures` in the transaction of the capture rows), messages and their attempts,
//! and each endpoint's failure streak. Ingest reads the endpoints through a cache of at most
//! [`ENDPOINT_CACHE_TTL`] (a write through this process empties it at once).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use sea_orm::{ConnectionTrait, QueryResult, Statement, Value};
use uuid::Uuid;

use super::{Db, DbError};
use crate::domain::{
    Capture, Decision, EventType, NewJob, Visibility, WebhookAttempt, WebhookEndpoint, WebhookMessage,
};

/// How long ingest may push with an endpoint list it read before.
pub const ENDPOINT_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// The queue and worker of deliveries.
pub const QUEUE: &str = "webhooks";
pub const DELIVER: &str = "webhook.deliver";
/// Svix's schedule: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const MAX_ATTEMPTS: u32 = 8;

pub(super) type EndpointCache = Option<(std::time::Instant, Arc<Vec<WebhookEndpoint>>)>;

const COLUMNS: &str = "id, url, description, event_types, site_id, rate_per_sec, max_concurrency, enabled, secret, \
    previous_secret, previous_secret_until_ms, agency_id, jurisdiction, all_captures, failing_since_ms, \
    disabled_reason, created_by, created_at_ms";

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn endpoint_from_row(r: &QueryResult) -> Result<WebhookEndpoint, DbError> {
    let id: String = r.try_get("", "id")?;
    let malformed = |why: String| DbError::Malformed { table: "webhook_endpoints", id: id.clone(), why };
    let events: String = r.try_get("", "event_types")?;
    let events: Vec<String> =
        serde_json::from_str(&events).map_err(|e| malformed(format!("event_types: {e}")))?;
    Ok(WebhookEndpoint {
        id: Uuid::parse_str(&id).map_err(|_| malformed("id is not a uuid".into()))?,
        url: r.try_get("", "url")?,
        description: r.try_get("", "description")?,
        event_types: events.iter().filter_map(|e| EventType::parse(e)).collect(),
        site_id: r.try_get("", "site_id")?,
        rate_per_sec: r.try_get("", "rate_per_sec")?,
        max_concurrency: u32::try_from(r.try_get::<i32>("", "max_concurrency")?).unwrap_or(1),
        enabled: r.try_get("", "enabled")?,
        secret: r.try_get("", "secret")?,
        previous_secret: r.try_get("", "previous_secret")?,
        previous_secret_until: r.try_get::<Option<i64>>("", "previous_secret_until_ms")?.map(at),
        agency_id: r.try_get("", "agency_id")?,
        jurisdiction: r.try_get("", "jurisdiction")?,
        all_captures: r.try_get("", "all_captures")?,
        failing_since: r.try_get::<Option<i64>>("", "failing_since_ms")?.map(at),
        disabled_reason: r.try_get("", "disabled_reason")?,
        created_by: r.try_get("", "created_by")?,
        created_at: at(r.try_get("", "created_at_ms")?),
    })
}

/// The visibility an endpoint's events are filtered by: its agency's, or everything.
pub fn endpoint_visibility(e: &WebhookEndpoint) -> Visibility {
    match &e.jurisdiction {
        Some(j) if e.agency_id.is_some() => {
            Visibility::Jurisdiction { jurisdiction: j.clone(), all_captures: e.all_captures }
        }
        _ => Visibility::All,
    }
}

/// The delivery job of `event` for `endpoint`: a new message id, the same across its retries.
pub fn delivery_job(
    endpoint: Uuid,
    event: EventType,
    capture_id: Option<Uuid>,
    data: serde_json::Value,
) -> NewJob {
    let args = serde_json::json!({
        "message_id": format!("msg_{}", Uuid::now_v7().simple()),
        "endpoint_id": endpoint.to_string(),
        "event": event.as_str(),
        "capture_id": capture_id.map(|c| c.to_string()),
        "data": data,
    });
    NewJob { max_attempts: MAX_ATTEMPTS, ..NewJob::new(QUEUE, DELIVER, args) }
}

/// The push jobs of the new captures of a batch: `capture.stored` for each, and
/// `violation.flagged` for a violation candidate, to every enabled endpoint that wants the event
/// and the site and whose agency (if any) could read the capture. `jurisdictions` maps the
/// batch's sites to theirs.
pub fn push_jobs(
    endpoints: &[WebhookEndpoint],
    new: &[&Capture],
    jurisdictions: &HashMap<String, Option<String>>,
) -> Vec<NewJob> {
    let mut jobs = Vec::new();
    for c in new {
        let mut events = vec![EventType::CaptureStored];
        if c.decision == Decision::ViolationCandidate {
            events.push(EventType::ViolationFlagged);
        }
        for e in endpoints {
            let visible = match endpoint_visibility(e) {
                Visibility::All => true,
                Visibility::Jurisdiction { jurisdiction, all_captures } => {
                    jurisdictions.get(&c.meta.site_id).and_then(Option::as_deref)
                        == Some(jurisdiction.as_str())
                        && c.decision != Decision::Test
                        && (all_captures || c.decision == Decision::ViolationCandidate)
                }
            };
            for &event in &events {
                if visible && e.wants(event, Some(&c.meta.site_id)) {
                    let mut job = delivery_job(e.id, event, Some(c.meta.id), serde_json::Value::Null);
                    // the delivery continues the capture's trace (`traces::job_span`)
                    if let Some(traceparent) = &c.trace_parent {
                        job.args[crate::traces::TRACEPARENT_ARG] = traceparent.clone().into();
                    }
                    jobs.push(job);
                }
            }
        }
    }
    jobs
}

/// The delivery jobs of a review's `violation.confirmed` / `violation.rejected`: to every
/// endpoint that wants the event and the site and whose agency (if any) has the site's
/// jurisdiction (a violation is readable by its jurisdiction's agency).
pub fn review_jobs(
    endpoints: &[WebhookEndpoint],
    event: EventType,
    site_id: &str,
    jurisdiction: Option<&str>,
    capture_id: Uuid,
) -> Vec<NewJob> {
    endpoints
        .iter()
        .filter(|e| e.wants(event, Some(site_id)))
        .filter(|e| match endpoint_visibility(e) {
            Visibility::All => true,
            Visibility::Jurisdiction { jurisdiction: j, .. } => jurisdiction == Some(j.as_str()),
        })
        .map(|e| delivery_job(e.id, event, Some(capture_id), serde_json::Value::Null))
        .collect()
}

impl Db {
    /// Inserts, on `conn` (the transaction of the change that causes it), the delivery jobs of
    /// a fleet event (`agent.online`, `agent.offline`, `config.rejected`) at `site_id`: to the
    /// endpoints that want it, not agencies' (an agency does not read the fleet). Whether any.
    /// `endpoints` are read (`endpoints_for_ingest`) before the transaction begins: on SQLite a
    /// read through the pool while a transaction holds its connection could wait for it.
    pub(super) async fn push_fleet_event<C: ConnectionTrait>(
        &self,
        conn: &C,
        endpoints: &[WebhookEndpoint],
        event: EventType,
        site_id: &str,
        data: serde_json::Value,
    ) -> Result<bool, DbError> {
        let jobs: Vec<NewJob> = endpoints
            .iter()
            .filter(|e| e.agency_id.is_none() && e.wants(event, Some(site_id)))
            .map(|e| delivery_job(e.id, event, None, data.clone()))
            .collect();
        super::jobs::insert_jobs(conn, &jobs, Utc::now()).await?;
        Ok(!jobs.is_empty())
    }

    /// Wakes this process's job producers (after a transaction with jobs committed).
    pub(super) fn wake_jobs(&self) {
        self.jobs_inserted.notify_waiters();
    }

    fn endpoint_cache(&self) -> std::sync::MutexGuard<'_, EndpointCache> {
        self.endpoints.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The enabled endpoints, as ingest reads them (cached at most [`ENDPOINT_CACHE_TTL`]).
    pub async fn endpoints_for_ingest(&self) -> Result<Arc<Vec<WebhookEndpoint>>, DbError> {
        if let Some((read_at, list)) = self.endpoint_cache().as_ref()
            && read_at.elapsed() < ENDPOINT_CACHE_TTL
        {
            return Ok(list.clone());
        }
        let read_at = std::time::Instant::now();
        let list: Arc<Vec<WebhookEndpoint>> = Arc::new(
            self.webhook_endpoints(&Visibility::All, None).await?.into_iter().filter(|e| e.enabled).collect(),
        );
        let mut cache = self.endpoint_cache();
        if cache.as_ref().is_none_or(|(at, _)| *at < read_at) {
            *cache = Some((read_at, list.clone()));
        }
        Ok(list)
    }

    fn forget_endpoints(&self) {
        *self.endpoint_cache() = None;
    }

    /// Endpoints the caller may see: all, or an agency's own.
    pub async fn webhook_endpoints(
        &self,
        vis: &Visibility,
        agency_id: Option<&str>,
    ) -> Result<Vec<WebhookEndpoint>, DbError> {
        let (sql, values): (String, Vec<Value>) = match (vis, agency_id) {
            (Visibility::All, _) => {
                (format!("SELECT {COLUMNS} FROM webhook_endpoints ORDER BY created_at_ms, id"), vec![])
            }
            (Visibility::Jurisdiction { .. }, agency) => (
                format!(
                    "SELECT {COLUMNS} FROM webhook_endpoints WHERE agency_id = $1 ORDER BY created_at_ms, id"
                ),
                vec![agency.unwrap_or_default().to_owned().into()],
            ),
        };
        let rows = self
            .conn
            .query_all(Statement::from_sql_and_values(self.conn.get_database_backend(), sql, values))
            .await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    pub async fn webhook_endpoint(&self, id: Uuid) -> Result<Option<WebhookEndpoint>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1");
        let row = self
            .conn
            .query_one(Statement::from_sql_and_values(
                self.conn.get_database_backend(),
                sql,
                [id.to_string().into()],
            ))
            .await?;
        row.as_ref().map(endpoint_from_row).transpose()
    }

    /// Inserts or replaces an endpoint (every column).
    pub async fn put_webhook_endpoint(&self, e: &WebhookEndpoint, now: DateTime<Utc>) -> Result<(), DbError> {
        let events: Vec<&str> = e.event_types.iter().map(|t| t.as_str()).collect();
        let sql = format!(
            "INSERT INTO webhook_endpoints ({COLUMNS}, updated_at_ms) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
             ON CONFLICT (id) DO UPDATE SET url = excluded.url, description = excluded.description, \
             event_types = excluded.event_types, site_id = excluded.site_id, rate_per_sec = excluded.rate_per_sec, \
             max_concurrency = excluded.max_concurrency, enabled = excluded.enabled, secret = excluded.secret, \
             previous_secret = excluded.previous_secret, previous_secret_until_ms = excluded.previous_secret_until_ms, \
             failing_since_ms = excluded.failing_since_ms, disabled_reason = excluded.disabled_reason, \
             updated_at_ms = excluded.updated_at_ms"
        );
        let values: Vec<Value> = vec![
            e.id.to_string().into(),
            e.url.clone().into(),
            e.description.clone().into(),
            serde_json::to_string(&events).unwrap_or_else(|_| "[]".into()).into(),
            e.site_id.clone().into(),
            e.rate_per_sec.into(),
            i32::try_from(e.max_concurrency).unwrap_or(i32::MAX).into(),
            e.enabled.into(),
            e.secret.clone().into(),
            e.previous_secret.clone().into(),
            e.previous_secret_until.map(|t| t.timestamp_millis()).into(),
            e.agency_id.clone().into(),
            e.jurisdiction.clone().into(),
            e.all_captures.into(),
            e.failing_since.map(|t| t.timestamp_millis()).into(),
            e.disabled_reason.clone().into(),
            e.created_by.clone().into(),
            e.created_at.timestamp_millis().into(),
            now.timestamp_millis().into(),
        ];
        self.conn
            .execute(Statement::from_sql_and_values(self.conn.get_database_backend(), sql, values))
            .await?;
        self.forget_endpoints();
        Ok(())
    }

    pub async fn delete_webhook_endpoint(&self, id: Uuid) -> Result<bool, DbError> {
        let result = self
            .conn
            .execute(Statement::from_sql_and_values(
                self.conn.get_database_backend(),
                "DELETE FROM webhook_endpoints WHERE id = $1",
                [id.to_string().into()],
            ))
            .await?;
        self.forget_endpoints();
        Ok(result.rows_affected() == 1)
    }

    /// A delivery failed at `now`: the streak starts unless it runs; since when it fails.
    pub async fn endpoint_failed(&self, id: Uuid, now: DateTime<Utc>) -> Result<DateTime<Utc>, DbError> {
        let backend = self.conn.get_database_backend();
        self.conn
            .execute(Statement::from_sql_and_values(
                backend,
                "UPDATE webhook_endpoints SET failing_since_ms = COALESCE(failing_since_ms, $1) WHERE id = $2",
                [now.timestamp_millis().into(), id.to_string().into()],
            ))
            .await?;
        Ok(self.webhook_endpoint(id).await?.and_then(|e| e.failing_since).unwrap_or(now))
    }

    /// A delivery succeeded: the failure streak ends.
    pub async fn endpoint_succeeded(&self, id: Uuid) -> Result<(), DbError> {
        self.conn
            .execute(Statement::from_sql_and_values(
                self.conn.get_database_backend(),
                "UPDATE webhook_endpoints SET failing_since_ms = NULL WHERE id = $1 AND failing_since_ms IS NOT NULL",
                [id.to_string().into()],
            ))
            .await?;
        Ok(())
    }

    /// Disables an endpoint, saying why; false when it was disabled already.
    pub async fn disable_endpoint(
        &self,
        id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let result = self
            .conn
            .execute(Statement::from_sql_and_values(
                self.conn.get_database_backend(),
                "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $1, updated_at_ms = $2 \
                 WHERE id = $3 AND enabled",
                [reason.into(), now.timestamp_millis().into(), id.to_string().into()],
            ))
            .await?;
        self.forget_endpoints();
        Ok(result.rows_affected() == 1)
    }

    /// Records attempt `attempt` of message `m` (created with its first attempt) and its state.
    pub async fn record_webhook_attempt(
        &self,
        m: &WebhookMessage,
        a: &WebhookAttempt,
    ) -> Result<(), DbError> {
        let backend = self.conn.get_database_backend();
        let now = a.at.timestamp_millis();
        self.conn
            .execute(Statement::from_sql_and_values(
                backend,
                "INSERT INTO webhook_messages (id, endpoint_id, event_type, capture_id, payload, state, attempts, \
                 last_status, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, attempts = webhook_messages.attempts + 1, \
                 last_status = excluded.last_status, updated_at_ms = excluded.updated_at_ms",
                [
                    m.id.clone().into(),
                    m.endpoint_id.to_string().into(),
                    m.event_type.as_str().into(),
                    m.capture_id.map(|c| c.to_string()).into(),
                    m.payload.clone().into(),
                    m.state.clone().into(),
                    1i32.into(),
                    a.status.map(i32::from).into(),
                    now.into(),
                ],
            ))
            .await?;
        self.conn
            .execute(Statement::from_sql_and_values(
                backend,
                "INSERT INTO webhook_attempts (message_id, attempt, at_ms, status, body_snippet, latency_ms, error) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (message_id, attempt) DO NOTHING",
                [
                    m.id.clone().into(),
                    i32::try_from(a.attempt).unwrap_or(i32::MAX).into(),
                    now.into(),
                    a.status.map(i32::from).into(),
                    a.body_snippet.clone().into(),
                    i64::try_from(a.latency_ms).unwrap_or(i64::MAX).into(),
                    a.error.clone().into(),
                ],
            ))
            .await?;
        Ok(())
    }

    /// An endpoint's messages, newest first, strictly before `before` (a message id); `failed_since`
    /// keeps only failed ones created since then.
    pub async fn webhook_messages(
        &self,
        endpoint_id: Uuid,
        failed_since: Option<DateTime<Utc>>,
        before: Option<&str>,
        first: u64,
    ) -> Result<Vec<WebhookMessage>, DbError> {
        let mut clause = vec!["endpoint_id = $1".to_owned()];
        let mut values: Vec<Value> = vec![endpoint_id.to_string().into()];
        if let Some(since) = failed_since {
            values.push(since.timestamp_millis().into());
            clause.push(format!("state = 'failed' AND created_at_ms >= ${}", values.len()));
        }
        if let Some(before) = before {
            values.push(before.to_owned().into());
            clause.push(format!("id < ${}", values.len()));
        }
        values.push(i64::try_from(first).unwrap_or(i64::MAX).into());
        let sql = format!(
            "SELECT id, endpoint_id, event_type, capture_id, payload, state, attempts, last_status, created_at_ms \
             FROM webhook_messages WHERE {} ORDER BY id DESC LIMIT ${}",
            clause.join(" AND "),
            values.len()
        );
        let rows = self
            .conn
            .query_all(Statement::from_sql_and_values(self.conn.get_database_backend(), sql, values))
            .await?;
        rows.iter().map(message_from_row).collect()
    }

    pub async fn webhook_message(&self, id: &str) -> Result<Option<WebhookMessage>, DbError> {
        let sql = "SELECT id, endpoint_id, event_type, capture_id, payload, state, attempts, last_status, created_at_ms \
                   FROM webhook_messages WHERE id = $1";
        let row = self
            .conn
            .query_one(Statement::from_sql_and_values(self.conn.get_database_backend(), sql, [id.into()]))
            .await?;
        row.as_ref().map(message_from_row).transpose()
    }

    pub async fn webhook_attempts(&self, message_id: &str) -> Result<Vec<WebhookAttempt>, DbError> {
        let rows = self
            .conn
            .query_all(Statement::from_sql_and_values(
                self.conn.get_database_backend(),
                "SELECT attempt, at_ms, status, body_snippet, latency_ms, error FROM webhook_attempts \
                 WHERE message_id = $1 ORDER BY attempt",
                [message_id.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(WebhookAttempt {
                    attempt: u32::try_from(r.try_get::<i32>("", "attempt")?).unwrap_or(0),
                    at: at(r.try_get("", "at_ms")?),
                    status: r.try_get::<Option<i32>>("", "status")?.and_then(|s| u16::try_from(s).ok()),
                    body_snippet: r.try_get("", "body_snippet")?,
                    latency_ms: u64::try_from(r.try_get::<i64>("", "latency_ms")?).unwrap_or(0),
                    error: r.try_get("", "error")?,
                })
            })
            .collect()
    }
}

fn message_from_row(r: &QueryResult) -> Result<WebhookMessage, DbError> {
    let id: String = r.try_get("", "id")?;
    let malformed =
        |why: &str| DbError::Malformed { table: "webhook_messages", id: id.clone(), why: why.into() };
    let event: String = r.try_get("", "event_type")?;
    Ok(WebhookMessage {
        endpoint_id: Uuid::parse_str(&r.try_get::<String>("", "endpoint_id")?)
            .map_err(|_| malformed("endpoint_id"))?,
        event_type: EventType::parse(&event).ok_or_else(|| malformed("event_type"))?,
        capture_id: r.try_get::<Option<String>>("", "capture_id")?.and_then(|c| Uuid::parse_str(&c).ok()),
        payload: r.try_get("", "payload")?,
        state: r.try_get("", "state")?,
        attempts: u32::try_from(r.try_get::<i32>("", "attempts")?).unwrap_or(0),
        last_status: r.try_get::<Option<i32>>("", "last_status")?.and_then(|s| u16::try_from(s).ok()),
        created_at: at(r.try_get("", "created_at_ms")?),
        id,
    })
}

/// The jurisdictions of `sites`, read on `conn` (the capture batch's transaction).
pub(super) async fn site_jurisdictions<C: ConnectionTrait>(
    conn: &C,
    sites: &[&str],
) -> Result<HashMap<String, Option<String>>, DbError> {
    if sites.is_empty() {
        return Ok(HashMap::new());
    }
    let list = (1..=sites.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
    let sql = format!("SELECT id, jurisdiction FROM sites WHERE id IN ({list})");
    let values: Vec<Value> = sites.iter().map(|s| Value::from(s.to_string())).collect();
    let rows =
        conn.query_all(Statement::from_sql_and_values(conn.get_database_backend(), sql, values)).await?;
    rows.iter().map(|r| Ok((r.try_get("", "id")?, r.try_get("", "jurisdiction")?))).collect()
}
