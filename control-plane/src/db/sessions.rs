//! The fleet console's logins (`console_sessions`): create one for an API key, find a live one
//! by the SHA-256 of its cookie, end one at logout, and delete expired ones. A session row never
//! holds the cookie itself, so a copy of the database cannot be used to log in.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement};

use super::{Db, DbError};

/// A live console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// The API key the session acts as.
    pub key_id: String,
    /// The token every state-changing request of this session must carry.
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

impl Db {
    pub async fn create_console_session(
        &self,
        id_sha256: &str,
        session: &ConsoleSession,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        let backend = self.conn.get_database_backend();
        self.conn
            .execute(Statement::from_sql_and_values(
                backend,
                "INSERT INTO console_sessions (id_sha256, key_id, csrf, created_at_ms, expires_at_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
                [
                    id_sha256.into(),
                    session.key_id.clone().into(),
                    session.csrf.clone().into(),
                    now.timestamp_millis().into(),
                    session.expires_at.timestamp_millis().into(),
                ],
            ))
            .await?;
        Ok(())
    }

    /// The session with this cookie digest, unless it expired by `now`.
    pub async fn console_session(
        &self,
        id_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ConsoleSession>, DbError> {
        let backend = self.conn.get_database_backend();
        let row = self
            .conn
            .query_one(Statement::from_sql_and_values(
                backend,
                "SELECT key_id, csrf, expires_at_ms FROM console_sessions \
                 WHERE id_sha256 = $1 AND expires_at_ms > $2",
                [id_sha256.into(), now.timestamp_millis().into()],
            ))
            .await?;
        row.map(|r| {
            let expires: i64 = r.try_get("", "expires_at_ms")?;
            Ok(ConsoleSession {
                key_id: r.try_get("", "key_id")?,
                csrf: r.try_get("", "csrf")?,
                expires_at: DateTime::from_timestamp_millis(expires).unwrap_or_default(),
            })
        })
        .transpose()
    }

    /// Ends a session (logout); whether one was live.
    pub async fn delete_console_session(&self, id_sha256: &str) -> Result<bool, DbError> {
        let backend = self.conn.get_database_backend();
        let done = self
            .conn
            .execute(Statement::from_sql_and_values(
                backend,
                "DELETE FROM console_sessions WHERE id_sha256 = $1",
                [id_sha256.into()],
            ))
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes sessions that expired before `now`; how many.
    pub async fn prune_console_sessions(&self, now: DateTime<Utc>) -> Result<u64, DbError> {
        let backend = self.conn.get_database_backend();
        let done = self
            .conn
            .execute(Statement::from_sql_and_values(
                backend,
                "DELETE FROM console_sessions WHERE expires_at_ms <= $1",
                [now.timestamp_millis().into()],
            ))
            .await?;
        Ok(done.rows_affected())
    }
}
