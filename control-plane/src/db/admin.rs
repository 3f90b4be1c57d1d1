//! Administration (`lanes`, `agencies`, `api_keys`, `audit_log`): lane HOV policies with the
//! short-lived cache ingest reads them through, agencies, API keys (hashed secrets only) and
//! the audit log; rows converted by hand.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::entities::{agencies, api_keys, audit_log, lanes};
use super::{Db, DbError, POLICY_CACHE_MAX, POLICY_CACHE_TTL, PolicyCache, after_cursor};
use crate::domain::{Agency, ApiKey, AuditEntry, CaptureCursor, HovPolicy, Role, TimeWindow};

impl Db {
    /// The HOV policy of one lane, when one is set.
    pub async fn hov_policy(&self, site_id: &str, lane: u32) -> Result<Option<HovPolicy>, DbError> {
        let row = lanes::Entity::find_by_id((site_id.to_owned(), i64::from(lane))).one(&self.conn).await?;
        row.map(|r| {
            let windows: Vec<TimeWindow> =
                serde_json::from_str(&r.windows_json).map_err(|e| DbError::Malformed {
                    table: "lanes",
                    id: format!("{}/{}", r.site_id, r.lane_index),
                    why: format!("windows_json: {e}"),
                })?;
            Ok(HovPolicy { min_occupants: u32::try_from(r.min_occupants).unwrap_or(u32::MAX), windows })
        })
        .transpose()
    }

    /// [`Db::hov_policy`] for ingest, which reads it for every capture: served from memory when
    /// read less than [`POLICY_CACHE_TTL`] ago (a change through this process drops the entry).
    pub async fn hov_policy_for_ingest(
        &self,
        site_id: &str,
        lane: u32,
    ) -> Result<Option<HovPolicy>, DbError> {
        let key = (site_id.to_owned(), lane);
        if let Some((read_at, policy)) = self.policy_cache().get(&key)
            && read_at.elapsed() < POLICY_CACHE_TTL
        {
            return Ok(policy.clone());
        }
        let read_at = std::time::Instant::now();
        let policy = self.hov_policy(site_id, lane).await?;
        let mut cache = self.policy_cache();
        if cache.len() >= POLICY_CACHE_MAX {
            cache.clear();
        }
        // a newer entry (a write through this process while this read ran) is kept
        if cache.get(&key).is_none_or(|(at, _)| *at < read_at) {
            cache.insert(key, (read_at, policy.clone()));
        }
        Ok(policy)
    }

    fn policy_cache(&self) -> std::sync::MutexGuard<'_, PolicyCache> {
        self.policies.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub async fn set_hov_policy(&self, site_id: &str, lane: u32, policy: &HovPolicy) -> Result<(), DbError> {
        let windows = serde_json::to_string(&policy.windows).unwrap_or_else(|_| "[]".to_owned());
        let row = lanes::ActiveModel {
            site_id: Set(site_id.to_owned()),
            lane_index: Set(i64::from(lane)),
            min_occupants: Set(i64::from(policy.min_occupants)),
            windows_json: Set(windows),
        };
        lanes::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([lanes::Column::SiteId, lanes::Column::LaneIndex])
                    .update_columns([lanes::Column::MinOccupants, lanes::Column::WindowsJson])
                    .to_owned(),
            )
            .exec_without_returning(&self.conn)
            .await?;
        self.policy_cache()
            .insert((site_id.to_owned(), lane), (std::time::Instant::now(), Some(policy.clone())));
        Ok(())
    }

    pub async fn insert_agency(&self, agency: &Agency, now: DateTime<Utc>) -> Result<(), DbError> {
        let row = agencies::ActiveModel {
            id: Set(agency.id.clone()),
            name: Set(agency.name.clone()),
            jurisdiction: Set(agency.jurisdiction.clone()),
            created_at: Set(now),
        };
        agencies::Entity::insert(row).exec_without_returning(&self.conn).await?;
        Ok(())
    }

    pub async fn agencies(&self) -> Result<Vec<Agency>, DbError> {
        let rows = agencies::Entity::find().order_by_asc(agencies::Column::Id).all(&self.conn).await?;
        Ok(rows.into_iter().map(agency_from_row).collect())
    }

    pub async fn agency(&self, id: &str) -> Result<Option<Agency>, DbError> {
        Ok(agencies::Entity::find_by_id(id.to_owned()).one(&self.conn).await?.map(agency_from_row))
    }

    /// Stores a key; only the secret's hash is in `key`.
    pub async fn insert_api_key(&self, key: &ApiKey) -> Result<(), DbError> {
        let row = api_keys::ActiveModel {
            id: Set(key.id.clone()),
            name: Set(key.name.clone()),
            role: Set(key.role.as_str().to_owned()),
            agency_id: Set(key.agency_id.clone()),
            all_captures: Set(key.all_captures),
            secret_sha256: Set(key.secret_sha256.clone()),
            created_at: Set(key.created_at),
            revoked_at: Set(key.revoked_at),
        };
        api_keys::Entity::insert(row).exec_without_returning(&self.conn).await?;
        Ok(())
    }

    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, DbError> {
        api_keys::Entity::find_by_id(id.to_owned()).one(&self.conn).await?.map(api_key_from_row).transpose()
    }

    pub async fn api_keys(&self) -> Result<Vec<ApiKey>, DbError> {
        let rows = api_keys::Entity::find().order_by_asc(api_keys::Column::CreatedAt).all(&self.conn).await?;
        rows.into_iter().map(api_key_from_row).collect()
    }

    /// Revokes a key (idempotent: the first revocation time stays); `None` when there is no such key.
    pub async fn revoke_api_key(&self, id: &str, now: DateTime<Utc>) -> Result<Option<ApiKey>, DbError> {
        api_keys::Entity::update_many()
            .col_expr(api_keys::Column::RevokedAt, Some(now).into())
            .filter(api_keys::Column::Id.eq(id))
            .filter(api_keys::Column::RevokedAt.is_null())
            .exec(&self.conn)
            .await?;
        self.api_key(id).await
    }

    pub async fn insert_audit(&self, e: &AuditEntry) -> Result<(), DbError> {
        let row = audit_log::ActiveModel {
            id: Set(e.id.to_string()),
            at: Set(e.at),
            actor: Set(e.actor.clone()),
            action: Set(e.action.clone()),
            target: Set(e.target.clone()),
            result: Set(if e.ok { "ok" } else { "error" }.to_owned()),
            message: Set(e.message.clone()),
        };
        audit_log::Entity::insert(row).exec_without_returning(&self.conn).await?;
        Ok(())
    }

    /// Audit rows, newest first, strictly after `after` when given.
    pub async fn audit_page(
        &self,
        after: Option<CaptureCursor>,
        limit: u64,
    ) -> Result<Vec<AuditEntry>, DbError> {
        use audit_log::Column as A;
        let mut query = audit_log::Entity::find();
        if let Some(c) = after {
            query = query.filter(after_cursor(A::At, A::Id, c));
        }
        let rows = query.order_by_desc(A::At).order_by_desc(A::Id).limit(limit).all(&self.conn).await?;
        rows.into_iter().map(audit_from_row).collect()
    }
}

fn agency_from_row(r: agencies::Model) -> Agency {
    Agency { id: r.id, name: r.name, jurisdiction: r.jurisdiction }
}

fn api_key_from_row(r: api_keys::Model) -> Result<ApiKey, DbError> {
    let role = Role::parse(&r.role).ok_or_else(|| DbError::Malformed {
        table: "api_keys",
        id: r.id.clone(),
        why: format!("unknown role {:?}", r.role),
    })?;
    Ok(ApiKey {
        id: r.id,
        name: r.name,
        role,
        agency_id: r.agency_id,
        all_captures: r.all_captures,
        secret_sha256: r.secret_sha256,
        created_at: r.created_at,
        revoked_at: r.revoked_at,
    })
}

fn audit_from_row(r: audit_log::Model) -> Result<AuditEntry, DbError> {
    Ok(AuditEntry {
        id: Uuid::parse_str(&r.id).map_err(|_| DbError::Malformed {
            table: "audit_log",
            id: r.id.clone(),
            why: "id is not a uuid".to_owned(),
        })?,
        at: r.at,
        actor: r.actor,
        action: r.action,
        target: r.target,
        ok: r.result == "ok",
        message: r.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests::temp_db;

    /// Ingest's cached lane policy follows a change made through this process at once.
    #[tokio::test]
    async fn ingest_sees_a_policy_change_made_here_at_once() {
        let (_dir, db) = temp_db().await;
        assert_eq!(db.hov_policy_for_ingest("s1", 0).await.unwrap(), None);
        let hov2 = HovPolicy { min_occupants: 2, windows: vec![] };
        db.set_hov_policy("s1", 0, &hov2).await.unwrap();
        assert_eq!(db.hov_policy_for_ingest("s1", 0).await.unwrap(), Some(hov2));
        let hov3 = HovPolicy { min_occupants: 3, windows: vec![] };
        db.set_hov_policy("s1", 0, &hov3).await.unwrap();
        assert_eq!(db.hov_policy_for_ingest("s1", 0).await.unwrap(), Some(hov3.clone()));
        // another replica's change (written behind this cache's back) shows within the TTL
        let hov4 = HovPolicy { min_occupants: 4, windows: vec![] };
        let other = Db { policies: Default::default(), ..db.clone() };
        other.set_hov_policy("s1", 0, &hov4).await.unwrap();
        assert_eq!(db.hov_policy_for_ingest("s1", 0).await.unwrap(), Some(hov3), "cached");
        tokio::time::sleep(POLICY_CACHE_TTL).await;
        assert_eq!(db.hov_policy_for_ingest("s1", 0).await.unwrap(), Some(hov4));
    }
}
