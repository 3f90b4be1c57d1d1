//! The log ring's bound, its queries and following, and the temporary log filter's expiry
//! (under paused time).

use std::time::Duration;

use tracing::Level;
use tracing_subscriber::layer::SubscriberExt as _;

use super::*;

fn line(level: Level, target: &str, message: &str) -> LogLine {
    LogLine {
        seq: 0,
        at: Utc::now(),
        level,
        target: target.to_owned(),
        message: message.to_owned(),
        fields: vec![("capture_id".into(), "0192-ab".into())],
    }
}

#[test]
fn the_ring_stays_within_its_bound_under_a_flood() {
    let ring = LogRing::new(64 * 1024);
    let huge = "x".repeat(10 * MAX_TEXT_BYTES);
    let subscriber = tracing_subscriber::registry().with(ring.layer());
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..50_000u32 {
            if i % 100 == 0 {
                // an oversized message is cut, never stored whole
                tracing::warn!(payload = %huge, "{huge}");
            } else {
                tracing::info!(i, stage = "detect", "vehicle entered lane");
            }
        }
    });
    let (bytes, capacity) = ring.usage();
    assert_eq!(capacity, 64 * 1024);
    assert!(bytes <= capacity, "{bytes} bytes held over a bound of {capacity}");
    let (held, dropped) = ring.counts();
    assert!(held > 100, "the ring should still hold the newest lines, holds {held}");
    assert_eq!(held as u64 + dropped, 50_000, "every line is either held or counted as dropped");
    // the newest line is the last one logged
    let page = ring.query(&LogQuery { limit: 1, ..LogQuery::default() });
    assert_eq!(page.last_seq, 50_000);
    assert_eq!(page.lines[0].fields[0], ("i".to_owned(), "49999".to_owned()));
    let cut = ring.query(&LogQuery { level: Some(Level::WARN), limit: 1, ..LogQuery::default() });
    assert!(cut.lines[0].message.len() <= MAX_TEXT_BYTES && cut.lines[0].message.ends_with('…'));
}

#[test]
fn queries_filter_by_level_target_time_and_text_under_a_cap() {
    let ring = LogRing::new(DEFAULT_RING_BYTES);
    ring.push(line(Level::INFO, "lanewatch_edge_agent::uplink", "session open"));
    ring.push(line(Level::WARN, "lanewatch_edge_agent::uplink", "session failed: reset"));
    ring.push(line(Level::ERROR, "lanewatch_edge_agent::camera", "Camera FRONT stalled"));
    ring.push(line(Level::DEBUG, "lanewatch_edge_agent::detect", "vehicle left"));
    let messages = |q: LogQuery| ring.query(&q).lines.into_iter().map(|l| l.message).collect::<Vec<_>>();

    assert_eq!(
        messages(LogQuery { level: Some(Level::WARN), ..LogQuery::default() }),
        ["session failed: reset", "Camera FRONT stalled"]
    );
    assert_eq!(
        messages(LogQuery { target: Some("lanewatch_edge_agent::uplink".into()), ..LogQuery::default() }),
        ["session open", "session failed: reset"]
    );
    assert_eq!(
        messages(LogQuery { grep: Some("front".into()), ..LogQuery::default() }),
        ["Camera FRONT stalled"]
    );
    // grep looks into field values too
    assert_eq!(messages(LogQuery { grep: Some("0192".into()), ..LogQuery::default() }).len(), 4);
    let future = Utc::now() + chrono::Duration::hours(1);
    assert!(messages(LogQuery { since: Some(future), ..LogQuery::default() }).is_empty());

    // the limit keeps the newest lines, oldest first, and says that more matched
    let page = ring.query(&LogQuery { limit: 2, ..LogQuery::default() });
    assert!(page.truncated);
    assert_eq!(page.lines.iter().map(|l| l.seq).collect::<Vec<_>>(), [3, 4]);
    // so does the byte cap
    let one = page.lines[1].answer_bytes();
    let capped = ring.query(&LogQuery { max_bytes: one, ..LogQuery::default() });
    assert!(capped.truncated);
    assert_eq!(capped.lines.len(), 1);
    // following: only lines after the cursor
    let after = ring.query(&LogQuery { after_seq: Some(3), ..LogQuery::default() });
    assert_eq!(after.lines.iter().map(|l| l.seq).collect::<Vec<_>>(), [4]);
    assert!(!after.truncated);
    assert_eq!(after.last_seq, 4);
}

#[tokio::test(start_paused = true)]
async fn a_follower_waits_for_the_next_matching_line_or_its_deadline() {
    let ring = LogRing::new(DEFAULT_RING_BYTES);
    ring.push(line(Level::INFO, "a", "old"));
    let query = LogQuery { after_seq: Some(1), grep: Some("wanted".into()), ..LogQuery::default() };
    let follower = tokio::spawn({
        let ring = ring.clone();
        let query = query.clone();
        async move { ring.wait_query(&query, Duration::from_secs(30)).await }
    });
    tokio::task::yield_now().await;
    ring.push(line(Level::INFO, "a", "not this one"));
    ring.push(line(Level::INFO, "a", "the wanted line"));
    let page = follower.await.unwrap();
    assert_eq!(page.lines.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(), ["the wanted line"]);

    // nothing matching: the answer comes at the deadline, empty, with a cursor past what was seen
    let page =
        ring.wait_query(&LogQuery { after_seq: Some(page.last_seq), ..query }, Duration::from_secs(2)).await;
    assert!(page.lines.is_empty());
    assert_eq!(page.last_seq, 3);
}

#[tokio::test(start_paused = true)]
async fn a_temporary_log_filter_reverts_by_itself() {
    let ring = LogRing::new(DEFAULT_RING_BYTES);
    let (filter, filter_layer) = LogFilter::new("info").unwrap();
    let subscriber = tracing_subscriber::registry().with(filter_layer).with(ring.layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let debug_lines = || {
        ring.query(&LogQuery { grep: Some("probe".into()), ..LogQuery::default() })
            .lines
            .into_iter()
            .filter(|l| l.level == Level::DEBUG)
            .count()
    };

    tracing::debug!("probe 1");
    assert_eq!(debug_lines(), 0, "debug is filtered out under the base filter");

    let said = filter.set_for("debug", 600).unwrap();
    assert!(said.contains("600s"), "{said}");
    assert_eq!(filter.current().0, "debug");
    assert!(filter.current().1.is_some());
    tracing::debug!("probe 2");
    assert_eq!(debug_lines(), 1, "debug lines are recorded while the filter is in force");

    tokio::time::sleep(Duration::from_secs(599)).await;
    assert_eq!(filter.current().0, "debug", "still in force before its expiry");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(filter.current(), ("info".to_owned(), None), "the base filter is back");
    tracing::debug!("probe 3");
    assert_eq!(debug_lines(), 1, "debug is filtered out again");
}

#[tokio::test(start_paused = true)]
async fn a_newer_filter_is_not_undone_by_an_older_ones_expiry() {
    let (filter, _layer) = LogFilter::new("info").unwrap();
    filter.set_for("debug", 60).unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    filter.set_for("trace", 60).unwrap();
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(filter.current().0, "trace", "the first filter's expiry leaves the second in force");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(filter.current().0, "info");
}

#[tokio::test]
async fn bad_filters_and_durations_are_refused_clearly() {
    let (filter, _layer) = LogFilter::new("info").unwrap();
    let err = filter.set_for("lanewatch=loud", 60).unwrap_err();
    assert!(err.contains("invalid log filter \"lanewatch=loud\""), "{err}");
    let err = filter.set_for("debug", 0).unwrap_err();
    assert!(err.contains("1 to 86400 seconds"), "{err}");
    assert_eq!(filter.current().0, "info", "a refused filter changes nothing");
    assert!(parse_level("loud").unwrap_err().contains("use error, warn, info, debug or trace"));
    assert!(LogFilter::new("=[").is_err());
}
