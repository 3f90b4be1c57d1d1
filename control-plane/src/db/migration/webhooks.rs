//! Migration 9: the vehicle push service's rows: `webhook_endpoints` (where to push, which
//! events, limits, the signing secrets and the failure streak), `webhook_messages` (one event
//! for one endpoint: its `webhook-id`, payload and state) and `webhook_attempts` (every delivery
//! attempt with its status, body snippet and latency). Times are Unix milliseconds.

use sea_orm_migration::prelude::*;

pub struct M0009Webhooks;

impl MigrationName for M0009Webhooks {
    fn name(&self) -> &str {
        "m0009_webhooks"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0009Webhooks {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let float = match manager.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => "DOUBLE PRECISION",
            _ => "REAL",
        };
        let statements = [
            format!(
                "CREATE TABLE IF NOT EXISTS webhook_endpoints (
                    id TEXT PRIMARY KEY,
                    url TEXT NOT NULL,
                    description TEXT NOT NULL,
                    event_types TEXT NOT NULL,
                    site_id TEXT,
                    rate_per_sec {float} NOT NULL,
                    max_concurrency INTEGER NOT NULL,
                    enabled BOOLEAN NOT NULL,
                    secret TEXT NOT NULL,
                    previous_secret TEXT,
                    previous_secret_until_ms BIGINT,
                    agency_id TEXT,
                    jurisdiction TEXT,
                    all_captures BOOLEAN NOT NULL,
                    failing_since_ms BIGINT,
                    disabled_reason TEXT,
                    created_by TEXT NOT NULL,
                    created_at_ms BIGINT NOT NULL,
                    updated_at_ms BIGINT NOT NULL
                )"
            ),
            "CREATE TABLE IF NOT EXISTS webhook_messages (
                id TEXT PRIMARY KEY,
                endpoint_id TEXT NOT NULL,
                event_type TEXT NOT NULL,
                capture_id TEXT,
                payload TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                last_status INTEGER,
                created_at_ms BIGINT NOT NULL,
                updated_at_ms BIGINT NOT NULL
            )"
            .to_owned(),
            "CREATE INDEX IF NOT EXISTS webhook_messages_endpoint ON webhook_messages (endpoint_id, created_at_ms)"
                .to_owned(),
            "CREATE TABLE IF NOT EXISTS webhook_attempts (
                message_id TEXT NOT NULL,
                attempt INTEGER NOT NULL,
                at_ms BIGINT NOT NULL,
                status INTEGER,
                body_snippet TEXT NOT NULL,
                latency_ms BIGINT NOT NULL,
                error TEXT,
                PRIMARY KEY (message_id, attempt)
            )"
            .to_owned(),
        ];
        let conn = manager.get_connection();
        for sql in statements {
            conn.execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        for table in ["webhook_attempts", "webhook_messages", "webhook_endpoints"] {
            conn.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}")).await?;
        }
        Ok(())
    }
}
