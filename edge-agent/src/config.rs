//! The agent's side of its configuration: the schema and validation live in
//! `lanewatch-agent-config` (shared with the control plane, which validates a site's config
//! before pushing it); this module reads the file from disk and makes the checks only this
//! machine can make: that the files the config names exist and are what they claim. It also
//! writes files atomically (configs, ready files) and names the marker of an edit made on the
//! device that the control plane has not recorded yet.

use std::path::{Path, PathBuf};

use anyhow::Context;

pub use lanewatch_agent_config::*;

/// Errors of loading a config file from disk.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read agent config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid agent config {path}: {source}")]
    Invalid { path: PathBuf, source: ConfigError },
}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<AgentConfig, LoadError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
    parse_and_validate(&text, path.parent())
        .map_err(|source| LoadError::Invalid { path: path.to_owned(), source })
}

/// Parses and validates config text on this machine; relative file paths are resolved against
/// `base_dir` (the config file's directory) and checked.
pub fn parse_and_validate(text: &str, base_dir: Option<&Path>) -> Result<AgentConfig, ConfigError> {
    lanewatch_agent_config::parse_and_validate(text, &LocalFiles { base_dir })
}

/// File checks against this machine's disk.
#[derive(Debug, Clone, Copy)]
pub struct LocalFiles<'a> {
    pub base_dir: Option<&'a Path>,
}

impl HostChecks for LocalFiles<'_> {
    fn file(&self, path: &Path) -> Result<(), String> {
        if resolve(self.base_dir, path).is_file() {
            Ok(())
        } else {
            Err(format!("file {} does not exist", path.display()))
        }
    }

    fn replay_images(&self, path: &Path) -> Result<(), String> {
        match replay_files(&resolve(self.base_dir, path)) {
            Ok(files) if files.is_empty() => {
                Err(format!("{} holds no .jpg, .jpeg or .png file", path.display()))
            }
            Ok(_) => Ok(()),
            Err(err) => Err(format!("cannot read {}: {err}", path.display())),
        }
    }

    fn lidar_recording(&self, path: &Path) -> Result<(), String> {
        crate::lidar::recording::read_header_of(&resolve(self.base_dir, path))
            .map(|_| ())
            .map_err(|err| format!("{err:#}"))
    }
}

/// The wire framing of the configured scanner.
pub fn framing(f: LidarFraming) -> crate::lidar::sick::Framing {
    match f {
        LidarFraming::ColaA => crate::lidar::sick::Framing::ColaA,
        LidarFraming::ColaB => crate::lidar::sick::Framing::ColaB,
    }
}

/// Resolves a path from the config against the config file's directory.
/// Writes a file via a temporary sibling and a rename, so readers never see half a file.
pub async fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    tokio::fs::write(&tmp, bytes).await.with_context(|| format!("writing {}", tmp.display()))?;
    tokio::fs::File::open(&tmp).await?.sync_all().await?;
    tokio::fs::rename(&tmp, path).await.with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// The marker beside the config file that says its text is an edit made on the device (the
/// local UI) that the control plane has not recorded yet; the uplink sends the text with its
/// Hello while it exists, and removes it when a config from the control plane is staged.
pub fn local_edit_marker(config_path: &Path) -> PathBuf {
    let mut name = config_path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".local-edit");
    config_path.with_file_name(name)
}

pub fn resolve(base_dir: Option<&Path>, path: &Path) -> PathBuf {
    match base_dir {
        Some(dir) if path.is_relative() && !dir.as_os_str().is_empty() => dir.join(path),
        _ => path.to_owned(),
    }
}

/// The image files a file-replay camera loops over: one file, or a directory's images by name.
pub fn replay_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let is_image = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
    };
    if path.is_file() {
        return Ok(if is_image(path) { vec![path.to_owned()] } else { vec![] });
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const EXAMPLE: &str = include_str!("../agent.example.toml");

    #[test]
    fn example_parses_and_validates() {
        // the example's model file lives on a device, not here: its file checks are the device's
        let config = lanewatch_agent_config::parse_and_validate(EXAMPLE, &RemoteHost)
            .expect("example config is valid");
        assert_eq!(config.agent_id, "agent-a");
        assert_eq!(config.cameras.len(), 1);
        assert_eq!(config.simulator.flow_veh_h_per_lane, 900);
        assert_eq!(config.buffer, BufferConfig::default(), "example shows the buffer defaults");
        assert_eq!(config.simulator, SimulatorConfig::default(), "example shows the simulator defaults");
        let telemetry = lanewatch_agent_config::TelemetryConfig::default();
        assert_eq!(config.telemetry, telemetry, "example shows the telemetry defaults");
        let vision = config.vision.expect("the example documents [vision]");
        assert_eq!(vision.anonymize, AnonymizeConfig::default(), "example shows the anonymize defaults");
    }

    /// One step of a path into the example's TOML tree.
    #[derive(Debug, Clone)]
    enum Step {
        Key(String),
        Index(usize),
    }

    /// The example with `change` applied to the table at `path`, deserialized (serde only, no
    /// validation): serde's error, if any.
    fn deserialize_with(
        root: &toml::Table,
        path: &[Step],
        change: impl FnOnce(&mut toml::Table),
    ) -> Option<String> {
        let mut doc = root.clone();
        let mut table = &mut doc;
        for (i, step) in path.iter().enumerate() {
            let value = match step {
                Step::Key(k) => table.get_mut(k).unwrap(),
                Step::Index(_) => continue,
            };
            table = match (value, path.get(i + 1)) {
                (toml::Value::Array(items), Some(Step::Index(n))) => items[*n].as_table_mut().unwrap(),
                (value, _) => value.as_table_mut().unwrap(),
            };
        }
        change(table);
        let text = toml::to_string(&doc).unwrap();
        toml::from_str::<AgentConfig>(&text).err().map(|e| e.message().to_owned())
    }

    /// The names serde lists after "expected" in an unknown-field or unknown-variant error.
    fn expected_names(message: &str) -> Vec<String> {
        let Some((_, list)) = message.split_once("expected") else { return vec![] };
        list.split('`').skip(1).step_by(2).map(str::to_owned).collect()
    }

    fn word_at(text: &str, at: usize, len: usize) -> bool {
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
        !text[..at].chars().next_back().is_some_and(ident)
            && !text[at + len..].chars().next().is_some_and(ident)
    }

    /// `name` stands in `text` as a key (`name =`, commented out or not) or a table header.
    fn mentions_key(text: &str, name: &str) -> bool {
        text.match_indices(name).any(|(at, _)| {
            word_at(text, at, name.len())
                && text[at + name.len()..].trim_start_matches(' ').starts_with(['=', ']', '.'])
        })
    }

    fn mentions_word(text: &str, word: &str) -> bool {
        text.match_indices(word).any(|(at, _)| word_at(text, at, word.len()))
    }

    /// The settings the schema has that `text` (an example config) does not mention.
    fn unmentioned_settings(text: &str) -> BTreeSet<String> {
        let root: toml::Table = toml::from_str(text).unwrap();
        let mut missing = BTreeSet::new();
        probe(text, &root, vec![], &root, &mut missing);
        missing
    }

    /// Probes every table below `path`: a probe key makes `deny_unknown_fields` list the
    /// struct's fields, a probe value in a string setting makes an enum list its variants, and
    /// each variant of an internally tagged enum (`kind`) is probed for its own fields.
    fn probe(
        text: &str,
        root: &toml::Table,
        path: Vec<Step>,
        table: &toml::Table,
        missing: &mut BTreeSet<String>,
    ) {
        let at = |name: &str| {
            let mut p: Vec<String> = path
                .iter()
                .map(|s| match s {
                    Step::Key(k) => k.clone(),
                    Step::Index(i) => format!("[{i}]"),
                })
                .collect();
            p.push(name.to_owned());
            p.join(".").replace(".[", "[")
        };
        let fields = deserialize_with(root, &path, |t| {
            t.insert("__probe".into(), toml::Value::Integer(1));
        })
        .unwrap_or_default();
        assert!(fields.contains("unknown field `__probe`"), "{}: probe not refused: {fields}", at(""));
        for field in expected_names(&fields) {
            if !mentions_key(text, &field) {
                missing.insert(at(&field));
            }
        }
        for (key, value) in table {
            let mut below = path.clone();
            below.push(Step::Key(key.clone()));
            match value {
                toml::Value::Table(t) => probe(text, root, below, t, missing),
                toml::Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let toml::Value::Table(t) = item {
                            let mut below = below.clone();
                            below.push(Step::Index(i));
                            probe(text, root, below, t, missing);
                        }
                    }
                }
                toml::Value::String(_) => {
                    let probe_value = |t: &mut toml::Table| {
                        t.insert(key.clone(), toml::Value::String("__probe".into()));
                    };
                    let Some(err) = deserialize_with(root, &path, probe_value) else { continue };
                    if !err.contains("unknown variant `__probe`") {
                        continue;
                    }
                    for variant in expected_names(&err) {
                        if !mentions_word(text, &variant) {
                            missing.insert(format!("{} = {variant:?}", at(key)));
                        }
                        if key != "kind" {
                            continue;
                        }
                        let only_variant = |t: &mut toml::Table| {
                            t.clear();
                            t.insert("kind".into(), toml::Value::String(variant.clone()));
                            t.insert("__probe".into(), toml::Value::Integer(1));
                        };
                        let err = deserialize_with(root, &path, only_variant).unwrap_or_default();
                        for field in expected_names(&err) {
                            if !mentions_key(text, &field) {
                                missing.insert(format!("{} ({variant})", at(&field)));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn example_mentions_every_setting() {
        let missing = unmentioned_settings(EXAMPLE);
        assert!(missing.is_empty(), "agent.example.toml does not mention these settings: {missing:?}");
    }

    #[test]
    fn a_setting_the_example_lacks_is_found() {
        let without = |needle: &str| -> String {
            EXAMPLE.lines().filter(|l| !l.contains(needle)).map(|l| format!("{l}\n")).collect()
        };
        let missing = unmentioned_settings(&without("ring_frames"));
        assert_eq!(missing, BTreeSet::from(["cameras[0].ring_frames".to_owned()]));
        let missing = unmentioned_settings(&without("\"gige\""));
        assert_eq!(missing, BTreeSet::from(["cameras[0].source.kind = \"gige\"".to_owned()]));
        let missing = unmentioned_settings(&without("pixel_format"));
        assert_eq!(missing, BTreeSet::from(["cameras[0].source.pixel_format (gige)".to_owned()]));
        let missing = unmentioned_settings(&without("\"pixelate\""));
        assert_eq!(missing, BTreeSet::from(["vision.anonymize.method = \"pixelate\"".to_owned()]));
    }

    const MINIMAL: &str = "version = 1\nagent_id = \"a\"\nsite_id = \"s\"\n\n[simulator]\nflow_veh_h_per_lane = 900\n\n[[cameras]]\nid = \"front\"\nlanes = [0, 1]\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse_and_validate(MINIMAL, None).unwrap();
        assert_eq!(c.site.lanes, 3);
        assert_eq!(c.cameras[0].fps, 10);
        assert_eq!(c.cameras[0].source, CameraSourceConfig::Simulator { width: 640, height: 360 });
    }

    #[test]
    fn bad_inputs_name_field_and_line() {
        // (replace this, with this, expected rendered error)
        let cases: &[(&str, &str, &str)] = &[
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = 0",
                "simulator.flow_veh_h_per_lane (line 6): must be between 1 and 3000, got 0",
            ),
            (
                "lanes = [0, 1]",
                "lanes = [0, 5]",
                "cameras[0].lanes (line 10): lane 5 is outside the site's lanes 0..3",
            ),
            ("version = 1", "version = 2", "version (line 1): unsupported config version 2, expected 1"),
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = 900\nbogus = 1",
                "simulator.bogus (line 7): unknown field `bogus`, expected one of `seed`, `flow_veh_h_per_lane`, `speed_kmh_mean`, `speed_kmh_stddev`, `class_mix`, `ground_truth_path`, `face_photos_path`, `hov_violation_share`",
            ),
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = \"fast\"",
                "simulator.flow_veh_h_per_lane (line 6): invalid type: string \"fast\", expected u32",
            ),
            (
                "lanes = [0, 1]",
                "lanes = [0, 1]\nfps = 0",
                "cameras[0].fps (line 11): must be between 1 and 120, got 0",
            ),
            (
                "id = \"front\"\nlanes = [0, 1]",
                "id = \"front\"\nlanes = [0]\n\n[[cameras]]\nid = \"front\"\nlanes = [1]",
                "cameras[1].id (line 13): duplicate camera id \"front\"",
            ),
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = 900\nclass_mix = { motorcycle = 0.5, car = 0.8, van = 0.1, truck = 0.06, bus = 0.02 }",
                "simulator.class_mix (line 7): shares must sum to 1, got 1.480",
            ),
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = 900\n[lidar]\nscan_hz = 500",
                "lidar.scan_hz (line 8): must be between 1 and 200, got 500",
            ),
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = 900\n[control_plane]\nmax_upload_bytes_per_sec = 10",
                "control_plane.max_upload_bytes_per_sec (line 8): must be between 1024 and 18446744073709551615, got 10",
            ),
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = 900\n[buffer.retention]\ncompliant_hours = 0",
                "buffer.retention.compliant_hours (line 8): must be between 1 and 87840, got 0",
            ),
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = 900\n[buffer]\nmax_bytes = 1000\n[buffer.retention]\nstatistics_hours = 2",
                "buffer.max_bytes (line 8): must be between 1048576 and 18446744073709551615, got 1000",
            ),
            (
                "flow_veh_h_per_lane = 900",
                "flow_veh_h_per_lane = 900\n[buffer.retention]\nstatistics_hours = 2\nkeep_forever = true",
                "buffer.retention.keep_forever (line 9): unknown field `keep_forever`, expected one of `statistics_hours`, `compliant_hours`, `violation_candidate_hours`, `sweep_interval_secs`",
            ),
            (
                "lanes = [0, 1]",
                "lanes = [0, 1]\n[cameras.source]\nkind = \"file_replay\"\npath = \"/nonexistent/lanewatch\"",
                "cameras[0].source.path (line 13): cannot read /nonexistent/lanewatch: No such file or directory (os error 2)",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(MINIMAL.contains(from), "{from}");
            let text = MINIMAL.replacen(from, to, 1);
            let err = parse_and_validate(&text, None).expect_err(to);
            assert_eq!(&err.to_string(), expected, "for input:\n{text}");
        }
    }

    #[test]
    fn client_certificate_needs_its_key_and_https() {
        let err = |cp: &str| {
            let text = MINIMAL.replacen(
                "flow_veh_h_per_lane = 900",
                &format!("flow_veh_h_per_lane = 900\n[control_plane]\n{cp}"),
                1,
            );
            parse_and_validate(&text, None).unwrap_err().to_string()
        };
        let https = "url = \"https://cp.example:7400\"\n";
        assert_eq!(
            err(&format!("{https}client_cert_path = \"a.pem\"")),
            "control_plane.client_cert_path (line 9): needs control_plane.client_key_path as well"
        );
        assert_eq!(
            err(&format!("{https}client_key_path = \"a.key\"")),
            "control_plane.client_key_path (line 9): needs control_plane.client_cert_path as well"
        );
        assert_eq!(
            err("client_cert_path = \"a.pem\"\nclient_key_path = \"a.key\""),
            "control_plane.client_cert_path (line 8): is only used with an https:// url, got \"http://127.0.0.1:7400\""
        );
        assert_eq!(
            err(&format!(
                "{https}client_cert_path = \"/nonexistent/a.pem\"\nclient_key_path = \"/nonexistent/a.key\""
            )),
            "control_plane.client_cert_path (line 9): file /nonexistent/a.pem does not exist"
        );
    }

    #[test]
    fn missing_agent_id_is_reported() {
        let err = parse_and_validate("version = 1\nsite_id = \"s\"\n", None).unwrap_err();
        assert!(err.message.contains("missing field `agent_id`"), "{err}");
    }

    #[test]
    fn file_replay_needs_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{MINIMAL}[cameras.source]\nkind = \"file_replay\"\npath = {:?}\n", dir.path());
        let err = parse_and_validate(&text, None).unwrap_err();
        assert_eq!(err.field, "cameras[0].source.path");
        std::fs::write(dir.path().join("a.jpg"), b"\xff\xd8").unwrap();
        parse_and_validate(&text, None).unwrap();
    }

    #[test]
    fn lidar_sources_check_their_own_fields() {
        let with = |lidar: &str| parse_and_validate(&format!("{MINIMAL}\n[lidar]\n{lidar}\n"), None);
        let err = |lidar: &str| with(lidar).unwrap_err().to_string();
        assert_eq!(err("source = \"sick\""), "lidar.address (line 12): is required with source = \"sick\"");
        assert_eq!(
            err("source = \"sick\"\naddress = \"scanner\""),
            "lidar.address (line 14): must be host:port, got \"scanner\""
        );
        assert_eq!(
            err("source = \"sick\"\naddress = \"scanner:0\""),
            "lidar.address (line 14): port must be 1..=65535, got \"0\""
        );
        let sick = with("source = \"sick\"\naddress = \"10.0.0.5:2111\"\nframing = \"cola_a\"").unwrap();
        assert_eq!(sick.lidar.framing, LidarFraming::ColaA);
        assert_eq!(sick.lidar.address.as_deref(), Some("10.0.0.5:2111"));
        assert_eq!(
            err("address = \"10.0.0.5:2111\""),
            "lidar.address (line 13): is only used with source = \"sick\""
        );
        assert_eq!(err("source = \"replay\""), "lidar.path (line 12): is required with source = \"replay\"");
        let missing = err("source = \"replay\"\npath = \"/nonexistent/scans.lwrec\"");
        assert!(
            missing.starts_with("lidar.path (line 14): recording /nonexistent/scans.lwrec: "),
            "{missing}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scans.lwrec");
        std::fs::write(&path, b"not a recording").unwrap();
        let bad = err(&format!("source = \"replay\"\npath = {path:?}"));
        assert!(bad.ends_with("not a lanewatch scan recording (bad magic at offset 0)"), "{bad}");
        std::fs::write(&path, crate::lidar::recording::encode_header(crate::lidar::sick::Framing::ColaB))
            .unwrap();
        let replay = with(&format!("source = \"replay\"\npath = {path:?}\nspeed = 0")).unwrap();
        assert_eq!(replay.lidar.speed, 0.0);
        assert_eq!(
            err(&format!("source = \"replay\"\npath = {path:?}\nspeed = -1")),
            "lidar.speed (line 15): must be between 0 and 1000, got -1"
        );
        assert_eq!(
            err("framing = \"cola_c\""),
            "lidar.framing (line 13): unknown variant `cola_c`, expected `cola_a` or `cola_b`"
        );
        assert_eq!(err("mount_y_m = 20.0"), "lidar.mount_y_m (line 13): must be between 0 and 10.5, got 20");
    }

    #[test]
    fn camera_sources_and_speed_plane_check_their_fields() {
        let with = |extra: &str| parse_and_validate(&format!("{MINIMAL}{extra}"), None);
        let err = |extra: &str| with(extra).unwrap_err().to_string();
        let c = with("stall_after_ms = 500\ndistance_from_lidar_m = 6.5\n[cameras.source]\nkind = \"opencv\"\nuri = \"frames/%04d.jpg\"\nbackend = \"images\"\n").unwrap();
        assert_eq!(c.cameras[0].stall_after_ms(), 500);
        assert_eq!(c.cameras[0].distance_from_lidar_m, Some(6.5));
        assert!(
            matches!(&c.cameras[0].source, CameraSourceConfig::Opencv { uri, backend: OpencvBackend::Images, .. } if uri == "frames/%04d.jpg")
        );
        assert_eq!(parse_and_validate(MINIMAL, None).unwrap().cameras[0].stall_after_ms(), 2000, "default");
        let g = with("[cameras.source]\nkind = \"gige\"\npixel_format = \"BayerRG8\"\n").unwrap();
        assert!(matches!(
            &g.cameras[0].source,
            CameraSourceConfig::Gige { device_id: None, packet_size: None, .. }
        ));
        assert_eq!(
            err("stall_after_ms = 50\n"),
            "cameras[0].stall_after_ms (line 11): must be between 200 and 600000, got 50"
        );
        assert_eq!(
            err("[cameras.source]\nkind = \"gige\"\npacket_size = 100\n"),
            "cameras[0].source.packet_size (line 13): must be between 576 and 16384, got 100"
        );
        assert_eq!(
            err("[cameras.source]\nkind = \"opencv\"\nuri = \" \"\n"),
            "cameras[0].source.uri (line 13): must not be empty"
        );
        assert_eq!(
            err("[cameras.source]\nkind = \"v4l\"\n"),
            "cameras.source.kind (line 12): unknown variant `v4l`, expected one of `simulator`, `file_replay`, `opencv`, `gige`"
        );
        assert_eq!(
            with("[lidar]\nspeed_plane_offset_m = 4.0\n").unwrap().lidar.speed_plane_offset_m,
            Some(4.0)
        );
        assert_eq!(
            err("[lidar]\nsource = \"sick\"\naddress = \"10.0.0.5:2111\"\nspeed_plane_offset_m = 4.0\n"),
            "lidar.speed_plane_address (line 11): is required with source = \"sick\" and speed_plane_offset_m"
        );
        with("[lidar]\nsource = \"sick\"\naddress = \"10.0.0.5:2111\"\nspeed_plane_offset_m = 4.0\nspeed_plane_address = \"10.0.0.6:2111\"\n").unwrap();
        assert_eq!(
            err("[lidar]\nspeed_plane_address = \"10.0.0.6:2111\"\n"),
            "lidar.speed_plane_address (line 12): is only used with source = \"sick\""
        );
    }

    #[test]
    fn stamps_config_version() {
        let stamped = stamp_config_version(MINIMAL, 7);
        assert_eq!(parse_and_validate(&stamped, None).unwrap().config_version, 7);
        let restamped = stamp_config_version(&stamped, 9);
        assert_eq!(parse_and_validate(&restamped, None).unwrap().config_version, 9);
    }
}
