//! Captures and what was made of them (`captures`, `violations`): the batched ingest insert,
//! keyset pages and per-decision counts under a `CaptureFilter`, hourly occupancy statistics,
//! and violations with their compare-and-set review; rows converted by hand.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, TransactionTrait,
};
use uuid::Uuid;

use super::entities::{captures, violations};
use super::{Db, DbError, after_cursor, capture_scope, f32_to_f64, to_i64, to_u64, violation_scope};
use crate::domain::{
    Capture, CaptureCursor, CaptureFilter, CaptureMeta, Decision, HourlyStats, ImageContentType,
    OccupancyStatus, ReviewDecision, SectionCount, VehicleClass, Violation, ViolationState, Visibility,
};

/// How a review request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Reviewed {
    Done(Violation),
    /// No such violation visible to the caller.
    NotFound,
    /// Only a pending violation can be reviewed.
    AlreadyReviewed(ViolationState),
}

/// Whether an insert stored a new row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New,
    Duplicate,
}

impl Db {
    /// Inserts many captures in one transaction: one multi-row statement
    /// for the captures (`ON CONFLICT DO NOTHING RETURNING id` says which are new) and one for
    /// the violations of the new violation candidates. Answers per capture, in order; a capture
    /// whose id came earlier in the batch is a duplicate. All or nothing: a batch without
    /// violation candidates is the one statement, in its own implicit transaction.
    pub async fn insert_captures(&self, batch: &[Capture]) -> Result<Vec<Inserted>, DbError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.register_cameras(batch).await?;
        let mut insert = captures::Entity::insert_many(batch.iter().map(capture_row))
            .on_conflict(OnConflict::column(captures::Column::Id).do_nothing().to_owned())
            .into_query();
        insert.returning_col(captures::Column::Id);
        let statement = self.conn.get_database_backend().build(&insert);
        // the first of the batch with a new id is the one stored
        let outcomes = |rows: Vec<sea_orm::QueryResult>| -> Result<Vec<Inserted>, DbError> {
            let mut new: std::collections::HashSet<String> = Default::default();
            for row in rows {
                new.insert(row.try_get::<String>("", "id")?);
            }
            Ok(batch
                .iter()
                .map(|c| if new.remove(&c.meta.id.to_string()) { Inserted::New } else { Inserted::Duplicate })
                .collect())
        };
        let endpoints = self.endpoints_for_ingest().await?;
        if endpoints.is_empty() && batch.iter().all(|c| c.decision != Decision::ViolationCandidate) {
            // one statement is atomic on its own: one round trip, no transaction around it
            return outcomes(self.conn.query_all(statement).await?);
        }
        let txn = self.conn.begin().await?;
        let outcomes = outcomes(txn.query_all(statement).await?)?;
        // the push jobs of the new captures commit with them, or not at all
        let new: Vec<&Capture> =
            batch.iter().zip(&outcomes).filter(|(_, o)| **o == Inserted::New).map(|(c, _)| c).collect();
        let mut pushed = false;
        if !endpoints.is_empty() && !new.is_empty() {
            let needs_sites = endpoints.iter().any(|e| e.agency_id.is_some());
            let mut sites: Vec<&str> = new.iter().map(|c| c.meta.site_id.as_str()).collect();
            sites.sort_unstable();
            sites.dedup();
            let jurisdictions = if needs_sites {
                super::webhooks::site_jurisdictions(&txn, &sites).await?
            } else {
                Default::default()
            };
            let jobs = super::webhooks::push_jobs(&endpoints, &new, &jurisdictions);
            pushed = !jobs.is_empty();
            super::jobs::insert_jobs(&txn, &jobs, Utc::now()).await?;
        }
        let violations: Vec<_> = batch
            .iter()
            .zip(&outcomes)
            .filter(|(c, o)| **o == Inserted::New && c.decision == Decision::ViolationCandidate)
            .map(|(c, _)| violation_row(c))
            .collect();
        if !violations.is_empty() {
            violations::Entity::insert_many(violations)
                .on_conflict(OnConflict::column(violations::Column::CaptureId).do_nothing().to_owned())
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        if pushed {
            self.jobs_inserted.notify_waiters();
        }
        Ok(outcomes)
    }

    /// Inserts the capture unless its id exists already (`ON CONFLICT (id) DO NOTHING`); a new
    /// capture also records its camera and, when the policy flagged it, a pending violation, in
    /// the same transaction ([`Db::insert_captures`] of one).
    pub async fn insert_capture(&self, c: &Capture) -> Result<Inserted, DbError> {
        Ok(self.insert_captures(std::slice::from_ref(c)).await?[0]) // one answer per capture
    }

    /// A capture, when the caller may see it.
    pub async fn capture(&self, id: Uuid, vis: &Visibility) -> Result<Option<Capture>, DbError> {
        captures::Entity::find_by_id(id.to_string())
            .filter(capture_scope(vis))
            .one(&self.conn)
            .await?
            .map(capture_from_row)
            .transpose()
    }

    /// Captures the caller may see that match `filter`, newest first by
    /// `(captured_at DESC, id DESC)`, strictly after `after` when given.
    pub async fn captures_page(
        &self,
        filter: &CaptureFilter,
        vis: &Visibility,
        after: Option<CaptureCursor>,
        limit: u64,
    ) -> Result<Vec<Capture>, DbError> {
        let rows = captures_page_select(filter, vis, after, limit).all(&self.conn).await?;
        rows.into_iter().map(capture_from_row).collect()
    }

    /// How many of the captures `filter` selects (among those `vis` may see) carry each
    /// decision; decisions without captures are left out.
    pub async fn capture_counts(
        &self,
        filter: &CaptureFilter,
        vis: &Visibility,
    ) -> Result<Vec<(Decision, u64)>, DbError> {
        use captures::Column as C;
        let rows: Vec<(String, i64)> = captures::Entity::find()
            .select_only()
            .column(C::Decision)
            .column_as(C::Id.count(), "n")
            .filter(capture_filter(filter, vis))
            .group_by(C::Decision)
            .into_tuple()
            .all(&self.conn)
            .await?;
        Ok(rows.into_iter().map(|(d, n)| (Decision::from_db(&d), u64::try_from(n).unwrap_or(0))).collect())
    }

    /// `EXPLAIN ANALYZE` of the statement `captures_page` runs, one line per plan line
    /// (PostgreSQL only: the benchmark's check that a deep page walks an index).
    pub async fn explain_captures_page(
        &self,
        filter: &CaptureFilter,
        vis: &Visibility,
        after: Option<CaptureCursor>,
        limit: u64,
    ) -> Result<Vec<String>, DbError> {
        let backend = self.conn.get_database_backend();
        let select = captures_page_select(filter, vis, after, limit).build(backend);
        let explain = sea_orm::Statement::from_sql_and_values(
            backend,
            format!("EXPLAIN ANALYZE {}", select.sql),
            select.values.map(|v| v.0).unwrap_or_default(),
        );
        let rows = self.conn.query_all(explain).await?;
        rows.iter().map(|r| r.try_get_by_index::<String>(0).map_err(DbError::from)).collect()
    }

    /// Vehicles per site per hour in `[from, to)` among the captures the caller may see.
    pub async fn occupancy_stats(
        &self,
        site_id: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        vis: &Visibility,
    ) -> Result<Vec<HourlyStats>, DbError> {
        use captures::Column as C;
        let backend = self.conn.get_database_backend();
        let hour = match backend {
            sea_orm::DbBackend::Postgres => {
                "to_char(date_trunc('hour', captured_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD\"T\"HH24:00:00Z')"
            }
            _ => "strftime('%Y-%m-%dT%H:00:00Z', captured_at)",
        };
        let counted = |cond: &str| {
            Expr::cust(format!(
                "SUM(CASE WHEN occupancy_status = 'counted' AND occupants {cond} THEN 1 ELSE 0 END)"
            ))
        };
        // test captures show no vehicle: never in statistics
        let mut cond = capture_scope(vis)
            .add(C::CapturedAt.gte(from))
            .add(C::CapturedAt.lt(to))
            .add(C::Decision.ne(Decision::Test.as_str()));
        if let Some(site) = site_id {
            cond = cond.add(C::SiteId.eq(site));
        }
        let stmt = Query::select()
            .column(C::SiteId)
            .expr_as(Expr::cust(hour), Alias::new("hour"))
            .expr_as(Expr::cust("COUNT(*)"), Alias::new("vehicles"))
            .expr_as(counted("= 0"), Alias::new("o0"))
            .expr_as(counted("= 1"), Alias::new("o1"))
            .expr_as(counted("= 2"), Alias::new("o2"))
            .expr_as(counted(">= 3"), Alias::new("o3"))
            .expr_as(
                Expr::cust("SUM(CASE WHEN occupancy_status = 'counted' THEN 0 ELSE 1 END)"),
                Alias::new("unknown"),
            )
            .expr_as(
                Expr::cust(
                    "SUM(CASE WHEN EXISTS (SELECT 1 FROM violations v WHERE v.capture_id = captures.id \
                     AND v.state <> 'rejected') THEN 1 ELSE 0 END)",
                ),
                Alias::new("violations"),
            )
            .from(captures::Entity)
            .cond_where(cond)
            .add_group_by([Expr::col(C::SiteId).into(), Expr::cust(hour)])
            .order_by(C::SiteId, sea_orm::Order::Asc)
            .order_by_expr(Expr::cust(hour), sea_orm::Order::Asc)
            .to_owned();
        let rows = self.conn.query_all(backend.build(&stmt)).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let site_id: String = row.try_get("", "site_id")?;
            let hour_text: String = row.try_get("", "hour")?;
            let hour = DateTime::parse_from_rfc3339(&hour_text)
                .map_err(|_| DbError::Malformed {
                    table: "captures",
                    id: site_id.clone(),
                    why: format!("hour bucket {hour_text:?} is not a timestamp"),
                })?
                .with_timezone(&Utc);
            let n = |name: &str| -> Result<u64, DbError> { Ok(to_u64(row.try_get::<i64>("", name)?)) };
            out.push(HourlyStats {
                hour,
                vehicles: n("vehicles")?,
                occupants_0: n("o0")?,
                occupants_1: n("o1")?,
                occupants_2: n("o2")?,
                occupants_3_plus: n("o3")?,
                unknown: n("unknown")?,
                violations: n("violations")?,
                site_id,
            });
        }
        Ok(out)
    }

    /// Violations the caller may see, newest capture first, strictly after `after` when given.
    pub async fn violations_page(
        &self,
        state: Option<ViolationState>,
        site_id: Option<&str>,
        vis: &Visibility,
        after: Option<CaptureCursor>,
        limit: u64,
    ) -> Result<Vec<Violation>, DbError> {
        use violations::Column as V;
        let mut cond = violation_scope(vis);
        if let Some(state) = state {
            cond = cond.add(V::State.eq(state.as_str()));
        }
        if let Some(site) = site_id {
            cond = cond.add(V::SiteId.eq(site));
        }
        if let Some(c) = after {
            cond = cond.add(after_cursor(V::CapturedAt, V::Id, c));
        }
        let rows = violations::Entity::find()
            .filter(cond)
            .order_by_desc(V::CapturedAt)
            .order_by_desc(V::Id)
            .limit(limit)
            .all(&self.conn)
            .await?;
        rows.into_iter().map(violation_from_row).collect()
    }

    pub async fn violation(&self, id: Uuid, vis: &Visibility) -> Result<Option<Violation>, DbError> {
        violations::Entity::find_by_id(id.to_string())
            .filter(violation_scope(vis))
            .one(&self.conn)
            .await?
            .map(violation_from_row)
            .transpose()
    }

    pub async fn violation_of_capture(
        &self,
        capture_id: Uuid,
        vis: &Visibility,
    ) -> Result<Option<Violation>, DbError> {
        violations::Entity::find()
            .filter(violations::Column::CaptureId.eq(capture_id.to_string()))
            .filter(violation_scope(vis))
            .one(&self.conn)
            .await?
            .map(violation_from_row)
            .transpose()
    }

    /// Confirms or rejects a pending violation (a compare-and-set on its state).
    pub async fn review_violation(
        &self,
        id: Uuid,
        decision: ReviewDecision,
        reviewer: &str,
        reason: Option<&str>,
        vis: &Visibility,
        now: DateTime<Utc>,
    ) -> Result<Reviewed, DbError> {
        use violations::Column as V;
        let state = match decision {
            ReviewDecision::Confirm => ViolationState::Confirmed,
            ReviewDecision::Reject => ViolationState::Rejected,
        };
        let endpoints = self.endpoints_for_ingest().await?;
        let txn = self.conn.begin().await?;
        let done = violations::Entity::update_many()
            .col_expr(V::State, state.as_str().into())
            .col_expr(V::Reviewer, Some(reviewer.to_owned()).into())
            .col_expr(V::Reason, reason.map(str::to_owned).into())
            .col_expr(V::ReviewedAt, Some(now).into())
            .filter(V::Id.eq(id.to_string()))
            .filter(V::State.eq(ViolationState::Pending.as_str()))
            .filter(violation_scope(vis))
            .exec(&txn)
            .await?;
        // the review's push jobs commit with it
        let event = match decision {
            ReviewDecision::Confirm => crate::domain::EventType::ViolationConfirmed,
            ReviewDecision::Reject => crate::domain::EventType::ViolationRejected,
        };
        let mut pushed = false;
        if done.rows_affected == 1
            && endpoints.iter().any(|e| e.enabled && e.event_types.contains(&event))
            && let Some(v) = violations::Entity::find_by_id(id.to_string()).one(&txn).await?
            && let Ok(capture_id) = Uuid::parse_str(&v.capture_id)
        {
            let sites = super::webhooks::site_jurisdictions(&txn, &[v.site_id.as_str()]).await?;
            let jurisdiction = sites.get(&v.site_id).cloned().flatten();
            let jobs = super::webhooks::review_jobs(
                &endpoints,
                event,
                &v.site_id,
                jurisdiction.as_deref(),
                capture_id,
            );
            pushed = !jobs.is_empty();
            super::jobs::insert_jobs(&txn, &jobs, now).await?;
        }
        txn.commit().await?;
        if pushed {
            self.jobs_inserted.notify_waiters();
        }
        let current = self.violation(id, vis).await?;
        Ok(match current {
            None => Reviewed::NotFound,
            Some(v) if done.rows_affected == 1 => Reviewed::Done(v),
            Some(v) => Reviewed::AlreadyReviewed(v.state),
        })
    }
}

/// The statement of one captures page: `filter` within `vis`, newest first by
/// `(captured_at DESC, id DESC)`, strictly after `after` when given.
fn captures_page_select(
    filter: &CaptureFilter,
    vis: &Visibility,
    after: Option<CaptureCursor>,
    limit: u64,
) -> sea_orm::Select<captures::Entity> {
    use captures::Column as C;
    let mut cond = capture_filter(filter, vis);
    if let Some(c) = after {
        cond = cond.add(after_cursor(C::CapturedAt, C::Id, c));
    }
    captures::Entity::find().filter(cond).order_by_desc(C::CapturedAt).order_by_desc(C::Id).limit(limit)
}

/// The captures `filter` selects among those `vis` may see.
fn capture_filter(filter: &CaptureFilter, vis: &Visibility) -> Condition {
    use captures::Column as C;
    let mut cond = capture_scope(vis);
    if let Some(site) = &filter.site_id {
        cond = cond.add(C::SiteId.eq(site.as_str()));
    }
    if let Some(lane) = filter.lane {
        cond = cond.add(C::Lane.eq(i64::from(lane)));
    }
    if let Some(from) = filter.from {
        cond = cond.add(C::CapturedAt.gte(from));
    }
    if let Some(to) = filter.to {
        cond = cond.add(C::CapturedAt.lt(to));
    }
    if let Some(decision) = filter.decision {
        cond = cond.add(C::Decision.eq(decision.as_str()));
    }
    if let Some(n) = filter.min_occupants {
        cond = cond.add(C::Occupants.gte(i64::from(n)));
    }
    if let Some(n) = filter.max_occupants {
        cond = cond.add(C::Occupants.lte(i64::from(n)));
    }
    if let Some(class) = filter.vehicle_class {
        cond = cond.add(C::VehicleClass.eq(class.as_str()));
    }
    cond
}

fn capture_from_row(r: captures::Model) -> Result<Capture, DbError> {
    let malformed =
        |why: &str| DbError::Malformed { table: "captures", id: r.id.clone(), why: why.to_owned() };
    let id = Uuid::parse_str(&r.id).map_err(|_| malformed("id is not a uuid"))?;
    let sha: [u8; 32] = hex::decode(&r.image_sha256)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| malformed("image_sha256 is not 32 hex bytes"))?;
    let content_type = ImageContentType::parse(&r.image_content_type)
        .ok_or_else(|| malformed("unknown image_content_type"))?;
    let sections = sections_from_json(&r.sections_json).ok_or_else(|| malformed("sections_json"))?;
    Ok(Capture {
        meta: CaptureMeta {
            id,
            site_id: r.site_id,
            lane: u32::try_from(r.lane).unwrap_or(0),
            captured_at: r.captured_at,
            detected_at: r.detected_at,
            vehicle_class: VehicleClass::from_db(&r.vehicle_class),
            occupancy_status: OccupancyStatus::from_db(&r.occupancy_status),
            occupants: r.occupants.map(|o| u32::try_from(o).unwrap_or(0)),
            speed_kmh: r.speed_kmh.map(|v| v as f32),
            height_m: r.height_m as f32,
            width_m: r.width_m as f32,
            camera_id: r.camera_id,
            config_version: to_u64(r.config_version),
            sections,
            confidence: r.confidence.map(|v| v as f32),
            model_version: r.model_version,
            test: r.decision == Decision::Test.as_str(),
        },
        decision: Decision::from_db(&r.decision),
        agent_id: r.agent_id,
        image_key: r.image_key,
        image_sha256: sha,
        image_bytes: to_u64(r.image_bytes),
        image_content_type: content_type,
        received_at: r.received_at,
        trace_parent: None,
    })
}

fn sections_from_json(text: &str) -> Option<Vec<SectionCount>> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value
        .as_array()?
        .iter()
        .map(|s| {
            Some(SectionCount {
                section: s.get("section")?.as_str()?.to_owned(),
                occupants: u32::try_from(s.get("occupants")?.as_u64()?).ok()?,
                confidence: s.get("confidence")?.as_f64()? as f32,
            })
        })
        .collect()
}

fn violation_from_row(r: violations::Model) -> Result<Violation, DbError> {
    let malformed =
        |why: &str| DbError::Malformed { table: "violations", id: r.id.clone(), why: why.to_owned() };
    Ok(Violation {
        id: Uuid::parse_str(&r.id).map_err(|_| malformed("id is not a uuid"))?,
        capture_id: Uuid::parse_str(&r.capture_id).map_err(|_| malformed("capture_id is not a uuid"))?,
        site_id: r.site_id,
        captured_at: r.captured_at,
        state: ViolationState::from_db(&r.state),
        reviewer: r.reviewer,
        reason: r.reason,
        reviewed_at: r.reviewed_at,
        created_at: r.created_at,
    })
}

/// The `captures` row of a capture.
fn capture_row(c: &Capture) -> captures::ActiveModel {
    let m = &c.meta;
    let sections: Vec<serde_json::Value> = m
        .sections
        .iter()
        .map(|s| {
            serde_json::json!({
                "section": s.section,
                "occupants": s.occupants,
                "confidence": f32_to_f64(s.confidence),
            })
        })
        .collect();
    captures::ActiveModel {
        id: Set(m.id.to_string()),
        agent_id: Set(c.agent_id.clone()),
        site_id: Set(m.site_id.clone()),
        lane: Set(i64::from(m.lane)),
        captured_at: Set(m.captured_at),
        detected_at: Set(m.detected_at),
        vehicle_class: Set(m.vehicle_class.as_str().to_owned()),
        occupancy_status: Set(m.occupancy_status.as_str().to_owned()),
        occupants: Set(m.occupants.map(i64::from)),
        speed_kmh: Set(m.speed_kmh.map(f32_to_f64)),
        height_m: Set(f32_to_f64(m.height_m)),
        width_m: Set(f32_to_f64(m.width_m)),
        camera_id: Set(m.camera_id.clone()),
        config_version: Set(to_i64(m.config_version)),
        image_key: Set(c.image_key.clone()),
        image_sha256: Set(hex::encode(c.image_sha256)),
        image_bytes: Set(to_i64(c.image_bytes)),
        image_content_type: Set(c.image_content_type.mime().to_owned()),
        received_at: Set(c.received_at),
        decision: Set(c.decision.as_str().to_owned()),
        confidence: Set(m.confidence.map(f32_to_f64)),
        model_version: Set(m.model_version.clone()),
        sections_json: Set(serde_json::Value::Array(sections).to_string()),
    }
}

/// The pending review row of a violation candidate.
fn violation_row(c: &Capture) -> violations::ActiveModel {
    violations::ActiveModel {
        id: Set(Uuid::now_v7().to_string()),
        capture_id: Set(c.meta.id.to_string()),
        site_id: Set(c.meta.site_id.clone()),
        captured_at: Set(c.meta.captured_at),
        state: Set(ViolationState::Pending.as_str().to_owned()),
        reviewer: Set(None),
        reason: Set(None),
        reviewed_at: Set(None),
        created_at: Set(c.received_at),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::db::tests::{capture, temp_db};
    use crate::domain::AgentHello;

    #[tokio::test]
    async fn insert_is_idempotent_and_round_trips() {
        let (_dir, db) = temp_db().await;
        let c = capture(Uuid::now_v7(), Utc.timestamp_micros(1_700_000_000_000_001).unwrap());
        assert!(db.capture(c.meta.id, &Visibility::All).await.unwrap().is_none());
        assert_eq!(db.insert_capture(&c).await.unwrap(), Inserted::New);
        assert_eq!(db.insert_capture(&c).await.unwrap(), Inserted::Duplicate);
        let back = db.capture(c.meta.id, &Visibility::All).await.unwrap().unwrap();
        assert_eq!(back.meta, c.meta);
        assert_eq!(back.image_sha256, c.image_sha256);
    }

    /// A batch answers per capture, in order: new, already stored, or repeated inside the batch;
    /// only new violation candidates get a review row.
    #[tokio::test]
    async fn a_batch_inserts_each_new_capture_once() {
        let (_dir, db) = temp_db().await;
        let at = |us: i64| Utc.timestamp_micros(1_700_000_000_000_000 + us).unwrap();
        let stored = capture(Uuid::now_v7(), at(1));
        assert_eq!(db.insert_capture(&stored).await.unwrap(), Inserted::New);
        let mut candidate = capture(Uuid::now_v7(), at(2));
        candidate.decision = Decision::ViolationCandidate;
        let plain = capture(Uuid::now_v7(), at(3));
        let mut stored_again = stored.clone();
        stored_again.decision = Decision::ViolationCandidate;
        let batch = vec![candidate.clone(), stored_again, plain.clone(), candidate.clone()];
        assert_eq!(
            db.insert_captures(&batch).await.unwrap(),
            [Inserted::New, Inserted::Duplicate, Inserted::New, Inserted::Duplicate]
        );
        for c in [&stored, &candidate, &plain] {
            assert!(db.capture(c.meta.id, &Visibility::All).await.unwrap().is_some());
        }
        let violations = db.violations_page(None, None, &Visibility::All, None, 10).await.unwrap();
        let ids: Vec<Uuid> = violations.iter().map(|v| v.capture_id).collect();
        assert_eq!(ids, [candidate.meta.id], "one review row, for the new candidate only");

        // without violation candidates, the batch is one statement, with the same answers
        let fresh = capture(Uuid::now_v7(), at(4));
        let batch = vec![plain.clone(), fresh.clone(), fresh.clone()];
        assert_eq!(
            db.insert_captures(&batch).await.unwrap(),
            [Inserted::Duplicate, Inserted::New, Inserted::Duplicate]
        );
        assert_eq!(db.capture(fresh.meta.id, &Visibility::All).await.unwrap().unwrap().meta, fresh.meta);
        assert_eq!(db.violations_page(None, None, &Visibility::All, None, 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn keyset_pages_are_newest_first_without_gaps() {
        let (_dir, db) = temp_db().await;
        let base = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let mut all = Vec::new();
        for i in 0..7i64 {
            // two captures share each timestamp so the id breaks ties
            let at = base + chrono::Duration::milliseconds(i / 2 * 1500);
            let c = capture(Uuid::now_v7(), at);
            db.insert_capture(&c).await.unwrap();
            all.push(c);
        }
        all.sort_by_key(|c| std::cmp::Reverse((c.meta.captured_at, c.meta.id)));
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = db.captures_page(&CaptureFilter::default(), &Visibility::All, after, 3).await.unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().map(CaptureCursor::of);
            seen.extend(page.into_iter().map(|c| c.meta.id));
        }
        let expected: Vec<Uuid> = all.iter().map(|c| c.meta.id).collect();
        assert_eq!(seen, expected);
    }

    /// Counts per decision under the same filter and visibility as `captures_page`: they add up
    /// to the page's rows, a filter narrows them, and an agency counts only what it may see.
    #[tokio::test]
    async fn capture_counts_group_by_decision_within_filter_and_visibility() {
        let (_dir, db) = temp_db().await;
        let base = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let at = |s: i64| base + chrono::Duration::seconds(s);
        use Decision::{Compliant, Test, Unreadable, ViolationCandidate};
        let rows = [
            ("a1-km12", 1, Compliant),
            ("a1-km12", 1, Compliant),
            ("a1-km12", 1, Compliant),
            ("a1-km12", 1, ViolationCandidate),
            ("a1-km12", 1, ViolationCandidate),
            ("a1-km12", 1, Unreadable),
            ("a1-km12", 2, ViolationCandidate),
            ("a1-km12", 2, Compliant),
            ("b2-km3", 1, Compliant),
            ("b2-km3", 1, Compliant),
            ("b2-km3", 1, ViolationCandidate),
            ("a1-km12", 1, Test),
        ];
        for (i, (site, lane, decision)) in rows.into_iter().enumerate() {
            let mut c = capture(Uuid::now_v7(), at(i64::try_from(i).unwrap()));
            c.meta.site_id = site.to_owned();
            c.meta.lane = lane;
            c.decision = decision;
            db.insert_capture(&c).await.unwrap();
        }
        for site in ["a1-km12", "b2-km3"] {
            let hello = AgentHello {
                agent_id: format!("agent-{site}"),
                site_id: site.to_owned(),
                software_version: "t".into(),
                config_version: 0,
                wants_heartbeat_acks: false,
                local_config: String::new(),
            };
            db.upsert_agent(&hello, base).await.unwrap();
        }
        db.set_site_jurisdiction("a1-km12", Some("north")).await.unwrap();

        // (decision, count) pairs in a fixed order; the query's order is unspecified
        let counts = |filter: CaptureFilter, vis: Visibility| {
            let db = db.clone();
            async move {
                let mut counts = db.capture_counts(&filter, &vis).await.unwrap();
                counts.sort_by_key(|(d, _)| d.as_str());
                // the same filter and visibility select the same rows as a page
                let page = db.captures_page(&filter, &vis, None, 100).await.unwrap();
                let total: u64 = counts.iter().map(|(_, n)| n).sum();
                assert_eq!(total, page.len() as u64, "{filter:?} {vis:?}");
                for (decision, n) in &counts {
                    let listed = page.iter().filter(|c| c.decision == *decision).count();
                    assert_eq!(*n, listed as u64, "{decision:?} under {filter:?} {vis:?}");
                }
                counts
            }
        };
        let all = CaptureFilter::default;
        assert_eq!(
            counts(all(), Visibility::All).await,
            [(Compliant, 6), (Test, 1), (Unreadable, 1), (ViolationCandidate, 4)],
            "decisions without captures are left out"
        );
        let site = CaptureFilter { site_id: Some("b2-km3".into()), ..all() };
        assert_eq!(counts(site, Visibility::All).await, [(Compliant, 2), (ViolationCandidate, 1)]);
        let lane = CaptureFilter { lane: Some(2), ..all() };
        assert_eq!(counts(lane, Visibility::All).await, [(Compliant, 1), (ViolationCandidate, 1)]);
        // `from` inclusive, `to` exclusive: the captures at 3, 4 and 5 seconds
        let window = CaptureFilter { from: Some(at(3)), to: Some(at(6)), ..all() };
        assert_eq!(counts(window, Visibility::All).await, [(Unreadable, 1), (ViolationCandidate, 2)]);
        let decision = CaptureFilter { decision: Some(Compliant), ..all() };
        assert_eq!(counts(decision, Visibility::All).await, [(Compliant, 6)]);

        let north = |all_captures| Visibility::Jurisdiction { jurisdiction: "north".into(), all_captures };
        assert_eq!(
            counts(all(), north(true)).await,
            [(Compliant, 4), (Unreadable, 1), (ViolationCandidate, 3)],
            "only the jurisdiction's site, and never an operator's test capture"
        );
        assert_eq!(counts(all(), north(false)).await, [(ViolationCandidate, 3)], "only flagged captures");
        let lane = CaptureFilter { lane: Some(2), ..all() };
        assert_eq!(counts(lane, north(true)).await, [(Compliant, 1), (ViolationCandidate, 1)]);
        let elsewhere = CaptureFilter { site_id: Some("b2-km3".into()), ..all() };
        assert!(counts(elsewhere, north(true)).await.is_empty(), "another jurisdiction's site");
        let south = Visibility::Jurisdiction { jurisdiction: "south".into(), all_captures: true };
        assert!(counts(all(), south).await.is_empty());
    }
}
