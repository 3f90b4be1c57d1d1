//! Calibration from the roadside: the lane zones (lane count and width, shown over the live scan
//! profile) and each camera's seat-section polygons (dragged on its latest released frame, or
//! typed as `x,y` pairs). Saving edits the config file's text in place (`toml_edit`, so comments
//! and layout stay), validates it exactly as a pushed config is validated, and applies it
//! through the same staged path: the file is replaced atomically and the agent drains and
//! rebuilds its components. A refused edit shows the validator's field and line, and nothing is
//! written. The next session tells the control plane about the edit (`Hello.local_config`), and
//! the control plane records it as a new version of the site's config.

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use lanewatch_web::html::{encode, error_box, ok_box};
use maud::{Markup, html};

use super::Ui;
use super::auth::{Mutating, Viewer};
use super::pages;

/// `name: x,y x,y x,y` per section, one line each.
fn sections_text(sections: &[crate::config::SeatSectionConfig]) -> String {
    sections
        .iter()
        .map(|s| {
            let points: Vec<String> = s.polygon.iter().map(|[x, y]| format!("{x:.0},{y:.0}")).collect();
            format!("{}: {}", s.name, points.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A seat section's name and polygon (frame pixels).
type Section = (String, Vec<[f32; 2]>);

/// Reads `name: x,y x,y …` lines; an error names the line.
fn parse_sections(camera: &str, text: &str) -> Result<Vec<Section>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = || format!("camera {camera}, line {}", i + 1);
        let (name, points) = line
            .split_once(':')
            .ok_or_else(|| format!("{}: expected `name: x,y x,y x,y`, got {line:?}", at()))?;
        let polygon = points
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').ok_or_else(|| format!("{}: point {p:?} is not x,y", at()))?;
                let n =
                    |v: &str| v.trim().parse::<f32>().map_err(|_| format!("{}: {v:?} is not a number", at()));
                Ok([n(x)?, n(y)?])
            })
            .collect::<Result<Vec<_>, String>>()?;
        out.push((name.trim().to_owned(), polygon));
    }
    Ok(out)
}

fn form(ui: &Ui, error: Option<&str>, note: Option<&str>) -> Markup {
    let Some(current) = ui.current() else {
        return error_box("the agent is between configs: try again in a moment");
    };
    let c = &current.config;
    let frames = ui.deps.view.frames();
    html! {
        form #calibration hx-post="/calibration" hx-target="#calibration-form" {
            @if let Some(e) = error { (error_box(e)) }
            @if let Some(n) = note { (ok_box(n)) }
            fieldset {
                legend { "Lane zones" }
                label for="lanes" { "Lanes" } input #lanes name="lanes" value=(c.site.lanes) size="3" inputmode="numeric";
                label for="lane_width_m" { "Lane width (m)" } input #lane_width_m name="lane_width_m" value=(c.site.lane_width_m) size="5" inputmode="decimal";
                p.muted { "Zones run from the right road edge (lane 0). The latest scan with the current zones:" }
                (pages::scan_plot(&ui.deps.view.scan()))
            }
            @match &c.vision {
                None => p.muted { "Seat sections: vision is off on this agent." },
                Some(v) => {
                    @for cam in &v.cameras {
                        fieldset data-camera=(cam.id) {
                            legend { "Seat sections of camera " (cam.id) }
                            @if let Some(f) = frames.get(&cam.id) {
                                @let (w, h) = image::ImageReader::new(std::io::Cursor::new(&f.jpeg)).with_guessed_format().ok().and_then(|r| r.into_dimensions().ok()).unwrap_or((1280, 720));
                                div.frame style="position:relative;max-width:720px" {
                                    img src={ "/cameras/" (encode(&cam.id)) "/frame.jpg?c=" (f.capture_id) } alt={ "Latest anonymized frame of camera " (cam.id) } width=(w) height=(h) style="width:100%;height:auto";
                                    svg.editor viewBox={ "0 0 " (w) " " (h) } data-edit-polygons={ "sections-" (cam.id) } aria-hidden="true" style="position:absolute;inset:0;width:100%;height:100%" {}
                                }
                            } @else {
                                p.muted { "No released frame yet to draw on; the points can be typed below." }
                            }
                            label for={ "sections-" (cam.id) } { "Polygons, one section per line: name: x,y x,y x,y (frame pixels)" }
                            textarea id={ "sections-" (cam.id) } name={ "sections." (cam.id) } rows=(cam.sections.len().max(2)) spellcheck="false" { (sections_text(&cam.sections)) }
                        }
                    }
                }
            }
            button type="submit" { "Validate and apply" }
        }
    }
}

pub async fn page(State(ui): State<Ui>, viewer: Viewer) -> Response {
    let body = html! {
        p.muted { "Changes are validated like a config from the control plane, then applied in place: the components drain and restart with them. The control plane records the edit as a new version of the site's config." }
        div #calibration-form { (form(&ui, None, None)) }
    };
    pages::page(&ui, "Calibration", &viewer, "/calibration", body)
}

/// Edits the file's text: the lane zones and each camera's section polygons.
fn edit(text: &str, fields: &[(String, String)]) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut =
        text.parse().map_err(|e| format!("the config file does not parse: {e}"))?;
    for (key, value) in fields {
        match key.as_str() {
            "lanes" => {
                let n: i64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("site.lanes: {value:?} is not a whole number"))?;
                doc["site"]["lanes"] = toml_edit::value(n);
            }
            "lane_width_m" => {
                let w: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("site.lane_width_m: {value:?} is not a number"))?;
                doc["site"]["lane_width_m"] = toml_edit::value(w);
            }
            k if k.starts_with("sections.") => {
                let camera = &k["sections.".len()..];
                let sections = parse_sections(camera, value)?;
                let cameras = doc
                    .get_mut("vision")
                    .and_then(|v| v.get_mut("cameras"))
                    .and_then(|c| c.as_array_of_tables_mut())
                    .ok_or_else(|| "vision.cameras: not in the file".to_owned())?;
                let table = cameras
                    .iter_mut()
                    .find(|t| t.get("id").and_then(|i| i.as_str()) == Some(camera))
                    .ok_or_else(|| format!("vision.cameras: no camera {camera:?}"))?;
                let mut array = toml_edit::ArrayOfTables::new();
                for (name, polygon) in sections {
                    let mut t = toml_edit::Table::new();
                    t["name"] = toml_edit::value(name);
                    let mut points = toml_edit::Array::new();
                    for [x, y] in polygon {
                        let mut p = toml_edit::Array::new();
                        p.push(f64::from(x));
                        p.push(f64::from(y));
                        points.push(p);
                    }
                    t["polygon"] = toml_edit::value(points);
                    array.push(t);
                }
                table.insert("sections", toml_edit::Item::ArrayOfTables(array));
            }
            _ => {}
        }
    }
    Ok(doc.to_string())
}

pub async fn apply(
    State(ui): State<Ui>,
    _: Mutating,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Response {
    let render =
        |error: Option<&str>, note: Option<&str>| Html(form(&ui, error, note).into_string()).into_response();
    let Some(current) = ui.current() else {
        return render(Some("the agent is between configs: try again in a moment"), None);
    };
    let path = &ui.deps.config_path;
    let text = match tokio::fs::read_to_string(path).await {
        Ok(t) => t,
        Err(e) => return render(Some(&format!("cannot read {}: {e}", path.display())), None),
    };
    let edited = match edit(&text, &fields) {
        Ok(t) => t,
        Err(e) => return render(Some(&e), None),
    };
    if edited == text {
        return render(None, Some("Nothing changed."));
    }
    if let Err(e) = crate::config::parse_and_validate(&edited, path.parent()) {
        // the validator's field and line, nothing written
        return render(Some(&format!("not applied: {e}")), None);
    }
    if let Err(e) =
        crate::uplink::write_atomically(&crate::config::local_edit_marker(path), b"local ui").await
    {
        return render(Some(&format!("cannot mark the local edit: {e:#}")), None);
    }
    if let Err(e) = crate::uplink::write_atomically(path, edited.as_bytes()).await {
        // nothing changed: the marker must not make the control plane record the old text
        let _ = tokio::fs::remove_file(crate::config::local_edit_marker(path)).await;
        return render(Some(&format!("cannot write {}: {e:#}", path.display())), None);
    }
    tracing::info!(
        config_version = current.config.config_version,
        "local ui calibration staged: applying in place"
    );
    let _ = ui.deps.reload.send(current.config.config_version);
    render(None, Some("Applied: the components restart with the new calibration."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_round_trip_through_their_text() {
        let parsed =
            parse_sections("front", "driver: 10,20 30,20 30,40\n\nfront_passenger: 1,2 3,4 5,6").unwrap();
        assert_eq!(parsed[0], ("driver".to_owned(), vec![[10.0, 20.0], [30.0, 20.0], [30.0, 40.0]]));
        assert_eq!(parsed.len(), 2);
        let e = parse_sections("front", "driver 10,20").unwrap_err();
        assert!(e.contains("camera front, line 1"), "{e}");
        let e = parse_sections("front", "driver: 10,20\nrear: 1;2").unwrap_err();
        assert!(e.contains("line 2") && e.contains("1;2"), "{e}");
    }

    #[test]
    fn edits_keep_the_rest_of_the_file() {
        let text = "# site calibration\n[site]\nlanes = 2 # two lanes\nlane_width_m = 3.5\n\n[vision]\n[[vision.cameras]]\nid = \"front\"\n[[vision.cameras.sections]]\nname = \"driver\"\npolygon = [[0, 0], [1, 0], [1, 1]]\n";
        let fields = vec![
            ("lanes".to_owned(), "3".to_owned()),
            ("sections.front".to_owned(), "driver: 5,5 50,5 50,50".to_owned()),
        ];
        let edited = edit(text, &fields).unwrap();
        assert!(edited.starts_with("# site calibration\n"), "{edited}");
        let doc: toml_edit::DocumentMut = edited.parse().unwrap();
        assert_eq!(doc["site"]["lanes"].as_integer(), Some(3));
        assert_eq!(doc["site"]["lane_width_m"].as_float(), Some(3.5));
        let poly = doc["vision"]["cameras"][0]["sections"][0]["polygon"].as_array().unwrap();
        assert_eq!(poly.len(), 3);
        assert!(
            edit(text, &[("sections.side".to_owned(), "driver: 1,1 2,2 3,3".to_owned())])
                .unwrap_err()
                .contains("no camera")
        );
    }

    #[test]
    fn each_camera_keeps_its_own_sections() {
        let text = "[vision]\n[[vision.cameras]]\nid = \"a\"\n[[vision.cameras.sections]]\nname = \"driver\"\npolygon = [[0, 0], [1, 0], [1, 1]]\n\
                    [[vision.cameras]]\nid = \"b\"\n[[vision.cameras.sections]]\nname = \"driver\"\npolygon = [[2, 2], [3, 2], [3, 3]]\n\
                    [[vision.policy]]\nlanes = [0]\nmin_occupants = 2\n";
        let fields =
            [("sections.a".to_owned(), "driver: 9,9 19,9 19,19\nrear_row_1: 1,1 2,1 2,2".to_owned())];
        let edited = edit(text, &fields).unwrap();
        let value: toml::Value = toml::from_str(&edited).unwrap();
        let cams = value["vision"]["cameras"].as_array().unwrap();
        assert_eq!(cams[0]["id"].as_str(), Some("a"));
        assert_eq!(cams[0]["sections"].as_array().unwrap().len(), 2, "{edited}");
        assert_eq!(cams[0]["sections"][0]["polygon"][0][0].as_float(), Some(9.0), "{edited}");
        assert_eq!(cams[1]["sections"].as_array().unwrap().len(), 1, "{edited}");
        assert_eq!(cams[1]["sections"][0]["polygon"][0][0].as_integer(), Some(2), "{edited}");
        assert_eq!(value["vision"]["policy"].as_array().unwrap().len(), 1, "{edited}");
    }
}
