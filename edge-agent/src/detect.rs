//! Vehicle detection from overhead scans: learns the empty road, groups object points into
//! clusters, assigns each cluster to one lane zone and turns occupied/free runs into Entry/Exit
//! events with a class guess.
//!
//! An object point is a beam whose return is more than [`OBJECT_MIN_HEIGHT_M`] above the learnt
//! road; a beam without an echo (range 0) is no point at all. Neighbouring object points (less
//! than [`CLUSTER_GAP_M`] apart across the road) form a cluster; a cluster of fewer than
//! [`MIN_POINTS`] points is noise (rain, spray). A lane zone that tracks a vehicle keeps the
//! overlapping cluster nearest to where it last saw it; any other cluster goes to the free lane it
//! overlaps most, so a vehicle straddling two lanes is one vehicle and two side by side are two. A lane zone is occupied when a cluster was assigned to it; a vehicle enters
//! after [`ENTRY_SCANS`] consecutive occupied scans and exits after [`EXIT_SCANS`] free ones.
//!
//! A scan in which most beams have no echo (a blinded or failing scanner) makes the detector
//! degraded: such scans change no lane state, so they produce no vehicles, and
//! [`Detector::degraded`] says so until a healthy scan arrives.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::{Detection, Scan, ScanGeometry, VehicleClass};
use crate::load::WaitingOn;
use crate::stage::{Inlet, Outlet};
use crate::state::{ComponentState, DetectorState};
use crate::supervisor::{Component, ComponentCtx, RunFuture};
use crate::view::LaneEvent;

pub const OBJECT_MIN_HEIGHT_M: f64 = 0.4;
pub const MIN_POINTS: usize = 3;
pub const ENTRY_SCANS: u32 = 2;
pub const EXIT_SCANS: u32 = 3;
/// Scans used to learn the empty-road profile (per-beam median).
pub const LEARN_SCANS: usize = 25;
/// Largest lateral gap between neighbouring object points of one cluster, metres. Vehicles in
/// neighbouring lanes are at least about 0.6 m apart.
pub const CLUSTER_GAP_M: f64 = 0.35;
/// Ranges at or below this are "no echo", metres.
pub const NO_ECHO_M: f32 = 0.05;
/// Share of beams without echo above which a scan is degraded.
pub const DEGRADED_SHARE: f64 = 0.5;
/// Overlap with a lane that already tracks a vehicle for a cluster to stay in it, metres.
const KEEP_LANE_OVERLAP_M: f64 = 0.3;
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
    /// Lateral centre of what the lane saw last, metres.
    centre_y_m: f64,
}

impl LaneState {
    fn active(&self) -> bool {
        self.track.is_some() || self.occupied_run > 0
    }
}

#[derive(Debug)]
struct Track {
    id: u64,
    entered_at: DateTime<Utc>,
    max_height_m: f64,
    width_m: f64,
}

/// Object points of one scan that belong together.
#[derive(Debug, Clone, Copy)]
struct Cluster {
    points: usize,
    y_min: f64,
    y_max: f64,
    max_height_m: f64,
}

/// The detector's state machine; pure, one scan at a time.
pub struct Detector {
    geometry: ScanGeometry,
    /// (cos, sin) of every beam's angle.
    beam_trig: Vec<(f64, f64)>,
    learning: Vec<Vec<f32>>,
    road: Vec<f64>,
    lanes: Vec<LaneState>,
    next_track: u64,
    degraded: bool,
    degraded_scans: u64,
}

impl Detector {
    pub fn new(geometry: ScanGeometry) -> Self {
        let lanes = (0..geometry.lanes).map(|_| LaneState::default()).collect();
        let beam_trig = (0..geometry.beams())
            .map(|i| {
                let theta = geometry.beam_angle(i);
                (theta.cos(), theta.sin())
            })
            .collect();
        Self {
            geometry,
            beam_trig,
            learning: Vec::new(),
            road: Vec::new(),
            lanes,
            next_track: 1,
            degraded: false,
            degraded_scans: 0,
        }
    }

    pub fn learnt(&self) -> bool {
        !self.road.is_empty()
    }

    /// Whether the last scan had too few echoes to see vehicles (sensor dropout).
    pub fn degraded(&self) -> bool {
        self.degraded
    }

    /// Scans seen degraded since the detector started.
    pub fn degraded_scans(&self) -> u64 {
        self.degraded_scans
    }

    pub fn process(&mut self, scan: &Scan) -> Vec<Detection> {
        let beams = self.beam_trig.len();
        if scan.ranges_m.len() != beams {
            tracing::warn!(
                expected = beams,
                got = scan.ranges_m.len(),
                "scan with unexpected beam count ignored"
            );
            return vec![];
        }
        let no_echo = scan.ranges_m.iter().filter(|r| !has_echo(**r)).count();
        if no_echo as f64 > DEGRADED_SHARE * beams as f64 {
            if !self.degraded {
                tracing::warn!(no_echo, beams, "lidar degraded: most beams without echo");
            }
            self.degraded = true;
            self.degraded_scans += 1;
            // a run of occupied scans must not span the dropout
            for state in &mut self.lanes {
                state.occupied_run = 0;
            }
            return vec![];
        }
        if self.degraded {
            tracing::info!("lidar healthy again");
            self.degraded = false;
        }
        if !self.learnt() {
            self.learn(scan);
            return vec![];
        }

        let clusters = self.clusters(scan);
        let lane_count = self.geometry.lanes as usize;
        let mut points = vec![0usize; lane_count];
        let mut max_h = vec![0f64; lane_count];
        let mut y_range = vec![(f64::INFINITY, f64::NEG_INFINITY); lane_count];
        let clusters: Vec<Cluster> = clusters.into_iter().filter(|c| c.points >= MIN_POINTS).collect();
        let mut taken = vec![false; lane_count];
        let mut lane_of_cluster = vec![None; clusters.len()];
        // lanes that track a vehicle keep the cluster nearest to where they saw it
        let w = self.geometry.lane_width_m;
        for (lane, state) in self.lanes.iter().enumerate().filter(|(_, s)| s.active()) {
            let (lo, hi) = (lane as f64 * w, (lane + 1) as f64 * w);
            let nearest = (0..clusters.len())
                .filter(|&i| lane_of_cluster[i].is_none())
                .filter(|&i| {
                    let c = &clusters[i];
                    c.y_max.min(hi) - c.y_min.max(lo) >= KEEP_LANE_OVERLAP_M.min(c.y_max - c.y_min)
                })
                .min_by(|&a, &b| {
                    let d =
                        |i: usize| ((clusters[i].y_min + clusters[i].y_max) / 2.0 - state.centre_y_m).abs();
                    d(a).total_cmp(&d(b))
                });
            if let Some(i) = nearest {
                lane_of_cluster[i] = Some(lane);
                taken[lane] = true;
            }
        }
        for (i, c) in clusters.iter().enumerate() {
            let lane = match lane_of_cluster[i] {
                Some(lane) => lane,
                None => {
                    let Some(lane) = self.lane_of(c, &taken) else { continue };
                    taken[lane] = true;
                    lane
                }
            };
            points[lane] += c.points;
            max_h[lane] = max_h[lane].max(c.max_height_m);
            y_range[lane] = (y_range[lane].0.min(c.y_min), y_range[lane].1.max(c.y_max));
        }

        let mut events = Vec::new();
        for (lane, state) in self.lanes.iter_mut().enumerate() {
            let occupied = points[lane] >= MIN_POINTS;
            let width = if occupied { y_range[lane].1 - y_range[lane].0 } else { 0.0 };
            if occupied {
                state.free_run = 0;
                state.occupied_run += 1;
                if state.occupied_run == 1 && state.track.is_none() {
                    state.first_occupied_at = Some(scan.t);
                    state.early_height_m = 0.0;
                    state.early_width_m = 0.0;
                }
                state.last_occupied_at = Some(scan.t);
                state.centre_y_m = (y_range[lane].0 + y_range[lane].1) / 2.0;
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

    /// The scan as the local UI plots it: every echo as (y across the road, height above the
    /// road plane), the learnt road likewise, and which lanes hold a vehicle now.
    pub fn profile(&self, scan: &Scan) -> crate::view::ScanProfile {
        let g = &self.geometry;
        let point = |i: usize, r: f64| {
            let (cos, sin) = self.beam_trig[i];
            ((g.mount_y_m + r * sin) as f32, (g.mounting_height_m - r * cos) as f32)
        };
        let points = scan
            .ranges_m
            .iter()
            .enumerate()
            .filter(|(i, r)| has_echo(**r) && *i < self.beam_trig.len())
            .map(|(i, r)| point(i, f64::from(*r)))
            .collect();
        let road =
            self.road.iter().enumerate().filter(|(_, r)| **r > 0.0).map(|(i, r)| point(i, *r)).collect();
        crate::view::ScanProfile {
            at: Some(scan.t),
            points,
            road,
            lanes: g.lanes,
            lane_width_m: g.lane_width_m,
            occupied: self.lanes.iter().map(|l| l.track.is_some()).collect(),
            degraded: self.degraded,
        }
    }

    /// Learns the empty road: per-beam median of the first [`LEARN_SCANS`] scans, over echoes only.
    fn learn(&mut self, scan: &Scan) {
        self.learning.push(scan.ranges_m.clone());
        if self.learning.len() < LEARN_SCANS {
            return;
        }
        let beams = self.beam_trig.len();
        self.road = (0..beams)
            .map(|i| {
                let mut v: Vec<f32> = self.learning.iter().map(|s| s[i]).filter(|r| has_echo(*r)).collect();
                v.sort_by(f32::total_cmp);
                // a beam that never echoed sees nothing: a road at 0 makes every return "below" it
                v.get(v.len() / 2).map_or(0.0, |r| f64::from(*r))
            })
            .collect();
        self.learning.clear();
        tracing::info!(beams, "empty road profile learnt");
    }

    /// Object points of a scan grouped into clusters, in beam order; adapts the road profile on
    /// free beams.
    fn clusters(&mut self, scan: &Scan) -> Vec<Cluster> {
        let mut clusters: Vec<Cluster> = Vec::new();
        let mut last_y = f64::NEG_INFINITY;
        for (i, &r) in scan.ranges_m.iter().enumerate() {
            if !has_echo(r) {
                continue;
            }
            let (cos, sin) = self.beam_trig[i];
            let r = f64::from(r);
            let height = (self.road[i] - r) * cos;
            if height > OBJECT_MIN_HEIGHT_M {
                let y = self.geometry.mount_y_m + r * sin;
                match clusters.last_mut() {
                    Some(c) if (y - last_y).abs() <= CLUSTER_GAP_M => {
                        c.points += 1;
                        c.y_min = c.y_min.min(y);
                        c.y_max = c.y_max.max(y);
                        c.max_height_m = c.max_height_m.max(height);
                    }
                    _ => clusters.push(Cluster { points: 1, y_min: y, y_max: y, max_height_m: height }),
                }
                last_y = y;
            } else if height.abs() < OBJECT_MIN_HEIGHT_M / 2.0 {
                self.road[i] += ADAPT_RATE * (r - self.road[i]);
            }
        }
        clusters
    }

    /// The lane zone a cluster belongs to: a lane already tracking a vehicle that the cluster
    /// overlaps (most overlap first), else the lane it overlaps most; lanes that another cluster
    /// of this scan took come last, so two vehicles side by side stay two. `None` off the road.
    fn lane_of(&self, c: &Cluster, taken: &[bool]) -> Option<usize> {
        let w = self.geometry.lane_width_m;
        let overlap = |lane: usize| {
            let (lo, hi) = (lane as f64 * w, (lane + 1) as f64 * w);
            (c.y_max.min(hi) - c.y_min.max(lo)).max(0.0)
        };
        let most = |keep: &dyn Fn(usize) -> bool| {
            (0..self.lanes.len()).filter(|&l| keep(l)).max_by(|&a, &b| overlap(a).total_cmp(&overlap(b)))
        };
        let min_keep = KEEP_LANE_OVERLAP_M.min(c.y_max - c.y_min);
        let kept = most(&|l| !taken[l] && self.lanes[l].active() && overlap(l) >= min_keep)
            .or_else(|| most(&|l| !taken[l] && overlap(l) > 0.0));
        if kept.is_some() {
            return kept;
        }
        let centre = ((c.y_min + c.y_max) / 2.0 / w).floor();
        (centre >= 0.0 && (centre as usize) < self.lanes.len()).then_some(centre as usize)
    }
}

/// Speed from two scan planes `distance_m` apart along the road: an upstream plane with its own
/// [`Detector`] and the main one. A vehicle's speed is the distance over the time between its
/// entries in the two planes, averaged with the same for its exits; upstream tracks pair with
/// main tracks first-in first-out per lane (or a neighbouring lane, for a vehicle changing lanes).
pub struct SpeedTrap {
    distance_m: f64,
    /// Upstream tracks not yet paired: (lane, track, entry, exit).
    upstream: Vec<UpstreamTrack>,
    /// Main track → the upstream track it paired with and the entry interval.
    paired: Vec<(u64, u64, f64)>,
    /// Upstream exits of paired tracks, by upstream track.
    upstream_exits: Vec<(u64, DateTime<Utc>)>,
}

/// An upstream track not yet paired: (lane, track, entry, exit).
type UpstreamTrack = (u32, u64, DateTime<Utc>, Option<DateTime<Utc>>);

/// Whether a range is an echo (not "no echo", 0, nor NaN).
fn has_echo(range_m: f32) -> bool {
    range_m > NO_ECHO_M
}

/// Slowest vehicle a speed trap pairs, km/h.
const SPEED_TRAP_MIN_KMH: f64 = 5.0;
/// Fastest: a pairing that would mean more is another vehicle's upstream entry (in dense traffic
/// the right one may have been taken by a neighbour's straddler), never a measurement.
const SPEED_TRAP_MAX_KMH: f64 = 300.0;

impl SpeedTrap {
    pub fn new(distance_m: f64) -> Self {
        Self { distance_m, upstream: Vec::new(), paired: Vec::new(), upstream_exits: Vec::new() }
    }

    /// An event of the upstream plane's detector.
    pub fn upstream(&mut self, event: &Detection) {
        match event {
            Detection::Entry { track, lane, t } => self.upstream.push((*lane, *track, *t, None)),
            Detection::Exit { track, t, .. } => {
                if let Some(u) = self.upstream.iter_mut().find(|u| u.1 == *track) {
                    u.3 = Some(*t);
                } else if self.paired.iter().any(|p| p.1 == *track) {
                    self.upstream_exits.push((*track, *t));
                }
            }
        }
    }

    /// The speed (km/h) of main track `track` from its entries in the two planes, once its main
    /// Entry was given to [`SpeedTrap::main`] and paired: what the trigger can use at entry time.
    pub fn entry_speed_kmh(&self, track: u64) -> Option<f64> {
        let (_, _, dt) = self.paired.iter().find(|p| p.0 == track)?;
        self.speed_kmh(*dt)
    }

    /// The speed of a vehicle that took `dt` seconds between the planes, when plausible.
    fn speed_kmh(&self, dt: f64) -> Option<f64> {
        let kmh = self.distance_m / dt * 3.6;
        (dt > 0.0 && kmh <= SPEED_TRAP_MAX_KMH).then_some(kmh)
    }

    /// An event of the main plane's detector; on a main exit, the vehicle's speed in km/h when
    /// it could be measured.
    pub fn main(&mut self, event: &Detection) -> Option<f64> {
        let secs = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
        let max_dt = self.distance_m / (SPEED_TRAP_MIN_KMH / 3.6);
        match event {
            Detection::Entry { track, lane, t } => {
                self.upstream.retain(|u| secs(*t - u.2) <= max_dt);
                // only an upstream entry early enough for a plausible speed can be this vehicle's
                let min_dt = self.distance_m / (SPEED_TRAP_MAX_KMH / 3.6);
                let plausible = |u: &UpstreamTrack| secs(*t - u.2) >= min_dt;
                let pick = self.upstream.iter().position(|u| u.0 == *lane && plausible(u)).or_else(|| {
                    self.upstream.iter().position(|u| u.0.abs_diff(*lane) == 1 && plausible(u))
                })?;
                let (_, up_track, up_entry, up_exit) = self.upstream.remove(pick);
                if let Some(exit) = up_exit {
                    self.upstream_exits.push((up_track, exit));
                }
                self.paired.push((*track, up_track, secs(*t - up_entry)));
                None
            }
            Detection::Exit { track, t, .. } => {
                let at = self.paired.iter().position(|p| p.0 == *track)?;
                let (_, up_track, entry_dt) = self.paired.remove(at);
                let up_exit = self
                    .upstream_exits
                    .iter()
                    .position(|e| e.0 == up_track)
                    .map(|i| self.upstream_exits.remove(i).1);
                // the exits' interval refines the entries' unless it is implausible itself
                let averaged = up_exit.and_then(|exit| self.speed_kmh((entry_dt + secs(*t - exit)) / 2.0));
                averaged.or_else(|| self.speed_kmh(entry_dt))
            }
        }
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

/// A detection with the vehicle's speed (km/h) measured at its entry, when it was.
pub type Sensed = (Detection, Option<f64>);

/// The speed trap's upstream scan plane as the detect component sees it.
pub struct SpeedPlane {
    pub offset_m: f64,
    pub input: Inlet<Scan>,
}

/// The `detect` component: scans in, detections out, each Entry with the vehicle's speed (km/h)
/// when a speed plane is configured and the vehicle was paired in it.
pub struct DetectComponent {
    pub geometry: ScanGeometry,
    pub input: Inlet<Scan>,
    pub speed: Option<SpeedPlane>,
    pub output: Outlet<Sensed>,
    pub log: Option<DetectionLog>,
    /// Where the local UI reads the scan profile and lane events.
    pub view: crate::view::SiteView,
}

impl Component for DetectComponent {
    fn name(&self) -> String {
        "detect".into()
    }

    fn run(&self, ctx: ComponentCtx) -> RunFuture {
        let (geometry, input, output) = (self.geometry, self.input.clone(), self.output.clone());
        let log = self.log.clone();
        let view = self.view.clone();
        let speed = self.speed.as_ref().map(|s| (s.offset_m, s.input.clone()));
        Box::pin(async move {
            let mut detector = Detector::new(geometry);
            let mut input = input.lock().await;
            let mut trap =
                speed.as_ref().map(|(offset_m, _)| (Detector::new(geometry), SpeedTrap::new(*offset_m)));
            let mut upstream = match &speed {
                Some((_, rx)) => Some(rx.lock().await),
                None => None,
            };
            let (mut entries, mut exits, mut measured) = (0u64, 0u64, 0u64);
            let mut published = tokio::time::Instant::now() - crate::view::SCAN_EVERY;
            loop {
                let scan = tokio::select! {
                    biased;
                    Some(up) = async { upstream.as_mut()?.recv().await } => {
                        if let Some((up_detector, trap)) = trap.as_mut() {
                            for event in up_detector.process(&up) {
                                trap.upstream(&event);
                            }
                        }
                        continue;
                    }
                    scan = input.recv() => scan,
                };
                let Some(scan) = scan else { break };
                let was_degraded = detector.degraded();
                for event in detector.process(&scan) {
                    let speed_kmh = match (&event, trap.as_mut()) {
                        (Detection::Entry { track, .. }, Some((_, trap))) => {
                            trap.main(&event);
                            trap.entry_speed_kmh(*track)
                        }
                        (Detection::Exit { .. }, Some((_, trap))) => {
                            trap.main(&event);
                            None
                        }
                        (_, None) => None,
                    };
                    measured += u64::from(speed_kmh.is_some());
                    match &event {
                        Detection::Entry { track, lane, t } => {
                            entries += 1;
                            tracing::debug!(track, lane, "vehicle entered");
                            view.lane_event(LaneEvent { at: *t, lane: *lane, entered: true, class: None });
                        }
                        Detection::Exit { track, lane, class, max_height_m, t, .. } => {
                            exits += 1;
                            tracing::debug!(track, lane, ?class, max_height_m, "vehicle exited");
                            view.lane_event(LaneEvent {
                                at: *t,
                                lane: *lane,
                                entered: false,
                                class: Some(*class),
                            });
                        }
                    }
                    if let Some(log) = &log
                        && let Err(err) = log.write(&event)
                    {
                        tracing::warn!(error = %err, "cannot write detection line");
                    }
                    ctx.waiting(WaitingOn::Downstream, output.send((event, speed_kmh))).await?;
                }
                if published.elapsed() >= crate::view::SCAN_EVERY {
                    published = tokio::time::Instant::now();
                    view.publish_scan(detector.profile(&scan));
                }
                ctx.wait_on(WaitingOn::Input);
                ctx.processed(1);
                if was_degraded != detector.degraded()
                    || ctx.registry.get(&ctx.name).is_some_and(|s| s.processed % 50 == 0)
                {
                    ctx.state(ComponentState::Detector(DetectorState {
                        learnt: detector.learnt(),
                        degraded: detector.degraded(),
                        degraded_scans: detector.degraded_scans(),
                        entries,
                        exits,
                        speeds_measured: measured,
                    }));
                }
            }
            output.close();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
