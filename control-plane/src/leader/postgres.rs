//! The leader lock outside Kubernetes: a PostgreSQL session advisory lock
//! (`pg_try_advisory_lock`) held on a connection of its own, taken out of the pool. PostgreSQL
//! releases it when that connection ends, so a replica that dies or loses the database loses
//! the lock; the holder checks its connection every `check_every` and reports the lock lost
//! when the check fails. Replicas not holding it try again every `check_every`. Tested against
//! a real PostgreSQL in `tests/leader.rs`.

use std::time::Duration;

use futures::future::BoxFuture;
use sea_orm::sqlx::{self, Connection, PgConnection, PgPool};

use super::{LeaderError, LeaderLock};

/// The advisory lock key of the singleton loops: `lwlead` in ASCII.
pub const SINGLETONS_KEY: i64 = 0x6c77_6c65_6164;

pub struct AdvisoryLock {
    pool: PgPool,
    key: i64,
    check_every: Duration,
    /// The connection holding the lock, while held.
    held: Option<PgConnection>,
}

impl AdvisoryLock {
    pub fn new(pool: PgPool, key: i64, check_every: Duration) -> Self {
        Self { pool, key, check_every, held: None }
    }

    fn error(&self, e: sqlx::Error) -> LeaderError {
        LeaderError::Postgres { key: self.key, message: e.to_string() }
    }

    async fn try_take(&mut self) -> Result<bool, LeaderError> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.error(e))?.detach();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        if locked {
            self.held = Some(conn);
        } else {
            let _ = conn.close().await;
        }
        Ok(locked)
    }
}

impl LeaderLock for AdvisoryLock {
    fn name(&self) -> &str {
        "singletons"
    }

    fn changed(&mut self) -> BoxFuture<'_, Result<bool, LeaderError>> {
        Box::pin(async move {
            loop {
                match self.held.as_mut() {
                    Some(conn) => {
                        tokio::time::sleep(self.check_every).await;
                        let alive = tokio::time::timeout(self.check_every, conn.ping()).await;
                        if !matches!(alive, Ok(Ok(()))) {
                            // the session (and with it the lock) may be gone: never lead on a doubt
                            self.held = None;
                            return Ok(false);
                        }
                    }
                    None => {
                        if self.try_take().await? {
                            return Ok(true);
                        }
                        tokio::time::sleep(self.check_every).await;
                    }
                }
            }
        })
    }

    fn release(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(mut conn) = self.held.take() {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(self.key).execute(&mut conn).await;
                let _ = conn.close().await;
            }
        })
    }
}
