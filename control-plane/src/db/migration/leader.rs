//! Migration 11: `leader_terms`, one row per leader lock with the epoch (fencing token) that
//! each new leader increments, and `site_managers`, the LanewatchSite custom resource (namespace
//! and name) that owns a site's config when the site is managed from Kubernetes.

use sea_orm_migration::prelude::*;

pub struct M0011LeaderAndSiteManagers;

impl MigrationName for M0011LeaderAndSiteManagers {
    fn name(&self) -> &str {
        "m0011_leader_and_site_managers"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0011LeaderAndSiteManagers {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements = [
            "CREATE TABLE IF NOT EXISTS leader_terms (
                lock_name TEXT PRIMARY KEY,
                epoch BIGINT NOT NULL,
                holder TEXT NOT NULL,
                started_at_ms BIGINT NOT NULL
            )",
            "CREATE TABLE IF NOT EXISTS site_managers (
                site_id TEXT PRIMARY KEY,
                namespace TEXT NOT NULL,
                name TEXT NOT NULL,
                claimed_at_ms BIGINT NOT NULL
            )",
        ];
        for sql in statements {
            manager.get_connection().execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["site_managers", "leader_terms"] {
            manager.get_connection().execute_unprepared(&format!("DROP TABLE IF EXISTS {table}")).await?;
        }
        Ok(())
    }
}
