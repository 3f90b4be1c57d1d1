//! Versioned site configs and the per-agent rollout state (`site_configs`,
//! `agent_config_states`): rows converted to and from domain types by hand.
//!
//! A version row is written once and never updated; a rollback is a new version. Rollout state
//! moves only forward (see [`Db::set_config_state`]), so a late or repeated message cannot undo
//! what an agent reported since.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

use super::entities::{agent_config_states, agents, site_configs};
use super::{Db, DbError, to_i64, to_u64};
use crate::domain::{AgentConfigState, EventType, RolloutState, SiteConfigVersion};

/// What a new site config version is made of; the version number is chosen on insert.
#[derive(Debug, Clone)]
pub struct NewSiteConfig<'a> {
    pub site_id: &'a str,
    pub comment: Option<&'a str>,
    pub rolled_back_from: Option<u64>,
    pub created_by: &'a str,
    pub created_at: DateTime<Utc>,
    /// A singleton's write (the LanewatchSite reconciler): stored only while this leader term
    /// is the newest ([`super::leader::check_fence`], in the same transaction).
    pub fence: Option<&'a super::leader::Fence>,
}

/// How many times an insert retries when a concurrent edit took the same version number.
const VERSION_RACE_RETRIES: usize = 3;

impl Db {
    /// Stores the site's next version (newest + 1), its text made by `text(version)` (which
    /// stamps the number into it), and a `pending` rollout row for every agent known at the site.
    pub async fn insert_site_config(
        &self,
        new: &NewSiteConfig<'_>,
        text: impl Fn(u64) -> String,
    ) -> Result<SiteConfigVersion, DbError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_insert_site_config(new, &text).await {
                Err(DbError::Db(e)) if attempt < VERSION_RACE_RETRIES && is_unique_violation(&e) => {
                    tracing::info!(site_id = new.site_id, "concurrent config edit; taking the next version");
                }
                other => return other,
            }
        }
    }

    async fn try_insert_site_config(
        &self,
        new: &NewSiteConfig<'_>,
        text: &impl Fn(u64) -> String,
    ) -> Result<SiteConfigVersion, DbError> {
        let txn = self.conn.begin().await?;
        if let Some(fence) = new.fence {
            super::leader::check_fence(&txn, fence).await?;
        }
        let newest = site_configs::Entity::find()
            .filter(site_configs::Column::SiteId.eq(new.site_id))
            .order_by_desc(site_configs::Column::Version)
            .one(&txn)
            .await?
            .map_or(0, |row| to_u64(row.version));
        let version = newest + 1;
        let stored = SiteConfigVersion {
            site_id: new.site_id.to_owned(),
            version,
            toml: text(version),
            comment: new.comment.map(str::to_owned),
            rolled_back_from: new.rolled_back_from,
            created_by: new.created_by.to_owned(),
            created_at: new.created_at,
        };
        site_configs::Entity::insert(site_configs::ActiveModel {
            site_id: Set(stored.site_id.clone()),
            version: Set(to_i64(version)),
            toml: Set(stored.toml.clone()),
            comment: Set(stored.comment.clone()),
            rolled_back_from: Set(stored.rolled_back_from.map(to_i64)),
            created_by: Set(stored.created_by.clone()),
            created_at: Set(stored.created_at),
        })
        .exec_without_returning(&txn)
        .await?;
        let agent_ids: Vec<String> = agents::Entity::find()
            .select_only()
            .column(agents::Column::Id)
            .filter(agents::Column::SiteId.eq(new.site_id))
            .into_tuple()
            .all(&txn)
            .await?;
        for agent_id in agent_ids {
            agent_config_states::Entity::insert(state_row(
                &agent_id,
                new.site_id,
                version,
                RolloutState::Pending,
                None,
                new.created_at,
            ))
            .on_conflict(
                OnConflict::columns([
                    agent_config_states::Column::AgentId,
                    agent_config_states::Column::Version,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        }
        txn.commit().await?;
        Ok(stored)
    }

    /// One version of a site's config; the newest when `version` is `None`.
    pub async fn site_config(
        &self,
        site_id: &str,
        version: Option<u64>,
    ) -> Result<Option<SiteConfigVersion>, DbError> {
        let mut query = site_configs::Entity::find().filter(site_configs::Column::SiteId.eq(site_id));
        if let Some(v) = version {
            query = query.filter(site_configs::Column::Version.eq(to_i64(v)));
        }
        let row = query.order_by_desc(site_configs::Column::Version).one(&self.conn).await?;
        Ok(row.map(site_config_from_row))
    }

    /// A site's config versions, newest first, at most `limit`.
    pub async fn site_config_history(
        &self,
        site_id: &str,
        limit: u64,
    ) -> Result<Vec<SiteConfigVersion>, DbError> {
        let rows = site_configs::Entity::find()
            .filter(site_configs::Column::SiteId.eq(site_id))
            .order_by_desc(site_configs::Column::Version)
            .limit(limit)
            .all(&self.conn)
            .await?;
        Ok(rows.into_iter().map(site_config_from_row).collect())
    }

    /// Every agent's rollout state of one version of a site's config, by agent id.
    pub async fn config_states(&self, site_id: &str, version: u64) -> Result<Vec<AgentConfigState>, DbError> {
        let rows = agent_config_states::Entity::find()
            .filter(agent_config_states::Column::SiteId.eq(site_id))
            .filter(agent_config_states::Column::Version.eq(to_i64(version)))
            .order_by_asc(agent_config_states::Column::AgentId)
            .all(&self.conn)
            .await?;
        rows.into_iter().map(state_from_row).collect()
    }

    /// One agent's rollout state of one version.
    pub async fn config_state(
        &self,
        agent_id: &str,
        version: u64,
    ) -> Result<Option<AgentConfigState>, DbError> {
        let row = agent_config_states::Entity::find_by_id((agent_id.to_owned(), to_i64(version)))
            .one(&self.conn)
            .await?;
        row.map(state_from_row).transpose()
    }

    /// Records `state` for (agent, version): creates the row, or moves an existing one only if
    /// its current state is in `from` (so a late `staged` cannot undo `applied`). Whether the
    /// row now holds `state` because of this call.
    pub async fn set_config_state(
        &self,
        new: &AgentConfigState,
        from: &[RolloutState],
    ) -> Result<bool, DbError> {
        use agent_config_states::Column as C;
        let endpoints = self.endpoints_for_ingest().await?;
        let txn = self.conn.begin().await?;
        let inserted = agent_config_states::Entity::insert(state_row(
            &new.agent_id,
            &new.site_id,
            new.version,
            new.state,
            new.error.clone(),
            new.updated_at,
        ))
        .on_conflict(OnConflict::columns([C::AgentId, C::Version]).do_nothing().to_owned())
        .exec_without_returning(&txn)
        .await?;
        let changed = inserted > 0 || {
            let updated = agent_config_states::Entity::update_many()
                .col_expr(C::State, new.state.as_str().into())
                .col_expr(C::Error, new.error.clone().into())
                .col_expr(C::UpdatedAt, new.updated_at.into())
                .filter(C::AgentId.eq(new.agent_id.as_str()))
                .filter(C::Version.eq(to_i64(new.version)))
                .filter(C::State.is_in(from.iter().map(|s| s.as_str())))
                .exec(&txn)
                .await?;
            updated.rows_affected > 0
        };
        // an agent that refused a config is pushed as `config.rejected`, with the rejection
        let mut pushed = false;
        if changed && new.state == RolloutState::Rejected {
            let data = serde_json::json!({ "config": { "agent_id": new.agent_id, "site": new.site_id,
                "version": new.version, "error": new.error, "at": new.updated_at } });
            pushed = self
                .push_fleet_event(&txn, &endpoints, EventType::ConfigRejected, &new.site_id, data)
                .await?;
        }
        txn.commit().await?;
        if pushed {
            self.wake_jobs();
        }
        Ok(changed)
    }
}

fn is_unique_violation(e: &sea_orm::DbErr) -> bool {
    matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

fn state_row(
    agent_id: &str,
    site_id: &str,
    version: u64,
    state: RolloutState,
    error: Option<String>,
    at: DateTime<Utc>,
) -> agent_config_states::ActiveModel {
    agent_config_states::ActiveModel {
        agent_id: Set(agent_id.to_owned()),
        version: Set(to_i64(version)),
        site_id: Set(site_id.to_owned()),
        state: Set(state.as_str().to_owned()),
        error: Set(error),
        updated_at: Set(at),
    }
}

fn site_config_from_row(row: site_configs::Model) -> SiteConfigVersion {
    SiteConfigVersion {
        site_id: row.site_id,
        version: to_u64(row.version),
        toml: row.toml,
        comment: row.comment,
        rolled_back_from: row.rolled_back_from.map(to_u64),
        created_by: row.created_by,
        created_at: row.created_at,
    }
}

fn state_from_row(row: agent_config_states::Model) -> Result<AgentConfigState, DbError> {
    let state = RolloutState::parse(&row.state).ok_or_else(|| DbError::Malformed {
        table: "agent_config_states",
        id: format!("{}/{}", row.agent_id, row.version),
        why: format!("unknown state {:?}", row.state),
    })?;
    Ok(AgentConfigState {
        agent_id: row.agent_id,
        site_id: row.site_id,
        version: to_u64(row.version),
        state,
        error: row.error,
        updated_at: row.updated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AgentHello;

    async fn temp_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/lanewatch.db?mode=rwc", dir.path().display());
        (dir, Db::connect(&url).await.unwrap())
    }

    fn new_config<'a>(site_id: &'a str, rolled_back_from: Option<u64>) -> NewSiteConfig<'a> {
        NewSiteConfig {
            site_id,
            comment: Some("c"),
            rolled_back_from,
            created_by: "key-1",
            created_at: Utc::now(),
            fence: None,
        }
    }

    fn state(agent_id: &str, version: u64, state: RolloutState) -> AgentConfigState {
        AgentConfigState {
            agent_id: agent_id.into(),
            site_id: "s1".into(),
            version,
            state,
            error: None,
            updated_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn versions_increase_per_site_and_start_pending_for_known_agents() {
        let (_dir, db) = temp_db().await;
        let hello = |id: &str, site: &str| AgentHello {
            agent_id: id.into(),
            site_id: site.into(),
            software_version: "t".into(),
            config_version: 0,
            wants_heartbeat_acks: false,
            local_config: String::new(),
        };
        db.upsert_agent(&hello("a1", "s1"), Utc::now()).await.unwrap();
        db.upsert_agent(&hello("b1", "s2"), Utc::now()).await.unwrap();

        let v1 = db.insert_site_config(&new_config("s1", None), |v| format!("v{v}")).await.unwrap();
        let v2 = db.insert_site_config(&new_config("s1", Some(1)), |v| format!("v{v}")).await.unwrap();
        let other = db.insert_site_config(&new_config("s2", None), |v| format!("v{v}")).await.unwrap();
        assert_eq!((v1.version, v2.version, other.version), (1, 2, 1));
        assert_eq!((v2.toml.as_str(), v2.rolled_back_from), ("v2", Some(1)));

        assert_eq!(db.site_config("s1", None).await.unwrap(), Some(v2.clone()));
        assert_eq!(db.site_config("s1", Some(1)).await.unwrap(), Some(v1.clone()));
        assert_eq!(db.site_config("s3", None).await.unwrap(), None);
        let history: Vec<u64> =
            db.site_config_history("s1", 10).await.unwrap().iter().map(|c| c.version).collect();
        assert_eq!(history, vec![2, 1], "newest first");

        let states = db.config_states("s1", 2).await.unwrap();
        assert_eq!(states.len(), 1, "only the site's agents: {states:?}");
        assert_eq!((states[0].agent_id.as_str(), states[0].state), ("a1", RolloutState::Pending));
    }

    #[tokio::test]
    async fn rollout_state_moves_only_from_the_allowed_states() {
        use RolloutState::*;
        let (_dir, db) = temp_db().await;
        assert!(db.set_config_state(&state("a1", 3, Staged), &[Pending]).await.unwrap(), "created");
        assert!(db.set_config_state(&state("a1", 3, Applied), &[Pending, Staged]).await.unwrap());
        assert!(
            !db.set_config_state(&state("a1", 3, Staged), &[Pending]).await.unwrap(),
            "a late staged does not undo applied"
        );
        let mut rejected = state("a1", 4, Rejected);
        rejected.error = Some("cameras[0].source.path: file x does not exist".into());
        db.set_config_state(&rejected, &[Pending, Staged]).await.unwrap();
        assert_eq!(db.config_state("a1", 3).await.unwrap().map(|s| s.state), Some(Applied));
        assert_eq!(db.config_state("a1", 4).await.unwrap().and_then(|s| s.error), rejected.error);
        assert_eq!(db.config_state("a1", 5).await.unwrap(), None);
    }
}
