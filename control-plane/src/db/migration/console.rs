//! Migration 10: `console_sessions`, the fleet console's logins. A row holds the SHA-256 of the
//! session cookie (never the cookie), the API key it acts as, its CSRF token and its expiry; a
//! session ends at logout, at expiry, or when its key is revoked. Times are Unix milliseconds.

use sea_orm_migration::prelude::*;

pub struct M0010ConsoleSessions;

impl MigrationName for M0010ConsoleSessions {
    fn name(&self) -> &str {
        "m0010_console_sessions"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0010ConsoleSessions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements = [
            "CREATE TABLE IF NOT EXISTS console_sessions (
                id_sha256 TEXT PRIMARY KEY,
                key_id TEXT NOT NULL,
                csrf TEXT NOT NULL,
                created_at_ms BIGINT NOT NULL,
                expires_at_ms BIGINT NOT NULL
            )",
            "CREATE INDEX IF NOT EXISTS console_sessions_expiry ON console_sessions (expires_at_ms)",
        ];
        for sql in statements {
            manager.get_connection().execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared("DROP TABLE IF EXISTS console_sessions").await?;
        Ok(())
    }
}
