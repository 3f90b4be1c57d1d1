//! Tests of `lanewatch top` without a terminal: the screen drawn on ratatui's `TestBackend`
//! (rows sorted, the restart prompt and answer, stale data after a failed refresh), the keys,
//! the API's answer as a snapshot, and the parsing of `--interval`.

use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::*;

fn component(name: &str, restarts: u64, processed: u64, depth: Option<u64>) -> Component {
    Component {
        name: name.to_owned(),
        status: "RUNNING".to_owned(),
        restarts,
        processed,
        rate: Some(processed as f64 / 60.0),
        // in the order of their inbox depths, so the first row is the same in either sort
        busy: Some(match name {
            "sense" => 0.8,
            "uplink" => 0.5,
            _ => 0.2,
        }),
        inbox: depth.map(|d| (d, 64)),
        last_failure: None,
    }
}

fn model() -> Model {
    let mut model = Model::new("agent-7");
    let snapshot = Snapshot {
        site: "site-a".to_owned(),
        online: true,
        health: "HEALTHY".to_owned(),
        process: Some(Process {
            cpu_seconds: 3.0,
            cpu_ratio: 0.05,
            rss_bytes: 47_513_600,
            threads: 23,
            open_fds: 41,
            uptime_secs: 60.0,
            software_version: "0.1.0".to_owned(),
            config_version: 3,
            model_version: None,
            clock: Some((-2.25, 1.5)),
        }),
        components: vec![
            component("acquire-front", 0, 900, None),
            component("uplink", 2, 40, Some(1)),
            component("sense", 1, 500, Some(9)),
        ],
    };
    let at = chrono::TimeZone::with_ymd_and_hms(&Local, 2026, 12, 3, 14, 4, 28).unwrap();
    model.refreshed(Ok(snapshot), at);
    model
}

/// The screen as lines of text.
fn screen(model: &Model) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(100, 16)).unwrap();
    terminal.draw(|frame| render(frame, model)).unwrap();
    let buffer = terminal.backend().buffer();
    (0..buffer.area.height)
        .map(|y| (0..buffer.area.width).map(|x| buffer[(x, y)].symbol()).collect::<String>())
        .collect()
}

/// The component names in screen order.
fn names(screen: &[String]) -> Vec<&str> {
    screen
        .iter()
        .filter_map(|line| {
            let name = line.trim_start_matches(['│', '▶', ' ']).split_whitespace().next()?;
            ["acquire-front", "uplink", "sense"].contains(&name).then_some(name)
        })
        .collect()
}

fn press(model: &mut Model, code: KeyCode) -> Action {
    model.key(KeyEvent::new(code, KeyModifiers::NONE))
}

#[test]
fn rows_are_sorted_by_the_chosen_column() {
    let mut model = model();
    let text = screen(&model);
    assert_eq!(names(&text), ["sense", "uplink", "acquire-front"], "{text:#?}");
    assert!(text.iter().any(|l| l.contains("components (3) · sorted by busy")), "{text:#?}");
    assert!(text.iter().any(|l| l.contains("BUSY▼")), "{text:#?}");
    assert!(text.iter().any(|l| l.contains("50.0%") && l.contains("40 (0.7/s)")), "{text:#?}");
    press(&mut model, KeyCode::Char('s'));
    let text = screen(&model);
    assert_eq!(names(&text), ["sense", "uplink", "acquire-front"], "{text:#?}");
    assert!(text.iter().any(|l| l.contains("components (3) · sorted by inbox depth")), "{text:#?}");
    assert!(text.iter().any(|l| l.contains("INBOX▼")), "{text:#?}");
    assert!(text.iter().any(|l| l.contains("rss 45.3 MiB") && l.contains("uptime 1m00s")), "{text:#?}");
    assert!(text.iter().any(|l| l.contains("refreshed 14:04:28")), "{text:#?}");
    assert!(text.iter().any(|l| l.contains("clock -2.2 ms (±0.8)")), "{text:#?}");
    press(&mut model, KeyCode::Char('s'));
    assert_eq!(names(&screen(&model)), ["uplink", "sense", "acquire-front"]);
    press(&mut model, KeyCode::Char('s'));
    assert_eq!(names(&screen(&model)), ["acquire-front", "sense", "uplink"]);
    press(&mut model, KeyCode::Char('s'));
    let text = screen(&model);
    assert_eq!(names(&text), ["acquire-front", "sense", "uplink"]);
    assert!(text.iter().any(|l| l.contains("s sort (name)")), "{text:#?}");
    press(&mut model, KeyCode::Char('s'));
    assert_eq!(model.sort, SortBy::Busy, "the sort cycles");
}

#[test]
fn restart_asks_first_and_shows_the_answer() {
    let mut model = model();
    // the first row is selected; j moves down, k back up, and the selection follows the
    // component when the rows are sorted again
    assert_eq!(model.selected.as_deref(), Some("sense"));
    assert_eq!(press(&mut model, KeyCode::Char('j')), Action::None);
    assert_eq!(model.selected.as_deref(), Some("uplink"));
    press(&mut model, KeyCode::Char('s'));
    assert_eq!(model.selected.as_deref(), Some("uplink"));
    let text = screen(&model);
    assert!(text.iter().any(|l| l.contains("▶ uplink")), "{text:#?}");

    assert_eq!(press(&mut model, KeyCode::Char('r')), Action::None);
    let text = screen(&model);
    assert!(text.iter().any(|l| l.contains("restart uplink? y/n")), "{text:#?}");
    // any other key cancels, and does nothing else (q does not quit here)
    assert_eq!(press(&mut model, KeyCode::Char('q')), Action::None);
    assert!(screen(&model).iter().any(|l| l.contains("restart of uplink cancelled")));

    press(&mut model, KeyCode::Char('r'));
    assert_eq!(press(&mut model, KeyCode::Char('y')), Action::Restart("uplink".to_owned()));
    model.restart_answered("uplink", Ok("agent-7: restarting uplink (command 1)".to_owned()));
    let text = screen(&model);
    assert!(text.iter().any(|l| l.contains("agent-7: restarting uplink (command 1)")), "{text:#?}");
    assert_eq!(press(&mut model, KeyCode::Char('q')), Action::Quit);
}

#[test]
fn a_failed_refresh_keeps_the_data_and_marks_it_stale() {
    let mut model = model();
    let at = chrono::TimeZone::with_ymd_and_hms(&Local, 2026, 12, 3, 14, 4, 30).unwrap();
    model.refreshed(Err("unavailable: agent agent-7 is offline".to_owned()), at);
    let text = screen(&model);
    assert!(text.iter().any(|l| l.contains("STALE: from 14:04:28")), "{text:#?}");
    assert!(
        text.iter().any(|l| l.contains(
            "refresh failed at 14:04:30 (showing the answer from 14:04:28): unavailable: agent \
             agent-7 is offline"
        )),
        "{text:#?}"
    );
    assert_eq!(names(&text).len(), 3, "{text:#?}");
    // a long error wraps to the screen's width, three lines at most
    assert_eq!(wrap("abcd efgh\nij", 5), ["abcd ", "efgh ", "ij"]);
    assert_eq!(wrap(&"x".repeat(20), 4), ["xxxx", "xxxx", "xxx…"]);
}

#[test]
fn api_answers_become_snapshots() {
    let agent = json!({ "site": "s", "online": true, "health": "HEALTHY", "process": null,
        "components": [{ "name": "uplink", "status": "RUNNING", "restarts": 1, "processed": 5,
            "inbox": { "depth": 2, "capacity": 8 }, "lastFailure": null }] });
    let s = Snapshot::from_api("a", &agent).unwrap();
    assert_eq!(s.components[0].inbox, Some((2, 8)));
    assert!(s.process.is_none());
    let e = Snapshot::from_api("a-9", &Value::Null).unwrap_err().to_string();
    assert_eq!(e, "no agent with id \"a-9\" (`lanewatch agents` lists them)");
}

#[test]
fn intervals_and_sizes_read_clearly() {
    assert_eq!(parse_interval("200ms"), Ok(Duration::from_millis(200)));
    assert_eq!(parse_interval("2s 500ms"), Ok(Duration::from_millis(2500)));
    assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
    assert!(parse_interval("2").unwrap_err().contains("\"2\" is not a duration"));
    assert!(parse_interval("fast").unwrap_err().contains("write e.g. 30s, 10m or 1h 30m"));
    assert!(parse_interval("3h").unwrap_err().contains("too long: use at most 60m"));
    assert!(parse_interval("10ms").unwrap_err().contains("at least 100ms"));
    assert_eq!(bytes(512), "512 B");
    assert_eq!(bytes(47_513_600), "45.3 MiB");
    assert_eq!(uptime(3723.0), "1h02m");
    assert_eq!(truncate(&"x".repeat(100)).chars().count(), FAILURE_CHARS + 1);
}
