//! Simulated overhead LIDAR: a scan plane across the road (at x = 0, or at another x for a
//! second plane), range per beam to the road surface or the nearest vehicle (roof or side), with
//! small Gaussian noise and optional weather. The scans reach the agent through `sick_server`,
//! encoded as a real scanner would send them.
//!
//! A beam without an echo reads 0, as a SICK scanner reports it.

use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use super::{COUPLING_HEIGHT_M, COUPLING_WIDTH_M, World};
use crate::domain::ScanGeometry;

/// Range noise (one sigma), metres.
pub const RANGE_NOISE_M: f64 = 0.02;

/// Weather as the scanner suffers it; draws come from the caller's seeded rng.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Weather {
    /// Chance per beam of an echo from rain or spray: a spurious point up to
    /// [`SPRAY_MAX_HEIGHT_M`] above the road.
    pub spurious_per_beam: f64,
    /// Chance per beam of no echo at all (range 0).
    pub dropped_per_beam: f64,
}

impl Weather {
    pub const CLEAR: Self = Self { spurious_per_beam: 0.0, dropped_per_beam: 0.0 };
    /// Heavy rain with spray from the traffic.
    pub const RAIN: Self = Self { spurious_per_beam: 0.01, dropped_per_beam: 0.03 };
}

/// Highest spurious rain/spray echo above the road, metres.
pub const SPRAY_MAX_HEIGHT_M: f64 = 1.0;

/// Ranges of every beam for the world's current state, plane at x = 0, clear weather.
pub fn scan_world(world: &World, geometry: &ScanGeometry, rng: &mut StdRng) -> Vec<f32> {
    scan_world_at(world, geometry, 0.0, Weather::CLEAR, rng)
}

/// Ranges of every beam of a plane at `plane_x_m` along the road, in `weather`.
pub fn scan_world_at(
    world: &World,
    geometry: &ScanGeometry,
    plane_x_m: f64,
    weather: Weather,
    rng: &mut StdRng,
) -> Vec<f32> {
    let noise = Normal::new(0.0, RANGE_NOISE_M).expect("valid noise");
    let h = geometry.mounting_height_m;
    let in_plane: Vec<_> = world
        .vehicles()
        .iter()
        .filter(|v| v.x_front_m >= plane_x_m && v.x_front_m - v.truth.length_m <= plane_x_m)
        .map(|v| {
            let in_gap = v.trailer_gap.is_some_and(|g| {
                let behind_front = v.x_front_m - plane_x_m;
                behind_front > g.from_front_m && behind_front < g.from_front_m + g.gap_m
            });
            let (width, top) = if in_gap {
                (COUPLING_WIDTH_M, COUPLING_HEIGHT_M)
            } else {
                (v.truth.width_m, v.truth.height_m)
            };
            (v.y_center_m - width / 2.0, v.y_center_m + width / 2.0, top)
        })
        .collect();
    (0..geometry.beams())
        .map(|i| {
            let theta = geometry.beam_angle(i);
            let (dy, dz) = (theta.sin(), -theta.cos());
            let mut range = h / theta.cos();
            for &(y0, y1, top) in &in_plane {
                if let Some(t) = ray_box(geometry.mount_y_m, h, dy, dz, y0, y1, top) {
                    range = range.min(t);
                }
            }
            if weather.dropped_per_beam > 0.0 && rng.random_bool(weather.dropped_per_beam) {
                return 0.0;
            }
            if weather.spurious_per_beam > 0.0 && rng.random_bool(weather.spurious_per_beam) {
                let z: f64 = rng.random_range(0.05..SPRAY_MAX_HEIGHT_M);
                range = range.min((h - z) / theta.cos());
            }
            (range + noise.sample(rng)) as f32
        })
        .collect()
}

/// Distance along the ray from (y, z) in direction (dy, dz) to the box [y0, y1] × [0, top].
fn ray_box(y: f64, z: f64, dy: f64, dz: f64, y0: f64, y1: f64, top: f64) -> Option<f64> {
    let (mut tmin, mut tmax) = (0.0f64, f64::INFINITY);
    for (origin, dir, lo, hi) in [(y, dy, y0, y1), (z, dz, 0.0, top)] {
        if dir.abs() < 1e-12 {
            if origin < lo || origin > hi {
                return None;
            }
        } else {
            let (a, b) = ((lo - origin) / dir, (hi - origin) / dir);
            tmin = tmin.max(a.min(b));
            tmax = tmax.min(a.max(b));
        }
    }
    (tmin <= tmax).then_some(tmin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ray_hits_roof_from_above() {
        // straight down onto a 1.5 m high box under the scanner at 6.5 m
        let t = ray_box(0.0, 6.5, 0.0, -1.0, -1.0, 1.0, 1.5).unwrap();
        assert!((t - 5.0).abs() < 1e-9);
        assert!(ray_box(0.0, 6.5, 0.0, -1.0, 2.0, 3.0, 1.5).is_none());
    }
}
