//! Simulated cabins: real face photos placed at known seats, with varied size, lighting, blur
//! and partial occlusion, so every simulated vehicle has occupant ground truth for vision.
//!
//! Photos come from scikit-image's wheel (`scripts/setup.sh` puts them in `.tools/faces`):
//! the 100 face crops of `lfw_subset.npy` (Labeled Faces in the Wild, 25 × 25 grey) and the face
//! of `astronaut.png` (Eileen Collins, NASA, public domain). Faces 70..100 of the LFW subset
//! are the held-out set: no threshold or setting is tuned on them; `bench vision` reports on
//! them and the simulator's agent scenes use the tuning set.

use std::path::Path;

use anyhow::Context;
use lanewatch_agent_config::SeatSectionConfig;
use rand::{Rng, SeedableRng};

use super::GroundTruth;
use crate::vision::occupancy::point_in_polygon;

/// First LFW face of the held-out set.
const HELD_OUT_FROM: usize = 70;
/// Faces in `lfw_subset.npy` (the other 100 images are not faces).
const LFW_FACES: usize = 100;

/// A face photo, packed RGB.
#[derive(Debug, Clone)]
pub struct FacePhoto {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceSet {
    Tuning,
    HeldOut,
}

#[derive(Debug, Clone)]
pub struct FaceLibrary {
    pub tuning: Vec<FacePhoto>,
    pub held_out: Vec<FacePhoto>,
}

impl FaceLibrary {
    /// Loads `lfw_subset.npy` and `astronaut.png` from `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let npy = dir.join("lfw_subset.npy");
        let bytes = std::fs::read(&npy)
            .with_context(|| format!("reading {} (scripts/setup.sh fetches it)", npy.display()))?;
        let lfw = parse_lfw(&bytes).with_context(|| format!("parsing {}", npy.display()))?;
        let png = dir.join("astronaut.png");
        let astronaut = image::open(&png).with_context(|| format!("reading {}", png.display()))?.to_rgb8();
        // the face sits around (224, 116) of the 512 x 512 picture
        let crop = image::imageops::crop_imm(&astronaut, 168, 50, 112, 136).to_image();
        let mut tuning: Vec<FacePhoto> = lfw[..HELD_OUT_FROM].to_vec();
        tuning.push(FacePhoto { width: 112, height: 136, rgb: crop.into_raw() });
        Ok(Self { tuning, held_out: lfw[HELD_OUT_FROM..LFW_FACES].to_vec() })
    }

    pub fn set(&self, set: FaceSet) -> &[FacePhoto] {
        match set {
            FaceSet::Tuning => &self.tuning,
            FaceSet::HeldOut => &self.held_out,
        }
    }
}

/// The face images of an `.npy` array of shape (n, 25, 25), little-endian f64 in 0..1.
fn parse_lfw(bytes: &[u8]) -> anyhow::Result<Vec<FacePhoto>> {
    anyhow::ensure!(bytes.len() > 10 && &bytes[..6] == b"\x93NUMPY", "not an npy file");
    let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).context("npy header")?;
    anyhow::ensure!(
        header.contains("'<f8'") && header.contains("25, 25)"),
        "unexpected npy layout: {header}"
    );
    let data = &bytes[10 + header_len..];
    let n = data.len() / (25 * 25 * 8);
    anyhow::ensure!(n >= LFW_FACES, "{n} images, expected at least {LFW_FACES}");
    Ok((0..LFW_FACES)
        .map(|k| {
            let mut rgb = Vec::with_capacity(25 * 25 * 3);
            for p in 0..25 * 25 {
                let at = (k * 625 + p) * 8;
                let v = f64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
                let g = (v.clamp(0.0, 1.0) * 255.0) as u8;
                rgb.extend_from_slice(&[g, g, g]);
            }
            FacePhoto { width: 25, height: 25, rgb }
        })
        .collect())
}

/// A face the renderer placed: its seat section and box in the frame.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedFace {
    pub section: String,
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

/// Occupants the truth puts in `section`.
pub fn occupants_in(truth: &GroundTruth, section: &str) -> u32 {
    let row = |i: usize| truth.occupants_per_row.get(i).copied().unwrap_or(0);
    match section {
        "driver" => u32::from(row(0) >= 1),
        "front_passenger" => u32::from(row(0) >= 2),
        s => s.strip_prefix("rear_row_").and_then(|n| n.parse::<usize>().ok()).map_or(0, |n| row(n).min(3)),
    }
}

/// Whether the vehicle's glass is too dark to read (the same for every camera).
pub fn tinted(vehicle_id: u64, share: f64) -> bool {
    rand::rngs::StdRng::seed_from_u64(vehicle_id ^ 0x7157_eda5).random_bool(share.clamp(0.0, 1.0))
}

/// Renders the cabin of `truth` as one camera sees it: its sections hold the vehicle's
/// occupants. `camera_seed` varies lighting and pose per camera; faces stay the same people.
#[allow(clippy::too_many_arguments)]
pub fn render_cabin(
    truth: &GroundTruth,
    sections: &[SeatSectionConfig],
    width: u32,
    height: u32,
    photos: &[FacePhoto],
    camera_seed: u64,
    tint_share: f64,
) -> (Vec<u8>, Vec<PlacedFace>) {
    let (w, h) = (width as usize, height as usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(truth.vehicle_id.wrapping_mul(0x9E37_79B9) ^ camera_seed);
    let light: f32 = rng.random_range(0.6..1.25);
    let mut px = vec![0u8; w * h * 3];
    // cabin interior: a vertical gradient with a brighter windscreen band
    for r in 0..h {
        let t = r as f32 / h as f32;
        let base = (30.0 + 50.0 * (1.0 - t)) * light;
        for c in 0..w {
            let i = (r * w + c) * 3;
            px[i] = base.min(255.0) as u8;
            px[i + 1] = (base * 1.05).min(255.0) as u8;
            px[i + 2] = (base * 1.2).min(255.0) as u8;
        }
    }
    let mut placed = Vec::new();
    if photos.is_empty() {
        return (px, placed);
    }
    for (si, section) in sections.iter().enumerate() {
        let n = occupants_in(truth, &section.name) as usize;
        if n == 0 {
            continue;
        }
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, 0f32, 0f32);
        for p in &section.polygon {
            (x0, y0, x1, y1) = (x0.min(p[0]), y0.min(p[1]), x1.max(p[0]), y1.max(p[1]));
        }
        let slot_w = (x1 - x0) / n as f32;
        for k in 0..n {
            // the same person sits in this seat for every camera
            let mut who = rand::rngs::StdRng::seed_from_u64(truth.vehicle_id * 31 + si as u64 * 7 + k as u64);
            let photo = &photos[who.random_range(0..photos.len())];
            let size = (slot_w.min(y1 - y0) * rng.random_range(0.5..0.75)).clamp(24.0, 140.0);
            let mut cx = x0 + slot_w * (k as f32 + 0.5) + rng.random_range(-0.1..0.1) * slot_w;
            let mut cy = (y0 + y1) / 2.0 + rng.random_range(-0.1..0.1) * (y1 - y0);
            if !point_in_polygon([cx, cy], &section.polygon) {
                cx = x0 + slot_w * (k as f32 + 0.5);
                cy = (y0 + y1) / 2.0;
            }
            let tone =
                [rng.random_range(0.85..1.15), rng.random_range(0.75..1.0), rng.random_range(0.6..0.9)];
            let face_light = light * rng.random_range(0.8..1.2);
            let blur = rng.random_range(0..3usize);
            let occlusion =
                rng.random_bool(0.25).then(|| (rng.random_range(0..3u8), rng.random_range(0.15..0.3)));
            // head: hair and skin around the face crop, for context
            let head = size * 1.3;
            fill_ellipse(
                &mut px,
                w,
                h,
                cx,
                cy - size * 0.05,
                head / 2.0,
                head * 0.6,
                [(60.0 * face_light) as u8, (45.0 * face_light) as u8, (35.0 * face_light) as u8],
            );
            let fx0 = cx - size / 2.0;
            let fy0 = cy - size / 2.0;
            paste_face(&mut px, w, h, photo, fx0, fy0, size, tone, face_light, blur);
            if let Some((side, share)) = occlusion {
                let (ox0, oy0, ox1, oy1) = match side {
                    0 => (fx0, fy0, fx0 + size * share, fy0 + size),
                    1 => (fx0 + size * (1.0 - share), fy0, fx0 + size, fy0 + size),
                    _ => (fx0, fy0 + size * (1.0 - share), fx0 + size, fy0 + size),
                };
                fill_rect(&mut px, w, h, ox0, oy0, ox1, oy1, [20, 20, 24]);
            }
            placed.push(PlacedFace {
                section: section.name.clone(),
                x0: fx0,
                y0: fy0,
                x1: fx0 + size,
                y1: fy0 + size,
            });
        }
    }
    if tinted(truth.vehicle_id, tint_share) {
        for v in &mut px {
            *v = (f32::from(*v) * 0.08) as u8;
        }
    }
    (px, placed)
}

#[allow(clippy::too_many_arguments)]
fn paste_face(
    px: &mut [u8],
    w: usize,
    h: usize,
    photo: &FacePhoto,
    x0: f32,
    y0: f32,
    size: f32,
    tone: [f32; 3],
    light: f32,
    blur: usize,
) {
    let n = size.round().max(1.0) as usize;
    // bilinear resample into an n x n patch
    let mut patch = vec![[0f32; 3]; n * n];
    for r in 0..n {
        for c in 0..n {
            let sx = (c as f32 + 0.5) / n as f32 * photo.width as f32 - 0.5;
            let sy = (r as f32 + 0.5) / n as f32 * photo.height as f32 - 0.5;
            let (ix, iy) = (sx.floor().max(0.0) as usize, sy.floor().max(0.0) as usize);
            let (fx, fy) = ((sx - ix as f32).clamp(0.0, 1.0), (sy - iy as f32).clamp(0.0, 1.0));
            let at = |x: usize, y: usize, ch: usize| {
                let (x, y) = (x.min(photo.width - 1), y.min(photo.height - 1));
                f32::from(photo.rgb[(y * photo.width + x) * 3 + ch])
            };
            for ch in 0..3 {
                let top = at(ix, iy, ch) * (1.0 - fx) + at(ix + 1, iy, ch) * fx;
                let bottom = at(ix, iy + 1, ch) * (1.0 - fx) + at(ix + 1, iy + 1, ch) * fx;
                patch[r * n + c][ch] = (top * (1.0 - fy) + bottom * fy) * tone[ch] * light;
            }
        }
    }
    if blur > 0 {
        let src = patch.clone();
        for r in 0..n {
            for c in 0..n {
                let mut acc = [0f32; 3];
                let mut k = 0.0;
                for rr in r.saturating_sub(blur)..(r + blur + 1).min(n) {
                    for cc in c.saturating_sub(blur)..(c + blur + 1).min(n) {
                        for ch in 0..3 {
                            acc[ch] += src[rr * n + cc][ch];
                        }
                        k += 1.0;
                    }
                }
                patch[r * n + c] = acc.map(|a| a / k);
            }
        }
    }
    let (ox, oy) = (x0.round() as i64, y0.round() as i64);
    for r in 0..n {
        for c in 0..n {
            let (x, y) = (ox + c as i64, oy + r as i64);
            if x < 0 || y < 0 || x >= w as i64 || y >= h as i64 {
                continue;
            }
            let i = (y as usize * w + x as usize) * 3;
            for ch in 0..3 {
                px[i + ch] = patch[r * n + c][ch].clamp(0.0, 255.0) as u8;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn fill_rect(px: &mut [u8], w: usize, h: usize, x0: f32, y0: f32, x1: f32, y1: f32, rgb: [u8; 3]) {
    let clamp = |v: f32, max: usize| (v.round().max(0.0) as usize).min(max);
    for r in clamp(y0, h)..clamp(y1, h) {
        for c in clamp(x0, w)..clamp(x1, w) {
            px[(r * w + c) * 3..(r * w + c) * 3 + 3].copy_from_slice(&rgb);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn fill_ellipse(px: &mut [u8], w: usize, h: usize, cx: f32, cy: f32, rx: f32, ry: f32, rgb: [u8; 3]) {
    let clamp = |v: f32, max: usize| (v.round().max(0.0) as usize).min(max);
    for r in clamp(cy - ry, h)..clamp(cy + ry, h) {
        for c in clamp(cx - rx, w)..clamp(cx + rx, w) {
            let (dx, dy) = ((c as f32 - cx) / rx, (r as f32 - cy) / ry);
            if dx * dx + dy * dy <= 1.0 {
                px[(r * w + c) * 3..(r * w + c) * 3 + 3].copy_from_slice(&rgb);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::VehicleClass;

    fn truth(rows: Vec<u32>) -> GroundTruth {
        GroundTruth {
            vehicle_id: 7,
            lane: 0,
            class: VehicleClass::Car,
            speed_kmh: 100.0,
            length_m: 4.5,
            width_m: 1.8,
            height_m: 1.5,
            occupants_per_row: rows,
            crosses_scan_plane_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn sections_take_their_occupants_from_the_rows() {
        let t = truth(vec![2, 3, 1]);
        assert_eq!(occupants_in(&t, "driver"), 1);
        assert_eq!(occupants_in(&t, "front_passenger"), 1);
        assert_eq!(occupants_in(&t, "rear_row_1"), 3);
        assert_eq!(occupants_in(&t, "rear_row_2"), 1);
        assert_eq!(occupants_in(&t, "rear_row_3"), 0);
        assert_eq!(occupants_in(&truth(vec![1]), "front_passenger"), 0);
    }

    #[test]
    fn parses_an_npy_array_of_faces() {
        let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100, 25, 25), }";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        for i in 0..100 * 625 {
            bytes.extend_from_slice(&(f64::from(i % 2)).to_le_bytes());
        }
        let faces = parse_lfw(&bytes).unwrap();
        assert_eq!(faces.len(), 100);
        assert_eq!(&faces[0].rgb[..6], &[0, 0, 0, 255, 255, 255]);
    }

    #[test]
    fn places_one_face_per_occupant_inside_its_section() {
        let photo = FacePhoto { width: 2, height: 2, rgb: vec![200; 12] };
        let sections = vec![
            SeatSectionConfig {
                name: "driver".into(),
                polygon: vec![[0.0, 0.0], [100.0, 0.0], [100.0, 100.0], [0.0, 100.0]],
            },
            SeatSectionConfig {
                name: "rear_row_1".into(),
                polygon: vec![[100.0, 0.0], [300.0, 0.0], [300.0, 100.0], [100.0, 100.0]],
            },
        ];
        let (px, placed) = render_cabin(&truth(vec![1, 2]), &sections, 320, 120, &[photo], 1, 0.0);
        assert_eq!(px.len(), 320 * 120 * 3);
        assert_eq!(placed.len(), 3);
        for f in &placed {
            let s = sections.iter().find(|s| s.name == f.section).unwrap();
            assert!(point_in_polygon([(f.x0 + f.x1) / 2.0, (f.y0 + f.y1) / 2.0], &s.polygon), "{f:?}");
        }
    }
}
