//! Simulated overhead LIDAR: one scan plane across the road at x = 0, range per beam to the
//! road surface or the nearest vehicle (roof or side), with small Gaussian noise. The scans
//! reach the agent through `sick_server`, encoded as a real scanner would send them.

use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use super::World;
use crate::domain::ScanGeometry;

/// Range noise (one sigma), metres.
pub const RANGE_NOISE_M: f64 = 0.02;

/// Ranges of every beam for the world's current state.
pub fn scan_world(world: &World, geometry: &ScanGeometry, rng: &mut StdRng) -> Vec<f32> {
    let noise = Normal::new(0.0, RANGE_NOISE_M).expect("valid noise");
    let h = geometry.mounting_height_m;
    let in_plane: Vec<_> = world
        .vehicles()
        .iter()
        .filter(|v| v.x_front_m >= 0.0 && v.x_front_m - v.truth.length_m <= 0.0)
        .map(|v| {
            (v.y_center_m - v.truth.width_m / 2.0, v.y_center_m + v.truth.width_m / 2.0, v.truth.height_m)
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
