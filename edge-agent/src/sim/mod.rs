//! Traffic simulator: a real-time world of vehicles on the site's lanes, seen by a simulated
//! overhead LIDAR (`lidar`, served as a SICK scanner over TCP by `sick_server`) and simulated
//! cameras (`camera`), with per-vehicle ground truth.
//!
//! The world is the single source of truth; sensors only sample it at their own times, so the
//! scan source and the camera sources stay swappable for real drivers (SICK, V4L2/GigE) behind
//! [`crate::sources`]. Ground truth (including occupants) is written beside the world, never
//! into captures.

pub mod camera;
pub mod faces;
pub mod lidar;
pub mod sick_server;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, Normal};
use serde::Serialize;

use crate::config::{ClassMix, SimulatorConfig};
use crate::domain::VehicleClass;

/// Vehicles enter this far upstream of the scan plane (x = 0), metres.
pub const SPAWN_X_M: f64 = -60.0;
/// Vehicles leave the world once their rear passes this point, metres.
pub const DESPAWN_X_M: f64 = 80.0;
/// Default minimum bumper-to-bumper gap between vehicles of one lane, metres (about 0.15 s at
/// 100 km/h: tailgating; [`World::set_min_gap_m`] changes it).
pub const MIN_GAP_M: f64 = 4.0;

/// One vehicle's true state, as the simulator knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroundTruth {
    pub vehicle_id: u64,
    pub lane: u32,
    pub class: VehicleClass,
    pub speed_kmh: f64,
    pub length_m: f64,
    pub width_m: f64,
    pub height_m: f64,
    /// Occupants per seat row, front row first.
    pub occupants_per_row: Vec<u32>,
    /// World time the vehicle's front crosses the scan plane.
    pub crosses_scan_plane_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct SimVehicle {
    pub truth: GroundTruth,
    /// Position of the front bumper along the road, metres (scan plane at 0).
    pub x_front_m: f64,
    /// Lateral centre, metres from the right road edge.
    pub y_center_m: f64,
    pub speed_mps: f64,
    /// A trailer behind the towing vehicle: the vehicle's length includes both, and the LIDAR
    /// sees only the coupling (chassis or drawbar) in the gap between them.
    pub trailer_gap: Option<TrailerGap>,
}

/// The gap between a tractor and its trailer, along the road.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrailerGap {
    /// Distance from the vehicle's front to the start of the gap (the tractor's length), metres.
    pub from_front_m: f64,
    pub gap_m: f64,
}

/// Width and height of the coupling in a trailer gap (chassis rails or drawbar), metres.
pub const COUPLING_WIDTH_M: f64 = 0.9;
pub const COUPLING_HEIGHT_M: f64 = 1.1;

/// Parameters of traffic generation.
#[derive(Debug, Clone)]
pub struct TrafficParams {
    pub lanes: u32,
    pub lane_width_m: f64,
    pub flow_veh_h_per_lane: f64,
    pub speed_kmh_mean: f64,
    pub speed_kmh_stddev: f64,
    pub class_mix: ClassMix,
}

impl TrafficParams {
    pub fn from_config(sim: &SimulatorConfig, lanes: u32, lane_width_m: f64) -> Self {
        Self {
            lanes,
            lane_width_m,
            flow_veh_h_per_lane: f64::from(sim.flow_veh_h_per_lane),
            speed_kmh_mean: sim.speed_kmh_mean,
            speed_kmh_stddev: sim.speed_kmh_stddev,
            class_mix: sim.class_mix.clone(),
        }
    }
}

/// The simulated road: vehicles per lane, advanced in time.
pub struct World {
    params: TrafficParams,
    rng: StdRng,
    epoch: DateTime<Utc>,
    t_secs: f64,
    vehicles: Vec<SimVehicle>,
    next_arrival: Vec<f64>,
    /// Arrivals waiting for room at the lane's entry.
    queued: Vec<u32>,
    next_id: u64,
    arrivals: u64,
    min_gap_m: f64,
    /// Per lane: the HOV minimum occupancy in force there, if any.
    hov_min: Vec<Option<u32>>,
    hov_violation_share: f64,
    ground_truth: Option<std::io::BufWriter<std::fs::File>>,
}

impl World {
    pub fn new(params: TrafficParams, seed: u64, epoch: DateTime<Utc>) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let lanes = params.lanes as usize;
        let next_arrival = (0..lanes).map(|_| sample_headway(&mut rng, params.flow_veh_h_per_lane)).collect();
        Self {
            params,
            rng,
            epoch,
            t_secs: 0.0,
            vehicles: Vec::new(),
            next_arrival,
            queued: vec![0; lanes],
            next_id: 1,
            arrivals: 0,
            min_gap_m: MIN_GAP_M,
            hov_min: vec![None; lanes],
            hov_violation_share: 0.0,
            ground_truth: None,
        }
    }

    /// HOV lanes: `(lane, min_occupants)`. In those lanes a share `violation_share` of vehicles
    /// carries fewer than the minimum and the rest meet it, as when drivers choose the lane by
    /// occupancy; elsewhere occupants follow the general mix.
    pub fn set_hov_lanes(&mut self, lanes: &[(u32, u32)], violation_share: f64) {
        for &(lane, min) in lanes {
            if let Some(slot) = self.hov_min.get_mut(lane as usize) {
                *slot = Some(min);
            }
        }
        self.hov_violation_share = violation_share.clamp(0.0, 1.0);
    }

    /// Appends one JSON line per new vehicle to `path`.
    pub fn write_ground_truth_to(&mut self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening ground truth file {}", path.display()))?;
        self.ground_truth = Some(std::io::BufWriter::new(file));
        Ok(())
    }

    /// Minimum bumper-to-bumper gap a follower keeps, metres (default [`MIN_GAP_M`]).
    pub fn set_min_gap_m(&mut self, gap_m: f64) {
        self.min_gap_m = gap_m.max(0.0);
    }

    /// A vehicle by id, for scenario tools that move it between lanes or hitch a trailer.
    pub fn vehicle_mut(&mut self, vehicle_id: u64) -> Option<&mut SimVehicle> {
        self.vehicles.iter_mut().find(|v| v.truth.vehicle_id == vehicle_id)
    }

    pub fn params(&self) -> &TrafficParams {
        &self.params
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.time_at(self.t_secs)
    }

    pub fn time_at(&self, t_secs: f64) -> DateTime<Utc> {
        self.epoch + chrono::Duration::microseconds((t_secs * 1e6) as i64)
    }

    pub fn vehicles(&self) -> &[SimVehicle] {
        &self.vehicles
    }

    /// Vehicles that arrived (by the Poisson process) since the world began.
    pub fn arrivals(&self) -> u64 {
        self.arrivals
    }

    /// Advances the world to `t_secs` since its epoch (no-op when already past it).
    pub fn advance_to(&mut self, t_secs: f64) {
        const MAX_STEP: f64 = 0.05;
        while self.t_secs < t_secs {
            let dt = (t_secs - self.t_secs).min(MAX_STEP);
            self.step(dt);
        }
    }

    fn step(&mut self, dt: f64) {
        let t_end = self.t_secs + dt;
        // Poisson arrivals per lane
        for lane in 0..self.params.lanes as usize {
            while self.next_arrival[lane] <= t_end {
                self.arrivals += 1;
                self.queued[lane] += 1;
                self.next_arrival[lane] += sample_headway(&mut self.rng, self.params.flow_veh_h_per_lane);
            }
        }
        // move vehicles, followers never closer than the minimum gap to their leader
        let min_gap = self.min_gap_m;
        self.vehicles.sort_by(|a, b| b.x_front_m.total_cmp(&a.x_front_m));
        let mut leader_rear: Vec<Option<(f64, f64)>> = vec![None; self.params.lanes as usize];
        for v in &mut self.vehicles {
            let lane = v.truth.lane as usize;
            let mut x = v.x_front_m + v.speed_mps * dt;
            if let Some((rear, leader_speed)) = leader_rear[lane]
                && x > rear - min_gap
            {
                x = (rear - min_gap).max(v.x_front_m);
                v.speed_mps = v.speed_mps.min(leader_speed);
            }
            v.x_front_m = x;
            leader_rear[lane] = Some((x - v.truth.length_m, v.speed_mps));
        }
        self.vehicles.retain(|v| v.x_front_m - v.truth.length_m < DESPAWN_X_M);
        self.t_secs = t_end;
        // enter queued vehicles when there is room
        for lane in 0..self.params.lanes {
            let room = self
                .vehicles
                .iter()
                .filter(|v| v.truth.lane == lane)
                .map(|v| v.x_front_m - v.truth.length_m)
                .fold(f64::INFINITY, f64::min)
                > SPAWN_X_M + self.min_gap_m;
            if room && self.queued[lane as usize] > 0 {
                self.queued[lane as usize] -= 1;
                let class = self.sample_class();
                let speed_kmh = self.sample_speed();
                let vehicle = self.make_vehicle(lane, class, speed_kmh, SPAWN_X_M);
                self.add(vehicle);
            }
        }
    }

    /// Places a vehicle with its front at `x_front_m` (used by tests and scenario tools).
    pub fn insert_vehicle(
        &mut self,
        lane: u32,
        class: VehicleClass,
        speed_kmh: f64,
        x_front_m: f64,
    ) -> GroundTruth {
        let vehicle = self.make_vehicle(lane, class, speed_kmh, x_front_m);
        let truth = vehicle.truth.clone();
        self.add(vehicle);
        truth
    }

    fn add(&mut self, vehicle: SimVehicle) {
        if let Some(out) = &mut self.ground_truth {
            let line = serde_json::to_string(&vehicle.truth).expect("ground truth serializes");
            if let Err(err) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                tracing::warn!(error = %err, "cannot write ground truth");
            }
        }
        self.vehicles.push(vehicle);
    }

    fn make_vehicle(&mut self, lane: u32, class: VehicleClass, speed_kmh: f64, x_front_m: f64) -> SimVehicle {
        let (length_m, width_m, height_m) = sample_dimensions(&mut self.rng, class);
        let occupants_per_row = match self.hov_min.get(lane as usize).copied().flatten() {
            Some(min) => {
                let violator = self.rng.random_bool(self.hov_violation_share);
                sample_occupants_where(&mut self.rng, class, |total| (total < min) == violator)
            }
            None => sample_occupants(&mut self.rng, class),
        };
        let speed_mps = speed_kmh / 3.6;
        let lane_w = self.params.lane_width_m;
        let jitter: f64 = self.rng.random_range(-0.2..0.2);
        let y_center_m = (f64::from(lane) + 0.5) * lane_w + jitter * (lane_w - width_m).max(0.0);
        let id = self.next_id;
        self.next_id += 1;
        let crosses = self.time_at(self.t_secs + (-x_front_m).max(0.0) / speed_mps);
        SimVehicle {
            truth: GroundTruth {
                vehicle_id: id,
                lane,
                class,
                speed_kmh,
                length_m,
                width_m,
                height_m,
                occupants_per_row,
                crosses_scan_plane_at: crosses,
            },
            x_front_m,
            y_center_m,
            speed_mps,
            trailer_gap: None,
        }
    }

    fn sample_class(&mut self) -> VehicleClass {
        let m = &self.params.class_mix;
        let shares = [
            (VehicleClass::Motorcycle, m.motorcycle),
            (VehicleClass::Car, m.car),
            (VehicleClass::Van, m.van),
            (VehicleClass::Truck, m.truck),
            (VehicleClass::Bus, m.bus),
        ];
        let total: f64 = shares.iter().map(|(_, s)| s).sum();
        let mut pick = self.rng.random_range(0.0..total.max(f64::EPSILON));
        for (class, share) in shares {
            if pick < share {
                return class;
            }
            pick -= share;
        }
        VehicleClass::Car
    }

    fn sample_speed(&mut self) -> f64 {
        let p = &self.params;
        let normal = Normal::new(p.speed_kmh_mean, p.speed_kmh_stddev.max(1e-9)).expect("valid normal");
        normal.sample(&mut self.rng).clamp((p.speed_kmh_mean * 0.5).max(20.0), p.speed_kmh_mean * 1.5)
    }
}

fn sample_headway(rng: &mut StdRng, flow_veh_h: f64) -> f64 {
    if flow_veh_h <= 0.0 {
        return f64::INFINITY;
    }
    Exp::new(flow_veh_h / 3600.0).expect("positive rate").sample(rng)
}

/// Length, width, height in metres, jittered around the class's typical size.
fn sample_dimensions(rng: &mut StdRng, class: VehicleClass) -> (f64, f64, f64) {
    let mut j = |base: f64, spread: f64| base * (1.0 + rng.random_range(-spread..=spread));
    match class {
        VehicleClass::Motorcycle => (j(2.2, 0.05), j(0.8, 0.1), j(1.4, 0.05)),
        VehicleClass::Car | VehicleClass::Unknown => (j(4.5, 0.1), j(1.8, 0.05), j(1.5, 0.06)),
        VehicleClass::Van => (j(5.2, 0.08), j(2.0, 0.04), j(2.3, 0.06)),
        VehicleClass::Truck => (j(14.0, 1.0 / 7.0), j(2.5, 0.02), j(3.8, 0.04)),
        VehicleClass::Bus => (j(12.0, 0.04), j(2.55, 0.01), j(3.2, 0.04)),
    }
}

/// [`sample_occupants`] conditioned on the total: drawn again until `keep(total)` holds (a
/// truck cannot carry three, so after a bounded number of draws the last one stands).
fn sample_occupants_where(rng: &mut StdRng, class: VehicleClass, keep: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut rows = sample_occupants(rng, class);
    for _ in 0..64 {
        if keep(rows.iter().sum()) {
            break;
        }
        rows = sample_occupants(rng, class);
    }
    rows
}

/// Occupants per seat row: a driver, a front passenger some of the time, rear rows mostly empty.
fn sample_occupants(rng: &mut StdRng, class: VehicleClass) -> Vec<u32> {
    let rear = |rng: &mut StdRng, seats: u32| -> u32 {
        let r: f64 = rng.random();
        let n = if r < 0.80 {
            0
        } else if r < 0.93 {
            1
        } else if r < 0.98 {
            2
        } else {
            3
        };
        n.min(seats)
    };
    let front_passenger = |rng: &mut StdRng, p: f64| u32::from(rng.random_bool(p));
    match class {
        VehicleClass::Motorcycle => vec![1 + front_passenger(rng, 0.1)],
        VehicleClass::Car | VehicleClass::Unknown => {
            let front = 1 + front_passenger(rng, 0.3);
            vec![front, rear(rng, 3)]
        }
        VehicleClass::Van => {
            let front = 1 + front_passenger(rng, 0.35) + front_passenger(rng, 0.1);
            vec![front, rear(rng, 3), rear(rng, 3)]
        }
        VehicleClass::Truck => vec![1 + front_passenger(rng, 0.15)],
        VehicleClass::Bus => {
            let passengers = rng.random_range(0..=45);
            vec![1, passengers]
        }
    }
}

/// Shared world plus the clock that maps real time to world time.
#[derive(Clone)]
pub struct SharedWorld {
    pub world: Arc<Mutex<World>>,
    start: tokio::time::Instant,
}

impl SharedWorld {
    pub fn new(world: World) -> Self {
        Self { world: Arc::new(Mutex::new(world)), start: tokio::time::Instant::now() }
    }

    /// Advances the world to the current real time and returns the world time.
    pub fn sync_now(&self) -> (DateTime<Utc>, std::sync::MutexGuard<'_, World>) {
        let secs = self.start.elapsed().as_secs_f64();
        let mut world = self.world.lock().unwrap();
        world.advance_to(secs);
        (world.now(), world)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(flow: f64) -> TrafficParams {
        TrafficParams {
            lanes: 3,
            lane_width_m: 3.5,
            flow_veh_h_per_lane: flow,
            speed_kmh_mean: 100.0,
            speed_kmh_stddev: 10.0,
            class_mix: ClassMix::default(),
        }
    }

    #[test]
    fn arrival_rate_matches_flow() {
        for flow in [300.0, 900.0, 1800.0] {
            let mut world = World::new(params(flow), 42, Utc::now());
            let hours = 2.0;
            world.advance_to(hours * 3600.0);
            let expected = flow * hours * 3.0;
            let got = world.arrivals() as f64;
            // Poisson: stddev = sqrt(expected); allow 4 sigma
            assert!(
                (got - expected).abs() < 4.0 * expected.sqrt(),
                "flow {flow}: expected {expected}, got {got}"
            );
        }
    }

    #[test]
    fn vehicles_keep_their_lane_and_gap() {
        let mut world = World::new(params(2400.0), 7, Utc::now());
        for step in 1..=2000 {
            world.advance_to(f64::from(step) * 0.1);
            let mut vs: Vec<_> = world.vehicles().to_vec();
            vs.sort_by(|a, b| (a.truth.lane, b.x_front_m).partial_cmp(&(b.truth.lane, a.x_front_m)).unwrap());
            for pair in vs.windows(2) {
                if pair[0].truth.lane == pair[1].truth.lane {
                    assert!(
                        pair[1].x_front_m <= pair[0].x_front_m - pair[0].truth.length_m,
                        "vehicles overlap"
                    );
                }
            }
        }
        assert!(world.arrivals() > 100);
    }

    #[test]
    fn ground_truth_is_sampled_realistically() {
        let mut world = World::new(params(0.0), 3, Utc::now());
        for _ in 0..200 {
            let truth = world.insert_vehicle(0, VehicleClass::Car, 100.0, -10.0);
            assert_eq!(truth.occupants_per_row.len(), 2);
            assert!(truth.occupants_per_row[0] >= 1);
            assert!((4.0..5.0).contains(&truth.length_m));
        }
    }

    #[test]
    fn hov_lanes_carry_their_violation_share() {
        let mut world = World::new(params(0.0), 11, Utc::now());
        world.set_hov_lanes(&[(2, 2), (1, 3)], 0.2);
        let n = 2000;
        let share = |world: &mut World, lane: u32, min: u32| {
            let below = (0..n)
                .filter(|_| {
                    let truth = world.insert_vehicle(lane, VehicleClass::Car, 100.0, -10.0);
                    truth.occupants_per_row.iter().sum::<u32>() < min
                })
                .count();
            below as f64 / f64::from(n)
        };
        // binomial(2000, 0.2): stddev 0.009; allow 4 sigma
        let hov2 = share(&mut world, 2, 2);
        assert!((hov2 - 0.2).abs() < 0.036, "HOV 2+ lane: {hov2} below the minimum");
        let hov3 = share(&mut world, 1, 3);
        assert!((hov3 - 0.2).abs() < 0.036, "HOV 3+ lane: {hov3} below the minimum");
        // a general lane keeps the general mix: most cars carry only their driver
        let general = share(&mut world, 0, 2);
        assert!(general > 0.45, "general lane: {general} single-occupant");
    }
}
