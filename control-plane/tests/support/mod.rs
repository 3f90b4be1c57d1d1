//! What the control plane's integration tests share: a fresh PostgreSQL database per test,
//! dropped when its guard goes, and the choice of backend a test runs on.

/// Runs `$test(backend)` once per backend: `mod sqlite` and `mod postgres` of `#[tokio::test]`s.
#[allow(unused_macros)]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Backend::Postgres).await } )*
        }
    };
}

use sea_orm::{ConnectionTrait, Database};
use uuid::Uuid;

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh PostgreSQL database, dropped (forcibly) when the guard goes.
pub struct PgDatabase {
    name: String,
}

impl PgDatabase {
    pub async fn create() -> (Self, String) {
        let admin = Database::connect(PG_ADMIN_URL).await.unwrap_or_else(|e| {
            panic!(
                "postgresql is unreachable at {PG_ADMIN_URL} ({e}); these tests need a local postgres \
                 with trust auth for user postgres"
            )
        });
        let name = format!("lanewatch_test_{}", Uuid::now_v7().simple());
        admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        (Self { name }, url)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // async work cannot run in drop on the test's runtime; a thread with its own can
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(admin) = Database::connect(PG_ADMIN_URL).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}
