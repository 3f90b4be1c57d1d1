//! Migration 8: the durable job queue (`jobs`, `job_queues`, `job_replicas`) and the records
//! of captures that retention deleted (`capture_deletions`). Written as SQL per backend: the
//! partial indexes the queue's fetch and uniqueness need are spelled the same on both, only
//! the id column differs. Times are Unix milliseconds, as in component history.

use sea_orm_migration::prelude::*;

pub struct M0008Jobs;

impl MigrationName for M0008Jobs {
    fn name(&self) -> &str {
        "m0008_jobs"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0008Jobs {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let id = match manager.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => "BIGSERIAL PRIMARY KEY",
            _ => "INTEGER PRIMARY KEY AUTOINCREMENT",
        };
        let statements = [
            format!(
                "CREATE TABLE IF NOT EXISTS jobs (
                    id {id},
                    queue TEXT NOT NULL,
                    worker TEXT NOT NULL,
                    args TEXT NOT NULL,
                    state TEXT NOT NULL,
                    priority SMALLINT NOT NULL,
                    attempt INTEGER NOT NULL,
                    max_attempts INTEGER NOT NULL,
                    inserted_at_ms BIGINT NOT NULL,
                    scheduled_at_ms BIGINT NOT NULL,
                    attempted_at_ms BIGINT,
                    finished_at_ms BIGINT,
                    attempted_by TEXT,
                    unique_key TEXT,
                    errors TEXT NOT NULL
                )"
            ),
            // the fetch: the next due jobs of a queue in priority order
            "CREATE INDEX IF NOT EXISTS jobs_fetch ON jobs (queue, priority, scheduled_at_ms, id)
                WHERE state IN ('available', 'scheduled', 'retryable')"
                .to_owned(),
            // counts by queue and state, and the list filtered by state (newest first)
            "CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, queue, id)".to_owned(),
            "CREATE INDEX IF NOT EXISTS jobs_worker ON jobs (worker, id)".to_owned(),
            // pruning and rescue
            "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at_ms) WHERE finished_at_ms IS NOT NULL"
                .to_owned(),
            "CREATE INDEX IF NOT EXISTS jobs_executing ON jobs (attempted_by) WHERE state = 'executing'".to_owned(),
            // unique jobs (cron slots, unique-by-arguments periods): one row per key until pruned
            "CREATE UNIQUE INDEX IF NOT EXISTS jobs_unique ON jobs (unique_key) WHERE unique_key IS NOT NULL"
                .to_owned(),
            "CREATE TABLE IF NOT EXISTS job_queues (
                name TEXT PRIMARY KEY,
                paused BOOLEAN NOT NULL,
                local_limit INTEGER NOT NULL,
                global_limit INTEGER,
                updated_at_ms BIGINT NOT NULL
            )"
            .to_owned(),
            "CREATE TABLE IF NOT EXISTS job_replicas (
                replica_id TEXT PRIMARY KEY,
                seen_at_ms BIGINT NOT NULL
            )"
            .to_owned(),
            "CREATE TABLE IF NOT EXISTS capture_deletions (
                id TEXT PRIMARY KEY,
                capture_id TEXT NOT NULL,
                site_id TEXT NOT NULL,
                jurisdiction TEXT,
                decision TEXT NOT NULL,
                value_class TEXT NOT NULL,
                captured_at_ms BIGINT NOT NULL,
                deleted_at_ms BIGINT NOT NULL,
                retention_days INTEGER NOT NULL,
                reason TEXT NOT NULL,
                image_key TEXT NOT NULL
            )"
            .to_owned(),
            "CREATE INDEX IF NOT EXISTS capture_deletions_deleted ON capture_deletions (deleted_at_ms, id)".to_owned(),
            "CREATE INDEX IF NOT EXISTS capture_deletions_site ON capture_deletions (site_id, deleted_at_ms)".to_owned(),
        ];
        let conn = manager.get_connection();
        for sql in statements {
            conn.execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        for table in ["capture_deletions", "job_replicas", "job_queues", "jobs"] {
            conn.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}")).await?;
        }
        Ok(())
    }
}
