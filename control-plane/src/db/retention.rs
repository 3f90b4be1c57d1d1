//! Legal retention's rows: which captures are past their retention (per value class and
//! jurisdiction), deleting one with its deletion record in one transaction, and the records'
//! keyset reads under the caller's `Visibility`.
//!
//! Classes: a capture's class is its decision (`test`, `unknown` and `unreadable` count as
//! statistics); a violation candidate whose violation was confirmed is a `confirmed_violation`;
//! one whose violation is pending review is in no class and is never selected. The selection
//! walks the `captures (decision, captured_at, id)` index: one bounded query per jurisdiction
//! group × class.

use chrono::{DateTime, TimeZone, Utc};
use sea_orm::sea_query::Query;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
    TransactionTrait,
};
use uuid::Uuid;

use super::entities::{captures, sites, violations};
use super::{Db, DbError};
use crate::config::RetentionConfig;
use crate::domain::{CaptureDeletion, Visibility};

/// A capture past its retention, as the sweep deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueCapture {
    pub capture_id: Uuid,
    pub site_id: String,
    pub jurisdiction: Option<String>,
    pub decision: String,
    pub value_class: &'static str,
    pub captured_at: DateTime<Utc>,
    pub image_key: String,
    pub retention_days: u32,
}

/// The retention classes, their days picked from a jurisdiction's, and the rows they hold.
const CLASSES: [&str; 4] = ["statistics", "compliant", "violation_candidate", "confirmed_violation"];

fn class_condition(class: &str) -> Condition {
    use captures::Column as C;
    let violations_in = |states: &[&str]| {
        Query::select()
            .column(violations::Column::CaptureId)
            .from(violations::Entity)
            .and_where(violations::Column::State.is_in(states.iter().copied()))
            .to_owned()
    };
    match class {
        "statistics" => Condition::all().add(C::Decision.is_in(["unknown", "unreadable", "test"])),
        "compliant" => Condition::all().add(C::Decision.eq("compliant")),
        // flagged, and its violation (if any) rejected: no evidence is held
        "violation_candidate" => Condition::all()
            .add(C::Decision.eq("violation_candidate"))
            .add(C::Id.not_in_subquery(violations_in(&["pending", "confirmed"]))),
        _ => Condition::all()
            .add(C::Decision.eq("violation_candidate"))
            .add(C::Id.in_subquery(violations_in(&["confirmed"]))),
    }
}

impl Db {
    /// Up to `limit` captures past their retention at `now`, oldest first within each group.
    pub async fn captures_due_for_retention(
        &self,
        retention: &RetentionConfig,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<DueCapture>, DbError> {
        use captures::Column as C;
        let configured: Vec<String> = retention.jurisdictions.keys().cloned().collect();
        let mut groups: Vec<Option<String>> = configured.iter().cloned().map(Some).collect();
        groups.push(None);
        let mut due = Vec::new();
        // the jurisdiction of each site of the default group, read once per call
        let mut sites_seen: std::collections::HashMap<String, Option<String>> = Default::default();
        for group in groups {
            let sites_of = |cond: Condition| {
                Query::select().column(sites::Column::Id).from(sites::Entity).cond_where(cond).to_owned()
            };
            let site_cond =
                match &group {
                    Some(j) => Condition::all().add(C::SiteId.in_subquery(sites_of(
                        Condition::all().add(sites::Column::Jurisdiction.eq(j.as_str())),
                    ))),
                    None if configured.is_empty() => Condition::all(),
                    None => Condition::all().add(C::SiteId.not_in_subquery(sites_of(
                        Condition::all().add(sites::Column::Jurisdiction.is_in(configured.clone())),
                    ))),
                };
            let days = retention.days(group.as_deref());
            for class in CLASSES {
                let keep = match class {
                    "statistics" => days.statistics,
                    "compliant" => days.compliant,
                    "violation_candidate" => days.violation_candidate,
                    _ => days.confirmed_violation,
                };
                let left = limit.saturating_sub(due.len() as u64);
                if left == 0 {
                    return Ok(due);
                }
                let cutoff = now - chrono::Duration::days(i64::from(keep));
                let rows = captures::Entity::find()
                    .filter(site_cond.clone())
                    .filter(class_condition(class))
                    .filter(C::CapturedAt.lt(cutoff))
                    .order_by_asc(C::CapturedAt)
                    .limit(left)
                    .all(&self.conn)
                    .await?;
                for r in rows {
                    let capture_id = Uuid::parse_str(&r.id).map_err(|_| DbError::Malformed {
                        table: "captures",
                        id: r.id.clone(),
                        why: "id is not a uuid".into(),
                    })?;
                    due.push(DueCapture {
                        capture_id,
                        jurisdiction: match &group {
                            Some(j) => Some(j.clone()),
                            None => match sites_seen.get(&r.site_id) {
                                Some(j) => j.clone(),
                                None => {
                                    let j = self.site_jurisdiction(&r.site_id).await?;
                                    sites_seen.insert(r.site_id.clone(), j.clone());
                                    j
                                }
                            },
                        },
                        site_id: r.site_id,
                        decision: r.decision,
                        value_class: class,
                        captured_at: r.captured_at,
                        image_key: r.image_key,
                        retention_days: keep,
                    });
                }
            }
        }
        Ok(due)
    }

    async fn site_jurisdiction(&self, site_id: &str) -> Result<Option<String>, DbError> {
        Ok(sites::Entity::find_by_id(site_id.to_owned()).one(&self.conn).await?.and_then(|s| s.jurisdiction))
    }

    /// Deletes a due capture's row (and its settled violation) and writes its deletion record,
    /// in one transaction; false when the row was already gone. The image is deleted before
    /// (see the retention worker), so a record never names an image that is still stored.
    pub async fn delete_capture_for_retention(&self, d: &CaptureDeletion) -> Result<bool, DbError> {
        let txn = self.conn.begin().await?;
        let id = d.capture_id.to_string();
        violations::Entity::delete_many()
            .filter(violations::Column::CaptureId.eq(id.clone()))
            .filter(violations::Column::State.ne("pending"))
            .exec(&txn)
            .await?;
        let gone = captures::Entity::delete_many().filter(captures::Column::Id.eq(id)).exec(&txn).await?;
        if gone.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(false);
        }
        let sql = "INSERT INTO capture_deletions (id, capture_id, site_id, jurisdiction, decision, value_class, \
                   captured_at_ms, deleted_at_ms, retention_days, reason, image_key) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
        txn.execute(Statement::from_sql_and_values(
            txn.get_database_backend(),
            sql,
            [
                d.id.to_string().into(),
                d.capture_id.to_string().into(),
                d.site_id.clone().into(),
                d.jurisdiction.clone().into(),
                d.decision.clone().into(),
                d.value_class.clone().into(),
                d.captured_at.timestamp_millis().into(),
                d.deleted_at.timestamp_millis().into(),
                i32::try_from(d.retention_days).unwrap_or(i32::MAX).into(),
                d.reason.clone().into(),
                d.image_key.clone().into(),
            ],
        ))
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Deletion records the caller may see, newest first, strictly before `before` (a record id);
    /// an agency sees its jurisdiction's sites only.
    pub async fn capture_deletions(
        &self,
        vis: &Visibility,
        site: Option<&str>,
        before: Option<Uuid>,
        first: u64,
    ) -> Result<Vec<CaptureDeletion>, DbError> {
        let mut clause = Vec::new();
        let mut values: Vec<sea_orm::Value> = Vec::new();
        if let Visibility::Jurisdiction { jurisdiction, .. } = vis {
            values.push(jurisdiction.clone().into());
            clause.push(format!("jurisdiction = ${}", values.len()));
        }
        if let Some(site) = site {
            values.push(site.to_owned().into());
            clause.push(format!("site_id = ${}", values.len()));
        }
        if let Some(before) = before {
            values.push(before.to_string().into());
            clause.push(format!("id < ${}", values.len()));
        }
        values.push(i64::try_from(first).unwrap_or(i64::MAX).into());
        let filter =
            if clause.is_empty() { String::new() } else { format!("WHERE {}", clause.join(" AND ")) };
        let sql = format!(
            "SELECT id, capture_id, site_id, jurisdiction, decision, value_class, captured_at_ms, deleted_at_ms, \
             retention_days, reason, image_key FROM capture_deletions {filter} ORDER BY id DESC LIMIT ${}",
            values.len()
        );
        let rows = self
            .conn
            .query_all(Statement::from_sql_and_values(self.conn.get_database_backend(), sql, values))
            .await?;
        let at = |ms: i64| Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("", "id")?;
                let uuid = |s: &str| {
                    Uuid::parse_str(s).map_err(|_| DbError::Malformed {
                        table: "capture_deletions",
                        id: id.clone(),
                        why: format!("{s:?} is not a uuid"),
                    })
                };
                Ok(CaptureDeletion {
                    id: uuid(&id)?,
                    capture_id: uuid(&r.try_get::<String>("", "capture_id")?)?,
                    site_id: r.try_get("", "site_id")?,
                    jurisdiction: r.try_get("", "jurisdiction")?,
                    decision: r.try_get("", "decision")?,
                    value_class: r.try_get("", "value_class")?,
                    captured_at: at(r.try_get("", "captured_at_ms")?),
                    deleted_at: at(r.try_get("", "deleted_at_ms")?),
                    retention_days: u32::try_from(r.try_get::<i32>("", "retention_days")?).unwrap_or(0),
                    reason: r.try_get("", "reason")?,
                    image_key: r.try_get("", "image_key")?,
                })
            })
            .collect()
    }
}
