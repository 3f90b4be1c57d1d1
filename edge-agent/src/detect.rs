//! Vehicle detection from overhead scans: learns the empty road, finds object points per lane
//! zone and turns occupied/free runs into Entry/Exit events with a class guess.
//!
//! An object point is a beam whose return is more than [`OBJECT_MIN_HEIGHT_M`] above the learnt
//! road. A lane zone is occupied when it holds at least [`MIN_POINTS`] object points; a vehicle
//! enters after [`ENTRY_SCANS`] consecutive occupied scans and exits after [`EXIT_SCANS`] free ones.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, mpsc};

use crate::domain::{Detection, Scan, ScanGeometry, VehicleClass};
use crate::pipeline::Outlet;
use crate::supervisor::{Component, ComponentCtx, RunFuture};

pub const OBJECT_MIN_HEIGHT_M: f64 = 0.4;
pub const MIN_POINTS: usize = 3;
pub const ENTRY_SCANS: u32 = 2;
pub const EXIT_SCANS: u32 = 3;
/// Scans used to learn the empty-road profile (per-beam median).
pub const LEARN_SCANS: usize = 25;
/// Weight of a new free-beam range in the road profile.
const ADAPT_RATE: f64 = 0.01;

#[derive(Debug, Default)]
struct LaneState {
    occupied_run: u32,
    free_run: u32,
    first_occupied_at: Option<DateTime<Utc>>,
    last_occupied_at: Option<DateTime<Utc>>,
    track: Option<Track>,
    /// Height and width seen before the entry was confirmed.
    early_height_m: f64,
    early_width_m: f64,
}

#[derive(Debug)]
struct Track {
    id: u64,
    entered_at: DateTime<Utc>,
    max_height_m: f64,
    width_m: f64,
}

/// The detector's state machine; pure, one scan at a time.
pub struct Detector {
    geometry: ScanGeometry,
    learning: Vec<Vec<f32>>,
    road: Vec<f64>,
    lanes: Vec<LaneState>,
    next_track: u64,
}

impl Detector {
    pub fn new(geometry: ScanGeometry) -> Self {
        let lanes = (0..geometry.lanes).map(|_| LaneState::default()).collect();
        Self { geometry, learning: Vec::new(), road: Vec::new(), lanes, next_track: 1 }
    }

    pub fn learnt(&self) -> bool {
        !self.road.is_empty()
    }

    pub fn process(&mut self, scan: &Scan) -> Vec<Detection> {
        let beams = self.geometry.beams();
        if scan.ranges_m.len() != beams {
            tracing::warn!(
                expected = beams,
                got = scan.ranges_m.len(),
                "scan with unexpected beam count ignored"
            );
            return vec![];
        }
        if !self.learnt() {
            self.learning.push(scan.ranges_m.clone());
            if self.learning.len() >= LEARN_SCANS {
                self.road = (0..beams)
                    .map(|i| {
                        let mut v: Vec<f32> = self.learning.iter().map(|s| s[i]).collect();
                        v.sort_by(f32::total_cmp);
                        f64::from(v[v.len() / 2])
                    })
                    .collect();
                self.learning.clear();
                tracing::info!(beams, "empty road profile learnt");
            }
            return vec![];
        }

        let lane_count = self.geometry.lanes as usize;
        let mut points = vec![0usize; lane_count];
        let mut max_h = vec![0f64; lane_count];
        let mut y_range = vec![(f64::INFINITY, f64::NEG_INFINITY); lane_count];
        for (i, &r) in scan.ranges_m.iter().enumerate() {
            let theta = self.geometry.beam_angle(i);
            let r = f64::from(r);
            let height = (self.road[i] - r) * theta.cos();
            if height > OBJECT_MIN_HEIGHT_M {
                let y = self.geometry.mount_y_m + r * theta.sin();
                let lane = (y / self.geometry.lane_width_m).floor();
                if lane >= 0.0 && (lane as usize) < lane_count {
                    let lane = lane as usize;
                    points[lane] += 1;
                    max_h[lane] = max_h[lane].max(height);
                    y_range[lane] = (y_range[lane].0.min(y), y_range[lane].1.max(y));
                }
            } else if height.abs() < OBJECT_MIN_HEIGHT_M / 2.0 {
                self.road[i] += ADAPT_RATE * (r - self.road[i]);
            }
        }

        let mut events = Vec::new();
        for (lane, state) in self.lanes.iter_mut().enumerate() {
            let occupied = points[lane] >= MIN_POINTS;
            let width = if occupied { y_range[lane].1 - y_range[lane].0 } else { 0.0 };
            if occupied {
                state.free_run = 0;
                state.occupied_run += 1;
                if state.occupied_run == 1 {
                    state.first_occupied_at = Some(scan.t);
                    state.early_height_m = 0.0;
                    state.early_width_m = 0.0;
                }
                state.last_occupied_at = Some(scan.t);
                match &mut state.track {
                    Some(track) => {
                        track.max_height_m = track.max_height_m.max(max_h[lane]);
                        track.width_m = track.width_m.max(width);
                    }
                    None => {
                        state.early_height_m = state.early_height_m.max(max_h[lane]);
                        state.early_width_m = state.early_width_m.max(width);
                        if state.occupied_run >= ENTRY_SCANS {
                            let entered_at = state.first_occupied_at.unwrap_or(scan.t);
                            let id = self.next_track;
                            self.next_track += 1;
                            state.track = Some(Track {
                                id,
                                entered_at,
                                max_height_m: state.early_height_m,
                                width_m: state.early_width_m,
                            });
                            events.push(Detection::Entry { track: id, lane: lane as u32, t: entered_at });
                        }
                    }
                }
            } else {
                state.occupied_run = 0;
                state.free_run += 1;
                if state.free_run >= EXIT_SCANS
                    && let Some(track) = state.track.take()
                {
                    let t = state.last_occupied_at.unwrap_or(scan.t);
                    let duration_s = (t - track.entered_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
                    events.push(Detection::Exit {
                        track: track.id,
                        lane: lane as u32,
                        t,
                        max_height_m: track.max_height_m as f32,
                        width_m: track.width_m as f32,
                        class: classify(track.max_height_m, track.width_m, duration_s),
                    });
                }
            }
        }
        events
    }
}

/// Class from height, width and time in the scan plane.
pub fn classify(height_m: f64, width_m: f64, duration_s: f64) -> VehicleClass {
    if width_m < 1.2 {
        VehicleClass::Motorcycle
    } else if height_m < 1.95 {
        VehicleClass::Car
    } else if height_m < 2.8 || duration_s < 0.25 {
        // tall but short-lived: a van, not a truck or bus
        VehicleClass::Van
    } else if height_m >= 3.5 {
        VehicleClass::Truck
    } else {
        VehicleClass::Bus
    }
}

/// Appends every detection as one JSON line (`lanewatch-agent --detections-out`), for labs and
/// replay comparisons: `{"event":"entry","track":1,"lane":0,"t":"..."}` or
/// `{"event":"exit","track":1,"lane":0,"t":"...","class":"car","max_height_m":1.52,"width_m":1.8}`.
#[derive(Clone)]
pub struct DetectionLog {
    out: Arc<std::sync::Mutex<std::io::BufWriter<std::fs::File>>>,
}

impl DetectionLog {
    pub fn create(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let file = std::fs::File::create(path)
            .with_context(|| format!("creating detections file {}", path.display()))?;
        Ok(Self { out: Arc::new(std::sync::Mutex::new(std::io::BufWriter::new(file))) })
    }

    /// The JSON line of one detection.
    pub fn line(event: &Detection) -> serde_json::Value {
        match event {
            Detection::Entry { track, lane, t } => {
                serde_json::json!({ "event": "entry", "track": track, "lane": lane, "t": t })
            }
            Detection::Exit { track, lane, t, max_height_m, width_m, class } => serde_json::json!({
                "event": "exit", "track": track, "lane": lane, "t": t, "class": class,
                "max_height_m": max_height_m, "width_m": width_m,
            }),
        }
    }

    pub fn write(&self, event: &Detection) -> std::io::Result<()> {
        use std::io::Write;
        let mut out = self.out.lock().unwrap();
        writeln!(out, "{}", Self::line(event))?;
        out.flush()
    }
}

/// The `detect` component: scans in, detections out.
pub struct DetectComponent {
    pub geometry: ScanGeometry,
    pub input: Arc<Mutex<mpsc::Receiver<Scan>>>,
    pub output: Outlet<Detection>,
    pub log: Option<DetectionLog>,
}

impl Component for DetectComponent {
    fn name(&self) -> String {
        "detect".into()
    }

    fn run(&self, ctx: ComponentCtx) -> RunFuture {
        let (geometry, input, output) = (self.geometry, self.input.clone(), self.output.clone());
        let log = self.log.clone();
        Box::pin(async move {
            let mut detector = Detector::new(geometry);
            let mut input = input.lock().await;
            let (mut entries, mut exits) = (0u64, 0u64);
            while let Some(scan) = input.recv().await {
                for event in detector.process(&scan) {
                    match &event {
                        Detection::Entry { track, lane, .. } => {
                            entries += 1;
                            tracing::debug!(track, lane, "vehicle entered");
                        }
                        Detection::Exit { track, lane, class, max_height_m, .. } => {
                            exits += 1;
                            tracing::debug!(track, lane, ?class, max_height_m, "vehicle exited");
                        }
                    }
                    if let Some(log) = &log
                        && let Err(err) = log.write(&event)
                    {
                        tracing::warn!(error = %err, "cannot write detection line");
                    }
                    output.send(event).await?;
                }
                ctx.processed(1);
                if ctx.registry.get(&ctx.name).is_some_and(|s| s.processed % 50 == 0) {
                    ctx.detail(serde_json::json!({ "learnt": detector.learnt(), "entries": entries, "exits": exits }));
                }
            }
            output.close();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClassMix;
    use crate::sim::lidar::scan_world;
    use crate::sim::{TrafficParams, World};
    use rand::SeedableRng;

    /// 120° so that tall vehicles in the outer lanes are seen whole (at 90° and 6.5 m the scan
    /// misses the outer side of a bus roof in lane 2).
    fn geometry() -> ScanGeometry {
        ScanGeometry {
            mounting_height_m: 6.5,
            mount_y_m: 5.25,
            fov_deg: 120.0,
            angular_step_deg: 0.25,
            lanes: 3,
            lane_width_m: 3.5,
        }
    }

    fn world() -> World {
        let params = TrafficParams {
            lanes: 3,
            lane_width_m: 3.5,
            flow_veh_h_per_lane: 0.0,
            speed_kmh_mean: 100.0,
            speed_kmh_stddev: 10.0,
            class_mix: ClassMix::default(),
        };
        World::new(params, 11, Utc::now())
    }

    fn run(world: &mut World, seconds: f64) -> Vec<Detection> {
        let g = geometry();
        let mut detector = Detector::new(g);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut events = vec![];
        let steps = (seconds * 50.0) as u32;
        for step in 1..=steps {
            world.advance_to(f64::from(step) / 50.0);
            let scan = Scan { t: world.now(), ranges_m: scan_world(world, &g, &mut rng) };
            events.extend(detector.process(&scan));
        }
        events
    }

    #[test]
    fn empty_road_with_noise_has_no_phantoms() {
        assert_eq!(run(&mut world(), 60.0), vec![]);
    }

    #[test]
    fn finds_each_known_vehicle_once_in_its_lane() {
        let mut world = world();
        // first second is learning; vehicles reach the plane later
        let known = [
            world.insert_vehicle(0, VehicleClass::Car, 100.0, -60.0),
            world.insert_vehicle(1, VehicleClass::Truck, 80.0, -50.0),
            world.insert_vehicle(2, VehicleClass::Motorcycle, 110.0, -70.0),
            world.insert_vehicle(1, VehicleClass::Van, 90.0, -120.0),
            world.insert_vehicle(2, VehicleClass::Bus, 90.0, -140.0),
        ];
        let events = run(&mut world, 15.0);
        let entries: Vec<_> = events.iter().filter(|e| matches!(e, Detection::Entry { .. })).collect();
        assert_eq!(entries.len(), known.len(), "{events:#?}");
        for truth in &known {
            let exits: Vec<_> = events
                .iter()
                .filter_map(|e| match e {
                    Detection::Exit { lane, t, max_height_m, width_m, class, .. }
                        if *lane == truth.lane
                            && (*t - truth.crosses_scan_plane_at).num_milliseconds().abs() < 1500 =>
                    {
                        Some((*max_height_m, *width_m, *class))
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(exits.len(), 1, "vehicle {truth:?} in {events:#?}");
            let (h, w, class) = exits[0];
            assert!((f64::from(h) - truth.height_m).abs() < 0.15, "height {h} vs {}", truth.height_m);
            assert!((f64::from(w) - truth.width_m).abs() < 0.3, "width {w} vs {}", truth.width_m);
            assert_eq!(class, truth.class, "{truth:?}");
        }
    }

    #[test]
    fn classifier_heuristics() {
        assert_eq!(classify(1.4, 0.8, 0.1), VehicleClass::Motorcycle);
        assert_eq!(classify(1.5, 1.8, 0.2), VehicleClass::Car);
        assert_eq!(classify(2.3, 2.0, 0.2), VehicleClass::Van);
        assert_eq!(classify(3.8, 2.5, 0.6), VehicleClass::Truck);
        assert_eq!(classify(3.2, 2.55, 0.5), VehicleClass::Bus);
    }
}
