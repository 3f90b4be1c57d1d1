//! Leader election against a real PostgreSQL: the advisory lock has one holder at a time and
//! passes on when released or when its connection ends, and a deposed leader's fenced write
//! fails once the next leader has started its term.

#[allow(dead_code)] // the backend choice of the shared support module is not needed here
mod support;

use std::time::Duration;

use chrono::Utc;
use lanewatch_control_plane::db::Db;
use lanewatch_control_plane::db::leader::{ManagedSite, SiteManager};
use lanewatch_control_plane::leader::postgres::{AdvisoryLock, SINGLETONS_KEY};
use lanewatch_control_plane::leader::{LeaderLock, elect};
use support::PgDatabase;
use tokio::sync::watch;

const EVERY: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_advisory_lock_has_one_holder_and_hands_over_on_release() {
    let (_guard, url) = PgDatabase::create().await;
    let db = Db::connect(&url).await.unwrap();
    let pool = db.postgres_pool().unwrap().clone();
    // a key of this test's own: other tests' databases share the server's lock space
    let key = SINGLETONS_KEY ^ i64::from(rand_key());
    let mut a = AdvisoryLock::new(pool.clone(), key, EVERY);
    let mut b = AdvisoryLock::new(pool.clone(), key, EVERY);
    assert!(a.changed().await.unwrap());
    let waiting = tokio::time::timeout(Duration::from_millis(400), b.changed()).await;
    assert!(waiting.is_err(), "b must not get the lock while a holds it");
    a.release().await;
    let taken = tokio::time::timeout(Duration::from_secs(5), b.changed()).await;
    assert!(matches!(taken, Ok(Ok(true))), "b takes the lock once a released it: {taken:?}");
    // the holder's connection ends (as when a replica dies): the holder reports the loss
    let pid: i32 = {
        let rows: Vec<(i32,)> = sea_orm::sqlx::query_as(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = ($1::bigint & 4294967295)::oid AND granted",
        )
        .bind(key)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(rows.len(), 1, "one holder of the advisory lock");
        rows[0].0
    };
    sea_orm::sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&pool).await.unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(5), b.changed()).await;
    assert!(matches!(lost, Ok(Ok(false))), "b reports the lock lost with its connection: {lost:?}");
    assert!(tokio::time::timeout(Duration::from_secs(5), a.changed()).await.unwrap().unwrap());
    a.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_write_is_fenced_off() {
    let (_guard, url) = PgDatabase::create().await;
    let db = Db::connect(&url).await.unwrap();
    let pool = db.postgres_pool().unwrap().clone();
    let key = SINGLETONS_KEY ^ i64::from(rand_key());
    let (stop_a, shutdown_a) = watch::channel(false);
    let lock_a = AdvisoryLock::new(pool.clone(), key, EVERY);
    let (mut leader_a, task_a) =
        elect(Box::new(lock_a), db.clone(), "a".into(), Default::default(), shutdown_a);
    let term_a = leader_a.gained().await.unwrap();
    let (stop_b, shutdown_b) = watch::channel(false);
    let lock_b = AdvisoryLock::new(pool.clone(), key, EVERY);
    let (mut leader_b, task_b) =
        elect(Box::new(lock_b), db.clone(), "b".into(), Default::default(), shutdown_b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(leader_b.current(), None, "b waits while a leads");
    stop_a.send(true).unwrap();
    task_a.await.unwrap();
    let term_b = tokio::time::timeout(Duration::from_secs(5), leader_b.gained()).await.unwrap().unwrap();
    assert_eq!(term_b.fence.epoch, term_a.fence.epoch + 1);
    let manager = SiteManager { site_id: "s1".into(), namespace: "lw".into(), name: "north".into() };
    let site = ManagedSite { manager: &manager, jurisdiction: None, lanes: &[] };
    let late = db.claim_managed_site(&term_a.fence, &site, Utc::now()).await;
    assert!(late.is_err(), "a's write after b's term began must fail");
    assert_eq!(db.claim_managed_site(&term_b.fence, &site, Utc::now()).await.unwrap(), Ok(()));
    stop_b.send(true).unwrap();
    task_b.await.unwrap();
}

fn rand_key() -> u32 {
    std::process::id() ^ (Utc::now().timestamp_subsec_nanos())
}
