//! The fleet (`agents`, `revoked_agents`, `cameras`, `sites`): agents as their sessions and
//! heartbeats report them, their revocation, the cameras ingest has seen, and sites with their
//! jurisdiction; rows converted by hand.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait};

use super::entities::{agents, cameras, revoked_agents, sites};
use super::{Db, DbError, site_scope, to_i64, to_u64};
use crate::domain::{
    Agent, AgentHello, AgentPulse, AgentRevocation, Capture, EventType, Health, Site, Visibility,
};

impl Db {
    /// At start-up no session is live, so no agent is online.
    pub async fn mark_all_offline(&self) -> Result<(), DbError> {
        agents::Entity::update_many().col_expr(agents::Column::Online, false.into()).exec(&self.conn).await?;
        Ok(())
    }

    pub async fn upsert_agent(&self, hello: &AgentHello, now: DateTime<Utc>) -> Result<(), DbError> {
        let row = agents::ActiveModel {
            id: Set(hello.agent_id.clone()),
            site_id: Set(hello.site_id.clone()),
            software_version: Set(hello.software_version.clone()),
            config_version: Set(to_i64(hello.config_version)),
            online: Set(true),
            health: Set(Health::Unknown.as_str().to_owned()),
            buffered_captures: Set(0),
            last_seen: Set(now),
            first_seen: Set(now),
        };
        let endpoints = self.endpoints_for_ingest().await?;
        let txn = self.conn.begin().await?;
        agents::Entity::insert(row)
            .on_conflict(
                OnConflict::column(agents::Column::Id)
                    .update_columns([
                        agents::Column::SiteId,
                        agents::Column::SoftwareVersion,
                        agents::Column::ConfigVersion,
                        agents::Column::Online,
                        agents::Column::LastSeen,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        // a site is created the first time an agent names it; an admin sets its jurisdiction
        let site = sites::ActiveModel {
            id: Set(hello.site_id.clone()),
            name: Set(hello.site_id.clone()),
            jurisdiction: Set(None),
            created_at: Set(now),
        };
        sites::Entity::insert(site)
            .on_conflict(OnConflict::column(sites::Column::Id).do_nothing().to_owned())
            .exec_without_returning(&txn)
            .await?;
        let data = serde_json::json!({ "agent": { "id": hello.agent_id, "site": hello.site_id,
            "software_version": hello.software_version, "config_version": hello.config_version, "at": now } });
        let pushed =
            self.push_fleet_event(&txn, &endpoints, EventType::AgentOnline, &hello.site_id, data).await?;
        txn.commit().await?;
        if pushed {
            self.wake_jobs();
        }
        Ok(())
    }

    pub async fn record_heartbeat(
        &self,
        agent_id: &str,
        pulse: AgentPulse,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        agents::Entity::update_many()
            .col_expr(agents::Column::LastSeen, now.into())
            .col_expr(agents::Column::Health, pulse.health.as_str().into())
            .col_expr(agents::Column::BufferedCaptures, to_i64(pulse.buffered_captures).into())
            .col_expr(agents::Column::Online, true.into())
            .filter(agents::Column::Id.eq(agent_id))
            .exec(&self.conn)
            .await?;
        Ok(())
    }

    pub async fn touch_agent(&self, agent_id: &str, now: DateTime<Utc>) -> Result<(), DbError> {
        agents::Entity::update_many()
            .col_expr(agents::Column::LastSeen, now.into())
            .filter(agents::Column::Id.eq(agent_id))
            .exec(&self.conn)
            .await?;
        Ok(())
    }

    /// Marks an online agent offline, with its `agent.offline` push jobs in the same transaction.
    pub async fn mark_offline(&self, agent_id: &str) -> Result<(), DbError> {
        let endpoints = self.endpoints_for_ingest().await?;
        let txn = self.conn.begin().await?;
        let changed = agents::Entity::update_many()
            .col_expr(agents::Column::Online, false.into())
            .filter(agents::Column::Id.eq(agent_id))
            .filter(agents::Column::Online.eq(true))
            .exec(&txn)
            .await?;
        let mut pushed = false;
        if changed.rows_affected == 1
            && let Some(agent) = agents::Entity::find_by_id(agent_id.to_owned()).one(&txn).await?
        {
            let data = serde_json::json!({ "agent": { "id": agent.id, "site": agent.site_id,
                "last_seen": agent.last_seen, "at": Utc::now() } });
            pushed = self
                .push_fleet_event(&txn, &endpoints, EventType::AgentOffline, &agent.site_id, data)
                .await?;
        }
        txn.commit().await?;
        if pushed {
            self.wake_jobs();
        }
        Ok(())
    }

    pub async fn agents(&self) -> Result<Vec<Agent>, DbError> {
        let rows = agents::Entity::find().order_by_asc(agents::Column::Id).all(&self.conn).await?;
        Ok(rows.into_iter().map(agent_from_row).collect())
    }

    pub async fn agent(&self, id: &str) -> Result<Option<Agent>, DbError> {
        Ok(agents::Entity::find_by_id(id.to_owned()).one(&self.conn).await?.map(agent_from_row))
    }

    /// Revokes an agent; revoking it again keeps the first reason, actor and time.
    pub async fn revoke_agent(&self, r: &AgentRevocation) -> Result<AgentRevocation, DbError> {
        let row = revoked_agents::ActiveModel {
            agent_id: Set(r.agent_id.clone()),
            reason: Set(r.reason.clone()),
            by: Set(r.by.clone()),
            created_at: Set(r.created_at),
        };
        revoked_agents::Entity::insert(row)
            .on_conflict(OnConflict::column(revoked_agents::Column::AgentId).do_nothing().to_owned())
            .exec_without_returning(&self.conn)
            .await?;
        Ok(self.revocation(&r.agent_id).await?.unwrap_or_else(|| r.clone()))
    }

    /// Lifts an agent's revocation; whether it was revoked.
    pub async fn reinstate_agent(&self, agent_id: &str) -> Result<bool, DbError> {
        let deleted = revoked_agents::Entity::delete_by_id(agent_id.to_owned()).exec(&self.conn).await?;
        Ok(deleted.rows_affected > 0)
    }

    /// The agent's revocation; `None` when it may open sessions.
    pub async fn revocation(&self, agent_id: &str) -> Result<Option<AgentRevocation>, DbError> {
        let row = revoked_agents::Entity::find_by_id(agent_id.to_owned()).one(&self.conn).await?;
        Ok(row.map(|r| AgentRevocation {
            agent_id: r.agent_id,
            reason: r.reason,
            by: r.by,
            created_at: r.created_at,
        }))
    }

    /// Registers the cameras of `batch` this process has not seen yet (one idempotent statement
    /// each, the first time only: not part of any capture's evidence).
    pub(super) async fn register_cameras(&self, batch: &[Capture]) -> Result<(), DbError> {
        // each unseen camera with the earliest receipt among its captures
        let mut unseen: std::collections::BTreeMap<(String, String), DateTime<Utc>> = Default::default();
        {
            let known = self.known_cameras.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for c in batch {
                let key = (c.meta.site_id.clone(), c.meta.camera_id.clone());
                if !known.contains(&key) {
                    let first = unseen.entry(key).or_insert(c.received_at);
                    *first = (*first).min(c.received_at);
                }
            }
        }
        for ((site_id, camera_id), first_seen) in unseen {
            let camera = cameras::ActiveModel {
                site_id: Set(site_id.clone()),
                id: Set(camera_id.clone()),
                first_seen: Set(first_seen),
            };
            cameras::Entity::insert(camera)
                .on_conflict(
                    OnConflict::columns([cameras::Column::SiteId, cameras::Column::Id])
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(&self.conn)
                .await?;
            self.known_cameras
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert((site_id, camera_id));
        }
        Ok(())
    }

    /// Sites the caller may see, by id.
    pub async fn sites(&self, vis: &Visibility) -> Result<Vec<Site>, DbError> {
        let rows = sites::Entity::find()
            .filter(site_scope(vis))
            .order_by_asc(sites::Column::Id)
            .all(&self.conn)
            .await?;
        Ok(rows.into_iter().map(site_from_row).collect())
    }

    pub async fn site(&self, id: &str, vis: &Visibility) -> Result<Option<Site>, DbError> {
        let row = sites::Entity::find_by_id(id.to_owned()).filter(site_scope(vis)).one(&self.conn).await?;
        Ok(row.map(site_from_row))
    }

    /// Sets (or clears) a site's jurisdiction; `None` when there is no such site.
    pub async fn set_site_jurisdiction(
        &self,
        id: &str,
        jurisdiction: Option<&str>,
    ) -> Result<Option<Site>, DbError> {
        let done = sites::Entity::update_many()
            .col_expr(sites::Column::Jurisdiction, jurisdiction.map(str::to_owned).into())
            .filter(sites::Column::Id.eq(id))
            .exec(&self.conn)
            .await?;
        if done.rows_affected == 0 {
            return Ok(None);
        }
        self.site(id, &Visibility::All).await
    }
}

fn agent_from_row(r: agents::Model) -> Agent {
    Agent {
        id: r.id,
        site_id: r.site_id,
        software_version: r.software_version,
        config_version: to_u64(r.config_version),
        online: r.online,
        health: Health::from_db(&r.health),
        buffered_captures: to_u64(r.buffered_captures),
        last_seen: r.last_seen,
        first_seen: r.first_seen,
    }
}

fn site_from_row(r: sites::Model) -> Site {
    Site { id: r.id, name: r.name, jurisdiction: r.jurisdiction, created_at: r.created_at }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests::temp_db;

    #[tokio::test]
    async fn agents_upsert_heartbeat_and_offline() {
        let (_dir, db) = temp_db().await;
        let hello = AgentHello {
            agent_id: "agent-1".into(),
            site_id: "a1".into(),
            software_version: "0.1.0".into(),
            config_version: 2,
            wants_heartbeat_acks: false,
            local_config: String::new(),
        };
        let t0 = Utc::now();
        db.upsert_agent(&hello, t0).await.unwrap();
        db.record_heartbeat("agent-1", AgentPulse { health: Health::Degraded, buffered_captures: 4 }, t0)
            .await
            .unwrap();
        db.upsert_agent(&AgentHello { software_version: "0.2.0".into(), ..hello }, t0).await.unwrap();
        let a = db.agent("agent-1").await.unwrap().unwrap();
        assert!(a.online);
        assert_eq!(a.software_version, "0.2.0");
        assert_eq!(a.health, Health::Degraded);
        assert_eq!(a.buffered_captures, 4);
        db.mark_offline("agent-1").await.unwrap();
        assert!(!db.agents().await.unwrap()[0].online);
    }
}
