//! Leader terms and CR-managed sites (`leader_terms`, `site_managers`).
//!
//! A replica that gains a leader lock starts a new term with [`Db::begin_leader_term`], which
//! increments the lock's epoch; the returned [`Fence`] is the fencing token. A singleton write
//! checks its fence in the same transaction ([`check_fence`]: a conditional UPDATE of the
//! lock's row that must hit exactly one row), so a deposed leader's late write fails with
//! [`DbError::Fenced`] once another replica has started a newer term. On PostgreSQL that UPDATE
//! also locks the row until the transaction ends, so a new term waits for a write in flight.
//!
//! A site managed by a LanewatchSite custom resource has a `site_managers` row naming it;
//! GraphQL edits of such a site are refused (one source of truth per site).

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, Statement, TransactionTrait, Value};

use super::{Db, DbError};
use crate::domain::HovPolicy;

/// The fencing token of one leader term: the lock's name and the epoch this term started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lock: String,
    pub epoch: i64,
}

/// The custom resource that manages a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteManager {
    pub site_id: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for SiteManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LanewatchSite {}/{}", self.namespace, self.name)
    }
}

/// What a LanewatchSite says about its site besides the agent config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedSite<'a> {
    pub manager: &'a SiteManager,
    pub jurisdiction: Option<&'a str>,
    /// (lane, policy); lanes not listed keep what they have.
    pub lanes: &'a [(u32, HovPolicy)],
}

/// Fails with [`DbError::Fenced`] unless `fence` is the newest term of its lock.
pub async fn check_fence(txn: &DatabaseTransaction, fence: &Fence) -> Result<(), DbError> {
    let done = txn
        .execute(Statement::from_sql_and_values(
            txn.get_database_backend(),
            "UPDATE leader_terms SET epoch = epoch WHERE lock_name = $1 AND epoch = $2",
            [fence.lock.clone().into(), fence.epoch.into()],
        ))
        .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(DbError::Fenced { lock: fence.lock.clone(), epoch: fence.epoch })
    }
}

impl Db {
    /// Starts a new term of `lock` held by `holder`: the epoch goes up by one (from 1 for a
    /// lock never held) and is returned as the term's fence.
    pub async fn begin_leader_term(
        &self,
        lock: &str,
        holder: &str,
        now: DateTime<Utc>,
    ) -> Result<Fence, DbError> {
        let sql = "INSERT INTO leader_terms (lock_name, epoch, holder, started_at_ms) VALUES ($1, 1, $2, $3)
            ON CONFLICT (lock_name) DO UPDATE SET epoch = leader_terms.epoch + 1, holder = $2, started_at_ms = $3
            RETURNING epoch";
        let values: Vec<Value> = vec![lock.into(), holder.into(), now.timestamp_millis().into()];
        let row = self
            .conn
            .query_one(Statement::from_sql_and_values(self.conn.get_database_backend(), sql, values))
            .await?
            .ok_or_else(|| DbError::Malformed {
                table: "leader_terms",
                id: lock.to_owned(),
                why: "the upsert returned no epoch".to_owned(),
            })?;
        Ok(Fence { lock: lock.to_owned(), epoch: row.try_get::<i64>("", "epoch")? })
    }

    /// The custom resource managing `site_id`, if one does.
    pub async fn site_manager(&self, site_id: &str) -> Result<Option<SiteManager>, DbError> {
        let rows = self
            .managers(
                "SELECT site_id, namespace, name FROM site_managers WHERE site_id = $1",
                vec![site_id.into()],
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    /// Every site managed from `namespace`.
    pub async fn site_managers(&self, namespace: &str) -> Result<Vec<SiteManager>, DbError> {
        self.managers(
            "SELECT site_id, namespace, name FROM site_managers WHERE namespace = $1 ORDER BY site_id",
            vec![namespace.into()],
        )
        .await
    }

    async fn managers(&self, sql: &str, values: Vec<Value>) -> Result<Vec<SiteManager>, DbError> {
        let rows = self
            .conn
            .query_all(Statement::from_sql_and_values(self.conn.get_database_backend(), sql, values))
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(SiteManager {
                    site_id: r.try_get("", "site_id")?,
                    namespace: r.try_get("", "namespace")?,
                    name: r.try_get("", "name")?,
                })
            })
            .collect()
    }

    /// Under `fence`: makes `site.manager` the site's manager (creating the site if no agent
    /// named it yet) and sets its jurisdiction and lane policies. Another resource's claim is
    /// left alone and returned as `Err(Ok(other))`.
    pub async fn claim_managed_site(
        &self,
        fence: &Fence,
        site: &ManagedSite<'_>,
        now: DateTime<Utc>,
    ) -> Result<Result<(), SiteManager>, DbError> {
        let m = site.manager;
        let txn = self.conn.begin().await?;
        check_fence(&txn, fence).await?;
        let backend = txn.get_database_backend();
        let exec =
            |sql: &'static str, values: Vec<Value>| Statement::from_sql_and_values(backend, sql, values);
        txn.execute(exec(
            "INSERT INTO site_managers (site_id, namespace, name, claimed_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (site_id) DO NOTHING",
            vec![
                m.site_id.clone().into(),
                m.namespace.clone().into(),
                m.name.clone().into(),
                now.timestamp_millis().into(),
            ],
        ))
        .await?;
        let holder = txn
            .query_one(exec(
                "SELECT namespace, name FROM site_managers WHERE site_id = $1",
                vec![m.site_id.clone().into()],
            ))
            .await?
            .map(|r| {
                Ok::<_, DbError>((r.try_get::<String>("", "namespace")?, r.try_get::<String>("", "name")?))
            })
            .transpose()?;
        if let Some((namespace, name)) = holder
            && (namespace != m.namespace || name != m.name)
        {
            return Ok(Err(SiteManager { site_id: m.site_id.clone(), namespace, name }));
        }
        txn.execute(exec(
            "INSERT INTO sites (id, name, jurisdiction, created_at) VALUES ($1, $1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET jurisdiction = $2",
            vec![m.site_id.clone().into(), site.jurisdiction.map(str::to_owned).into(), now.into()],
        ))
        .await?;
        for (lane, policy) in site.lanes {
            let windows = serde_json::to_string(&policy.windows).unwrap_or_else(|_| "[]".to_owned());
            txn.execute(exec(
                "INSERT INTO lanes (site_id, lane_index, min_occupants, windows_json) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (site_id, lane_index) DO UPDATE SET min_occupants = $3, windows_json = $4",
                vec![
                    m.site_id.clone().into(),
                    i64::from(*lane).into(),
                    i64::from(policy.min_occupants).into(),
                    windows.into(),
                ],
            ))
            .await?;
        }
        txn.commit().await?;
        Ok(Ok(()))
    }

    /// Under `fence`: drops `manager`'s claim on its site (the resource is gone); the site and
    /// its configs stay and become editable through GraphQL again.
    pub async fn release_managed_site(&self, fence: &Fence, manager: &SiteManager) -> Result<bool, DbError> {
        let txn = self.conn.begin().await?;
        check_fence(&txn, fence).await?;
        let done = txn
            .execute(Statement::from_sql_and_values(
                txn.get_database_backend(),
                "DELETE FROM site_managers WHERE site_id = $1 AND namespace = $2 AND name = $3",
                [
                    manager.site_id.clone().into(),
                    manager.namespace.clone().into(),
                    manager.name.clone().into(),
                ],
            ))
            .await?;
        txn.commit().await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests::temp_db;
    use crate::domain::TimeWindow;

    #[tokio::test]
    async fn a_new_term_fences_off_the_previous_one() {
        let (_dir, db) = temp_db().await;
        let now = Utc::now();
        let first = db.begin_leader_term("singletons", "a", now).await.unwrap();
        assert_eq!(first.epoch, 1);
        let manager = SiteManager { site_id: "s1".into(), namespace: "lw".into(), name: "north".into() };
        let site = ManagedSite { manager: &manager, jurisdiction: Some("CA"), lanes: &[] };
        assert_eq!(db.claim_managed_site(&first, &site, now).await.unwrap(), Ok(()));
        let second = db.begin_leader_term("singletons", "b", now).await.unwrap();
        assert_eq!(second.epoch, 2);
        let late = db.claim_managed_site(&first, &site, now).await.unwrap_err();
        assert!(matches!(late, DbError::Fenced { epoch: 1, .. }), "{late}");
        assert!(late.to_string().contains("epoch 1"), "{late}");
        let gone = db.release_managed_site(&first, &manager).await.unwrap_err();
        assert!(matches!(gone, DbError::Fenced { .. }));
        assert_eq!(db.site_manager("s1").await.unwrap(), Some(manager));
    }

    #[tokio::test]
    async fn a_site_has_one_manager_and_gets_its_jurisdiction_and_lanes() {
        let (_dir, db) = temp_db().await;
        let now = Utc::now();
        let fence = db.begin_leader_term("singletons", "a", now).await.unwrap();
        let north = SiteManager { site_id: "s1".into(), namespace: "lw".into(), name: "north".into() };
        let policy =
            HovPolicy { min_occupants: 2, windows: vec![TimeWindow { start_minute: 420, end_minute: 600 }] };
        let lanes = [(0, policy.clone())];
        let site = ManagedSite { manager: &north, jurisdiction: Some("CA"), lanes: &lanes };
        assert_eq!(db.claim_managed_site(&fence, &site, now).await.unwrap(), Ok(()));
        let stored = db.site("s1", &crate::domain::Visibility::All).await.unwrap().unwrap();
        assert_eq!(stored.jurisdiction.as_deref(), Some("CA"));
        assert_eq!(db.hov_policy("s1", 0).await.unwrap(), Some(policy));
        let south = SiteManager { name: "south".into(), ..north.clone() };
        let other = ManagedSite { manager: &south, jurisdiction: None, lanes: &[] };
        assert_eq!(db.claim_managed_site(&fence, &other, now).await.unwrap(), Err(north.clone()));
        assert_eq!(db.site_managers("lw").await.unwrap(), vec![north.clone()]);
        assert!(db.release_managed_site(&fence, &north).await.unwrap());
        assert_eq!(db.site_manager("s1").await.unwrap(), None);
        assert_eq!(db.claim_managed_site(&fence, &other, now).await.unwrap(), Ok(()));
    }
}
