//! Simulated camera: renders a top-down raw RGB view of the camera's lanes (road, lane
//! markings, vehicles as class-coloured rectangles; no people) from the shared world, or, with
//! a [`CabinScene`] (vision configured and face photos given), the cabin of the vehicle that
//! last crossed the scan plane in its lanes, with its occupants' faces at their seats.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{SharedWorld, World};
use crate::domain::{Frame, FramePayload, VehicleClass};
use crate::sources::CameraSource;

/// Stretch of road a simulated camera sees, metres along the road (scan plane at 0).
pub const VIEW_X_M: (f64, f64) = (-5.0, 35.0);

/// What one simulated camera sees.
#[derive(Debug, Clone, Copy)]
pub struct CameraView {
    pub width: u32,
    pub height: u32,
    pub y_min_m: f64,
    pub y_max_m: f64,
    pub lane_width_m: f64,
    pub lanes: u32,
}

impl CameraView {
    pub fn for_lanes(width: u32, height: u32, lanes: &[u32], site_lanes: u32, lane_width_m: f64) -> Self {
        let lo = lanes.iter().copied().min().unwrap_or(0);
        let hi = lanes.iter().copied().max().unwrap_or(0) + 1;
        Self {
            width,
            height,
            y_min_m: f64::from(lo) * lane_width_m - 0.5,
            y_max_m: f64::from(hi) * lane_width_m + 0.5,
            lane_width_m,
            lanes: site_lanes,
        }
    }
}

fn class_colour(class: VehicleClass) -> [u8; 3] {
    match class {
        VehicleClass::Motorcycle => [200, 60, 40],
        VehicleClass::Car | VehicleClass::Unknown => [40, 90, 200],
        VehicleClass::Van => [230, 230, 230],
        VehicleClass::Truck => [220, 160, 30],
        VehicleClass::Bus => [40, 160, 70],
    }
}

/// Renders the world as seen by `view`: image rows run against the direction of travel.
pub fn render(world: &World, view: &CameraView) -> Vec<u8> {
    let (w, h) = (view.width as usize, view.height as usize);
    let mut px = vec![0u8; w * h * 3];
    let y_span = view.y_max_m - view.y_min_m;
    let x_span = VIEW_X_M.1 - VIEW_X_M.0;
    let col_of = |y: f64| ((y - view.y_min_m) / y_span * w as f64).round().clamp(0.0, w as f64) as usize;
    let row_of = |x: f64| ((VIEW_X_M.1 - x) / x_span * h as f64).round().clamp(0.0, h as f64) as usize;
    let fill = |px: &mut Vec<u8>, c0: usize, c1: usize, r0: usize, r1: usize, rgb: [u8; 3]| {
        for r in r0..r1.min(h) {
            for c in c0..c1.min(w) {
                px[(r * w + c) * 3..(r * w + c) * 3 + 3].copy_from_slice(&rgb);
            }
        }
    };
    // verge, then road surface
    fill(&mut px, 0, w, 0, h, [70, 110, 60]);
    let road_w_m = f64::from(view.lanes) * view.lane_width_m;
    fill(&mut px, col_of(0.0), col_of(road_w_m), 0, h, [85, 85, 90]);
    // lane markings: solid edges, dashes between lanes (3 m dash, 9 m period)
    let line_px = (0.15 / y_span * w as f64).ceil().max(1.0) as usize;
    for k in 0..=view.lanes {
        let c = col_of(f64::from(k) * view.lane_width_m);
        if k == 0 || k == view.lanes {
            fill(&mut px, c.saturating_sub(line_px / 2), c + line_px.div_ceil(2), 0, h, [235, 235, 235]);
        } else {
            let mut x = (VIEW_X_M.0 / 9.0).floor() * 9.0;
            while x < VIEW_X_M.1 {
                fill(
                    &mut px,
                    c.saturating_sub(line_px / 2),
                    c + line_px.div_ceil(2),
                    row_of(x + 3.0),
                    row_of(x),
                    [235, 235, 235],
                );
                x += 9.0;
            }
        }
    }
    // vehicles, with a dark windscreen band near the front
    for v in world.vehicles() {
        let (x1, x0) = (v.x_front_m, v.x_front_m - v.truth.length_m);
        if x1 < VIEW_X_M.0 || x0 > VIEW_X_M.1 {
            continue;
        }
        let half = v.truth.width_m / 2.0;
        let (c0, c1) = (col_of(v.y_center_m - half), col_of(v.y_center_m + half));
        fill(&mut px, c0, c1, row_of(x1), row_of(x0), class_colour(v.truth.class));
        let glass_front = x1 - v.truth.length_m * 0.2;
        let glass_back = x1 - v.truth.length_m * 0.3;
        fill(&mut px, c0 + 1, c1.saturating_sub(1), row_of(glass_front), row_of(glass_back), [25, 30, 40]);
    }
    px
}

/// What a cabin-view camera shows: its calibrated seat sections, filled with face photos.
#[derive(Debug, Clone)]
pub struct CabinScene {
    pub lanes: Vec<u32>,
    pub sections: Vec<lanewatch_agent_config::SeatSectionConfig>,
    pub photos: Arc<Vec<super::faces::FacePhoto>>,
    pub camera_seed: u64,
    /// Share of vehicles whose glass is too dark to read.
    pub tint_share: f64,
}

impl CabinScene {
    /// The vehicle in view: the one whose front most recently crossed the scan plane.
    fn vehicle<'w>(&self, world: &'w World) -> Option<&'w super::SimVehicle> {
        world
            .vehicles()
            .iter()
            .filter(|v| self.lanes.contains(&v.truth.lane) && (-0.5..30.0).contains(&v.x_front_m))
            .min_by(|a, b| a.x_front_m.total_cmp(&b.x_front_m))
    }

    pub fn render(&self, world: &World, width: u32, height: u32) -> Vec<u8> {
        match self.vehicle(world) {
            Some(v) => {
                super::faces::render_cabin(
                    &v.truth,
                    &self.sections,
                    width,
                    height,
                    &self.photos,
                    self.camera_seed,
                    self.tint_share,
                )
                .0
            }
            None => vec![90; (width * height * 3) as usize],
        }
    }
}

/// A [`CameraSource`] rendering the shared world at `fps`.
pub struct SimCamera {
    world: SharedWorld,
    view: CameraView,
    interval: tokio::time::Interval,
    cabin: Option<CabinScene>,
}

impl SimCamera {
    pub fn new(world: SharedWorld, view: CameraView, fps: u32) -> Self {
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(fps)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Self { world, view, interval, cabin: None }
    }

    /// Renders cabins instead of the top-down road.
    pub fn with_cabin(mut self, cabin: CabinScene) -> Self {
        self.cabin = Some(cabin);
        self
    }
}

impl CameraSource for SimCamera {
    fn next_frame(&mut self) -> BoxFuture<'_, anyhow::Result<Frame>> {
        Box::pin(async move {
            self.interval.tick().await;
            let (t, world) = self.world.sync_now();
            let pixels = match &self.cabin {
                Some(cabin) => cabin.render(&world, self.view.width, self.view.height),
                None => render(&world, &self.view),
            };
            drop(world);
            Ok(Frame {
                t,
                payload: FramePayload::Rgb {
                    width: self.view.width,
                    height: self.view.height,
                    pixels: Arc::new(pixels),
                },
            })
        })
    }
}

/// Share of simulated vehicles with glass too dark to read.
pub const TINT_SHARE: f64 = 0.04;

/// The opener of a simulated camera that shows cabins: when the site has `[vision]` sections
/// for `cam` and `[simulator] face_photos_path`. `None`: the camera keeps its road view.
pub fn cabin_opener(
    config: &lanewatch_agent_config::AgentConfig,
    cam: &lanewatch_agent_config::CameraConfig,
    config_dir: Option<&std::path::Path>,
    world: &SharedWorld,
) -> anyhow::Result<Option<crate::sources::OpenCamera>> {
    let lanewatch_agent_config::CameraSourceConfig::Simulator { width, height } = cam.source else {
        return Ok(None);
    };
    let (Some(vision), Some(photos)) = (&config.vision, &config.simulator.face_photos_path) else {
        return Ok(None);
    };
    let Some(sections) = vision.cameras.iter().find(|c| c.id == cam.id).map(|c| c.sections.clone()) else {
        return Ok(None);
    };
    let library = super::faces::FaceLibrary::load(&crate::config::resolve(config_dir, photos))?;
    let scene = CabinScene {
        lanes: cam.lanes.clone(),
        sections,
        photos: Arc::new(library.tuning),
        camera_seed: cam.id.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
        tint_share: TINT_SHARE,
    };
    let view = CameraView::for_lanes(width, height, &cam.lanes, config.site.lanes, config.site.lane_width_m);
    let (world, fps) = (world.clone(), cam.fps);
    Ok(Some(Arc::new(move || {
        Ok(Box::new(SimCamera::new(world.clone(), view, fps).with_cabin(scene.clone()))
            as Box<dyn CameraSource>)
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClassMix;
    use crate::sim::TrafficParams;

    #[test]
    fn renders_vehicle_in_its_lane() {
        let params = TrafficParams {
            lanes: 3,
            lane_width_m: 3.5,
            flow_veh_h_per_lane: 0.0,
            speed_kmh_mean: 100.0,
            speed_kmh_stddev: 1.0,
            class_mix: ClassMix::default(),
        };
        let mut world = World::new(params, 1, chrono::Utc::now());
        world.insert_vehicle(1, VehicleClass::Truck, 80.0, 20.0);
        let view = CameraView::for_lanes(64, 64, &[0, 1, 2], 3, 3.5);
        let px = render(&world, &view);
        let at =
            |c: usize, r: usize| [px[(r * 64 + c) * 3], px[(r * 64 + c) * 3 + 1], px[(r * 64 + c) * 3 + 2]];
        // lane 1 centre is column 32; x = 14 m is row (35 - 14) / 40 * 64 = 33.6
        assert_eq!(at(32, 34), class_colour(VehicleClass::Truck));
        assert_eq!(at(10, 34), [85, 85, 90], "lane 0 is empty road");
    }
}
