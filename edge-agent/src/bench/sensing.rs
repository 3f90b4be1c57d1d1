//! `lanewatch-agent bench sensing`: runs the traffic simulator and the real detector, speed trap
//! and trigger routing in-process, faster than real time, over scenarios with ground truth, and
//! reports detection precision/recall, class accuracy, speed and trigger errors and the
//! detector's processing time against the scan period.
//!
//! Scans go straight from `sim::lidar` to [`Detector::process`] (no SICK codec, no TCP): the
//! codec and driver have their own tests; this measures what the detector makes of the scene.
//!
//! **Matching rule.** A ground-truth vehicle occupies the main scan plane from the instant its
//! front reaches x = 0 to the instant its rear leaves it, in every lane its body overlaps by at
//! least [`LANE_OVERLAP_M`]. A detection occupies its lane from its entry to its exit. A
//! detection matches a vehicle when its lane is one of the vehicle's lanes and the two intervals
//! overlap (each widened by [`MATCH_TOLERANCE_SCANS`] scan periods). Matching is one-to-one,
//! greedy in entry order, largest overlap first: a vehicle detected twice (in two lanes, or split
//! in two) gives one match and one false detection. Vehicles whose front crosses in the first
//! [`WARMUP_S`] (road learning) or the last [`TAIL_S`] of a run, or whose passage overlaps a
//! sensor dropout, are not counted for recall; detections are counted for precision by the same
//! window, dropouts included (a detection nobody explains during a dropout is a phantom).
//! Precision = matched detections / detections, recall = matched vehicles / vehicles.
//!
//! **Trigger error** = |trigger instant − instant the vehicle's front reaches the camera's target
//! point|, the target point being the distance a vehicle at [`DESIGN_SPEED_KMH`] covers in the
//! config's default `cameras[].trigger_delay_ms` (the camera's `distance_from_lidar_m`), and the
//! trigger instant what the agent's trigger makes of it: entry + distance / the speed measured
//! at entry, or entry + the fixed delay when no speed was measured
//! ([`trigger::trigger_delay`]). **Speed** comes from a second scan plane [`SPEED_PLANE_M`]
//! upstream ([`SpeedTrap`]): at entry for the trigger, entry and exit averaged for the report.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::config::ClassMix;
use crate::detect::{Detector, SpeedTrap};
use crate::domain::{AcquireRequest, Detection, Scan, ScanGeometry, VehicleClass};
use crate::sim::lidar::{Weather, scan_world_at};
use crate::sim::{SPAWN_X_M, TrafficParams, TrailerGap, World};
use crate::stage::Outlet;
use crate::trigger::{self, CameraRoute};

/// Speed the delay was set for: the target point is where such a vehicle is after the delay.
pub const DESIGN_SPEED_KMH: f64 = 100.0;
/// Distance of the speed plane upstream of the main plane, metres.
pub const SPEED_PLANE_M: f64 = 4.0;
/// Body overlap with a lane for a vehicle to count as in it, metres.
pub const LANE_OVERLAP_M: f64 = 0.3;
pub const MATCH_TOLERANCE_SCANS: f64 = 2.0;
pub const WARMUP_S: f64 = 1.0;
pub const TAIL_S: f64 = 2.0;
/// Bumper-to-bumper gap of tailgating followers in the capacity scenarios, metres (0.25 s
/// headway gap at 100 km/h, a car length in front-to-front distance about 0.45 s).
pub const TAILGATE_GAP_M: f64 = 3.0;

#[derive(Debug, Clone)]
pub struct SensingOptions {
    /// Simulated seconds of each main scenario (the scripted ones run a quarter of it, at least 30 s).
    pub seconds: f64,
    pub seed: u64,
}

impl Default for SensingOptions {
    fn default() -> Self {
        Self { seconds: 300.0, seed: 1 }
    }
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub scan_hz: f64,
    pub simulated_s: f64,
    pub vehicles: usize,
    pub detections: usize,
    pub precision: f64,
    pub recall: f64,
    pub class_accuracy: f64,
    pub trigger_error_ms: f64,
    pub speed_error_kmh: Option<f64>,
    /// Scans the detector reported degraded.
    pub degraded_scans: u64,
    /// Unmatched detections during or within a second after a dropout.
    pub dropout_phantoms: usize,
}

/// The figures, as printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct SensingReport {
    /// Dry traffic at capacity (2,200 veh/h/lane, 3 lanes, tailgating), 50 Hz.
    pub detection_precision: f64,
    pub detection_recall: f64,
    /// Rain and spray at 1,800 veh/h/lane, 50 Hz.
    pub rain_precision: f64,
    pub rain_recall: f64,
    /// Over matched vehicles of every scenario.
    pub class_accuracy: f64,
    /// Mean absolute error of the two-plane speed, every scenario.
    pub speed_error_kmh: Option<f64>,
    /// Mean over matched vehicles of the dry capacity scenario.
    pub trigger_error_ms: f64,
    pub trigger_error_p99_ms: f64,
    /// The same with the fixed delay alone (no speed), for comparison.
    pub trigger_error_fixed_delay_ms: f64,
    /// Mean detector time per scan over the scan period.
    pub scan_period_ratio_100hz: f64,
    pub scan_period_ratio_50hz: f64,
    pub scan_process_mean_ms: f64,
    pub scan_process_p99_ms: f64,
    /// From receiving the scan that completes an entry to the trigger's acquisition request.
    pub scan_to_trigger_p50_ms: f64,
    pub scan_to_trigger_p99_ms: f64,
    pub scenarios: Vec<ScenarioReport>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Script {
    None,
    /// A vehicle straddling two lanes every 1.5 s.
    Straddlers,
    /// A truck towing a trailer (about 1 m gap) every 2 s.
    Trailers,
}

#[derive(Debug, Clone)]
struct Scenario {
    name: &'static str,
    scan_hz: f64,
    flow: f64,
    weather: Weather,
    seconds: f64,
    script: Script,
    /// Sensor dropout, seconds since start.
    dropout: Option<(f64, f64)>,
}

#[derive(Debug, Clone)]
struct Truth {
    lanes: Vec<u32>,
    class: VehicleClass,
    speed_kmh: f64,
    front_at: f64,
    rear_at: Option<f64>,
    target_at: Option<f64>,
}

#[derive(Debug, Clone)]
struct Det {
    lane: u32,
    entry: f64,
    exit: Option<f64>,
    class: Option<VehicleClass>,
    trigger_at: f64,
    /// Entry + the fixed delay, what the trigger does without a speed.
    trigger_fixed_at: f64,
    speed_kmh: Option<f64>,
}

#[derive(Debug, Default)]
struct Samples {
    process_s: Vec<f64>,
    entry_latency_s: Vec<f64>,
    trigger_errors_ms: Vec<f64>,
    trigger_fixed_errors_ms: Vec<f64>,
    class_ok: usize,
    class_n: usize,
    speed_errors: Vec<f64>,
}

/// The scan geometry of the bench: a scanner 6.5 m above the middle of three 3.5 m lanes.
pub fn geometry() -> ScanGeometry {
    ScanGeometry {
        mounting_height_m: 6.5,
        mount_y_m: 5.25,
        fov_deg: 120.0,
        angular_step_deg: 0.25,
        lanes: 3,
        lane_width_m: 3.5,
    }
}

/// Runs every scenario.
pub fn run(options: &SensingOptions) -> SensingReport {
    let s = options.seconds.max(10.0);
    let short = (s / 4.0).max(30.0);
    let scenarios = [
        Scenario {
            name: "dry_capacity",
            scan_hz: 50.0,
            flow: 2200.0,
            weather: Weather::CLEAR,
            seconds: s,
            script: Script::None,
            dropout: None,
        },
        Scenario {
            name: "dry_capacity_100hz",
            scan_hz: 100.0,
            flow: 2200.0,
            weather: Weather::CLEAR,
            seconds: s,
            script: Script::None,
            dropout: None,
        },
        Scenario {
            name: "rain",
            scan_hz: 50.0,
            flow: 1800.0,
            weather: Weather::RAIN,
            seconds: s,
            script: Script::None,
            dropout: None,
        },
        Scenario {
            name: "lane_change",
            scan_hz: 50.0,
            flow: 0.0,
            weather: Weather::CLEAR,
            seconds: short,
            script: Script::Straddlers,
            dropout: None,
        },
        Scenario {
            name: "trailer",
            scan_hz: 50.0,
            flow: 0.0,
            weather: Weather::CLEAR,
            seconds: short,
            script: Script::Trailers,
            dropout: None,
        },
        Scenario {
            name: "dropout",
            scan_hz: 50.0,
            flow: 1800.0,
            weather: Weather::CLEAR,
            seconds: short,
            script: Script::None,
            dropout: Some((short / 2.0, short / 2.0 + 3.0)),
        },
    ];
    let mut reports = Vec::new();
    let mut all = Samples::default();
    let mut dry = Samples::default();
    let mut process_100 = Vec::new();
    let mut process_50 = Vec::new();
    for (i, scenario) in scenarios.iter().enumerate() {
        let (report, samples) = run_scenario(scenario, options.seed.wrapping_add(i as u64));
        if scenario.name == "dry_capacity" {
            dry.trigger_errors_ms.clone_from(&samples.trigger_errors_ms);
            dry.trigger_fixed_errors_ms.clone_from(&samples.trigger_fixed_errors_ms);
        }
        if scenario.scan_hz == 100.0 {
            process_100.extend_from_slice(&samples.process_s);
        } else {
            process_50.extend_from_slice(&samples.process_s);
        }
        all.entry_latency_s.extend(samples.entry_latency_s);
        all.class_ok += samples.class_ok;
        all.class_n += samples.class_n;
        all.speed_errors.extend(samples.speed_errors);
        all.process_s.extend(samples.process_s);
        reports.push(report);
    }
    let by_name = |name: &str| reports.iter().find(|r| r.name == name).expect("scenario ran");
    let (dry_report, rain_report) = (by_name("dry_capacity"), by_name("rain"));
    let ms = 1e3;
    SensingReport {
        detection_precision: dry_report.precision,
        detection_recall: dry_report.recall,
        rain_precision: rain_report.precision,
        rain_recall: rain_report.recall,
        class_accuracy: ratio(all.class_ok, all.class_n),
        speed_error_kmh: (!all.speed_errors.is_empty()).then(|| mean(&all.speed_errors)),
        trigger_error_ms: mean(&dry.trigger_errors_ms),
        trigger_error_p99_ms: percentile(&mut dry.trigger_errors_ms, 0.99),
        trigger_error_fixed_delay_ms: mean(&dry.trigger_fixed_errors_ms),
        scan_period_ratio_100hz: mean(&process_100) / 0.010,
        scan_period_ratio_50hz: mean(&process_50) / 0.020,
        scan_process_mean_ms: mean(&all.process_s) * ms,
        scan_process_p99_ms: percentile(&mut all.process_s, 0.99) * ms,
        scan_to_trigger_p50_ms: percentile(&mut all.entry_latency_s, 0.50) * ms,
        scan_to_trigger_p99_ms: percentile(&mut all.entry_latency_s, 0.99) * ms,
        scenarios: reports,
    }
}

fn run_scenario(sc: &Scenario, seed: u64) -> (ScenarioReport, Samples) {
    let g = geometry();
    let params = TrafficParams {
        lanes: g.lanes,
        lane_width_m: g.lane_width_m,
        flow_veh_h_per_lane: sc.flow,
        speed_kmh_mean: 100.0,
        speed_kmh_stddev: 10.0,
        class_mix: ClassMix::default(),
    };
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let mut world = World::new(params, seed, epoch);
    world.set_min_gap_m(TAILGATE_GAP_M);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_5eed);
    let (mut main, mut upstream) = (Detector::new(g), Detector::new(g));
    let mut trap = SpeedTrap::new(SPEED_PLANE_M);
    let trigger_delay_ms = crate::config::defaults::trigger_delay_ms();
    let target_x_m = DESIGN_SPEED_KMH / 3.6 * trigger_delay_ms as f64 / 1e3;
    let routes = vec![CameraRoute {
        camera_id: "bench".into(),
        lanes: (0..g.lanes).collect(),
        trigger_delay_ms,
        distance_from_lidar_m: Some(target_x_m),
        output: Outlet::closed(),
    }];
    let secs = |t: DateTime<Utc>| (t - epoch).num_microseconds().unwrap_or(0) as f64 / 1e6;

    let mut truths: BTreeMap<u64, Truth> = BTreeMap::new();
    let mut dets: BTreeMap<u64, Det> = BTreeMap::new();
    let mut samples = Samples::default();
    let mut next_script = 2.0;
    let period = 1.0 / sc.scan_hz;
    let steps = (sc.seconds * sc.scan_hz) as u64;
    let beams = g.beams();
    for k in 1..=steps {
        let t = k as f64 * period;
        world.advance_to(t);
        while sc.script != Script::None && next_script <= t {
            script_vehicle(&mut world, &mut rng, sc.script, g.lane_width_m);
            next_script += if sc.script == Script::Straddlers { 1.5 } else { 2.0 };
        }
        observe(&world, &mut truths, t, target_x_m, g.lane_width_m, g.lanes);

        let blind = sc.dropout.is_some_and(|(a, b)| t >= a && t < b);
        let mut sample = |x_m: f64| {
            if blind { vec![0.0; beams] } else { scan_world_at(&world, &g, x_m, sc.weather, &mut rng) }
        };
        let up_scan = Scan { t: world.now(), ranges_m: sample(-SPEED_PLANE_M) };
        let scan = Scan { t: world.now(), ranges_m: sample(0.0) };
        for event in upstream.process(&up_scan) {
            trap.upstream(&event);
        }

        let started = Instant::now();
        let events = main.process(&scan);
        let processed = started.elapsed();
        for event in &events {
            let speed = match event {
                Detection::Entry { track, .. } => {
                    trap.main(event);
                    trap.entry_speed_kmh(*track)
                }
                Detection::Exit { .. } => None,
            };
            let requests = trigger::route_with_speed(&routes, event, speed);
            if let Detection::Entry { track, lane, t } = event {
                samples.entry_latency_s.push(started.elapsed().as_secs_f64());
                let trigger_at = requests
                    .iter()
                    .find_map(|(_, r)| match r {
                        AcquireRequest::Take { trigger_at, .. } => Some(secs(*trigger_at)),
                        AcquireRequest::Finalize { .. } | AcquireRequest::Test { .. } => None,
                    })
                    .unwrap_or(f64::NAN);
                dets.insert(
                    *track,
                    Det {
                        lane: *lane,
                        entry: secs(*t),
                        exit: None,
                        class: None,
                        trigger_at,
                        trigger_fixed_at: secs(*t) + trigger_delay_ms as f64 / 1e3,
                        speed_kmh: None,
                    },
                );
            }
        }
        samples.process_s.push(processed.as_secs_f64());
        for event in events.iter().filter(|e| matches!(e, Detection::Exit { .. })) {
            let speed = trap.main(event);
            if let Detection::Exit { track, t, class, .. } = event
                && let Some(det) = dets.get_mut(track)
            {
                det.exit = Some(secs(*t));
                det.class = Some(*class);
                det.speed_kmh = speed;
            }
        }
    }
    let report = evaluate(sc, &truths, &dets, &mut samples, main.degraded_scans());
    (report, samples)
}

/// Inserts one scripted vehicle upstream: a lane-straddler or a truck with trailer.
fn script_vehicle(world: &mut World, rng: &mut StdRng, script: Script, lane_w: f64) {
    let speed_kmh = rng.random_range(60.0..110.0);
    match script {
        Script::None => {}
        Script::Straddlers => {
            let boundary: u32 = rng.random_range(1..=2);
            let class = [VehicleClass::Car, VehicleClass::Car, VehicleClass::Van, VehicleClass::Truck]
                [rng.random_range(0..4)];
            let truth = world.insert_vehicle(boundary - 1, class, speed_kmh, SPAWN_X_M);
            let offset: f64 = rng.random_range(-0.4..0.4);
            if let Some(v) = world.vehicle_mut(truth.vehicle_id) {
                v.y_center_m = f64::from(boundary) * lane_w + offset;
            }
        }
        Script::Trailers => {
            let lane = rng.random_range(0..3);
            let truth = world.insert_vehicle(lane, VehicleClass::Truck, speed_kmh, SPAWN_X_M);
            let (tractor, gap, trailer) =
                (rng.random_range(5.5..7.0), rng.random_range(0.8..1.2), rng.random_range(7.0..12.0));
            if let Some(v) = world.vehicle_mut(truth.vehicle_id) {
                v.truth.length_m = tractor + gap + trailer;
                v.trailer_gap = Some(TrailerGap { from_front_m: tractor, gap_m: gap });
            }
        }
    }
}

/// Records when each vehicle's front and rear cross the main plane and its front reaches the
/// camera's target point, interpolated within the step.
fn observe(
    world: &World,
    truths: &mut BTreeMap<u64, Truth>,
    t: f64,
    target_x_m: f64,
    lane_w: f64,
    lanes: u32,
) {
    for v in world.vehicles() {
        let id = v.truth.vehicle_id;
        let speed = v.speed_mps.max(1e-6);
        if v.x_front_m < 0.0 {
            continue;
        }
        let truth = truths.entry(id).or_insert_with(|| {
            let (y0, y1) = (v.y_center_m - v.truth.width_m / 2.0, v.y_center_m + v.truth.width_m / 2.0);
            let lanes = (0..lanes)
                .filter(|&l| {
                    let (lo, hi) = (f64::from(l) * lane_w, f64::from(l + 1) * lane_w);
                    y1.min(hi) - y0.max(lo) >= LANE_OVERLAP_M
                })
                .collect();
            Truth {
                lanes,
                class: v.truth.class,
                speed_kmh: v.speed_mps * 3.6,
                front_at: t - v.x_front_m / speed,
                rear_at: None,
                target_at: None,
            }
        });
        let rear = v.x_front_m - v.truth.length_m;
        if truth.rear_at.is_none() && rear >= 0.0 {
            truth.rear_at = Some(t - rear / speed);
        }
        if truth.target_at.is_none() && v.x_front_m >= target_x_m {
            truth.target_at = Some(t - (v.x_front_m - target_x_m) / speed);
        }
    }
}

fn evaluate(
    sc: &Scenario,
    truths: &BTreeMap<u64, Truth>,
    dets: &BTreeMap<u64, Det>,
    samples: &mut Samples,
    degraded_scans: u64,
) -> ScenarioReport {
    let end = sc.seconds;
    let tol = MATCH_TOLERANCE_SCANS / sc.scan_hz;
    let in_window = |t: f64| t >= WARMUP_S && t <= end - TAIL_S;
    let near_dropout = |a: f64, b: f64| sc.dropout.is_some_and(|(d0, d1)| a <= d1 + 0.2 && b >= d0 - 0.2);
    let truth_list: Vec<(&u64, &Truth)> = truths.iter().collect();
    let mut truth_matched = vec![None::<u64>; truth_list.len()];
    let mut det_order: Vec<(&u64, &Det)> = dets.iter().collect();
    det_order.sort_by(|a, b| a.1.entry.total_cmp(&b.1.entry));
    let mut det_matched: BTreeMap<u64, usize> = BTreeMap::new();
    for (id, det) in &det_order {
        let (d0, d1) = (det.entry - tol, det.exit.unwrap_or(end) + tol);
        let best = truth_list
            .iter()
            .enumerate()
            .filter(|(i, (_, tr))| truth_matched[*i].is_none() && tr.lanes.contains(&det.lane))
            .map(|(i, (_, tr))| {
                let (t0, t1) = (tr.front_at - tol, tr.rear_at.unwrap_or(end) + tol);
                (i, t1.min(d1) - t0.max(d0))
            })
            .filter(|(_, overlap)| *overlap > 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((i, _)) = best {
            truth_matched[i] = Some(**id);
            det_matched.insert(**id, i);
        }
    }

    let counted_truths: Vec<usize> = (0..truth_list.len())
        .filter(|&i| {
            let tr = truth_list[i].1;
            in_window(tr.front_at) && !near_dropout(tr.front_at, tr.rear_at.unwrap_or(end))
        })
        .collect();
    let recalled = counted_truths.iter().filter(|&&i| truth_matched[i].is_some()).count();
    let counted_dets: Vec<(&u64, &Det)> =
        det_order.iter().copied().filter(|(_, d)| in_window(d.entry)).collect();
    let precise = counted_dets.iter().filter(|(id, _)| det_matched.contains_key(id)).count();
    let dropout_phantoms = counted_dets
        .iter()
        .filter(|(id, d)| !det_matched.contains_key(id) && near_dropout(d.entry - 1.0, d.entry))
        .count();

    let (mut class_ok, mut class_n) = (0, 0);
    let mut trigger_errors = Vec::new();
    let mut trigger_fixed_errors = Vec::new();
    let mut speed_errors = Vec::new();
    for (id, det) in &counted_dets {
        let Some(&i) = det_matched.get(id) else { continue };
        let tr = truth_list[i].1;
        if let Some(class) = det.class {
            class_n += 1;
            class_ok += usize::from(class == tr.class);
        }
        if let Some(target) = tr.target_at {
            trigger_errors.push((det.trigger_at - target).abs() * 1e3);
            trigger_fixed_errors.push((det.trigger_fixed_at - target).abs() * 1e3);
        }
        if let Some(speed) = det.speed_kmh {
            speed_errors.push((speed - tr.speed_kmh).abs());
        }
    }
    let report = ScenarioReport {
        name: sc.name.to_owned(),
        scan_hz: sc.scan_hz,
        simulated_s: sc.seconds,
        vehicles: counted_truths.len(),
        detections: counted_dets.len(),
        precision: ratio(precise, counted_dets.len()),
        recall: ratio(recalled, counted_truths.len()),
        class_accuracy: ratio(class_ok, class_n),
        trigger_error_ms: mean(&trigger_errors),
        speed_error_kmh: (!speed_errors.is_empty()).then(|| mean(&speed_errors)),
        degraded_scans,
        dropout_phantoms,
    };
    samples.class_ok = class_ok;
    samples.class_n = class_n;
    samples.trigger_errors_ms = trigger_errors;
    samples.trigger_fixed_errors_ms = trigger_fixed_errors;
    samples.speed_errors = speed_errors;
    report
}

fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 { 1.0 } else { n as f64 / d as f64 }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

impl SensingReport {
    /// The human table.
    pub fn table(&self) -> String {
        let pct = |x: f64| format!("{:.2}%", x * 100.0);
        let mut out = format!(
            "{:<20} {:>5} {:>7} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>8}\n",
            "scenario",
            "hz",
            "sim s",
            "vehicles",
            "precision",
            "recall",
            "class",
            "trig ms",
            "speed kmh",
            "degraded"
        );
        for s in &self.scenarios {
            out += &format!(
                "{:<20} {:>5} {:>7.0} {:>9} {:>9} {:>8} {:>8} {:>9.1} {:>9} {:>8}\n",
                s.name,
                s.scan_hz,
                s.simulated_s,
                s.vehicles,
                pct(s.precision),
                pct(s.recall),
                pct(s.class_accuracy),
                s.trigger_error_ms,
                s.speed_error_kmh.map_or_else(|| "-".to_owned(), |e| format!("{e:.2}")),
                s.degraded_scans,
            );
        }
        out += &format!(
            "\ndry at capacity: precision {}, recall {}; rain: precision {}, recall {}\n",
            pct(self.detection_precision),
            pct(self.detection_recall),
            pct(self.rain_precision),
            pct(self.rain_recall)
        );
        out += &format!(
            "class accuracy {}, speed error {}, trigger error {:.1} ms (p99 {:.1} ms; fixed delay {:.1} ms)\n",
            pct(self.class_accuracy),
            self.speed_error_kmh.map_or_else(|| "n/a".to_owned(), |e| format!("{e:.2} km/h")),
            self.trigger_error_ms,
            self.trigger_error_p99_ms,
            self.trigger_error_fixed_delay_ms
        );
        out += &format!(
            "detector per scan: mean {:.3} ms, p99 {:.3} ms; of the period: {:.3} at 100 Hz, {:.3} at 50 Hz\n",
            self.scan_process_mean_ms,
            self.scan_process_p99_ms,
            self.scan_period_ratio_100hz,
            self.scan_period_ratio_50hz
        );
        out += &format!(
            "scan to trigger decision: p50 {:.3} ms, p99 {:.3} ms\n",
            self.scan_to_trigger_p50_ms, self.scan_to_trigger_p99_ms
        );
        out
    }
}
