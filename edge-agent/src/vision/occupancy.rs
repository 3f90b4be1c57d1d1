//! Occupant counting: faces map to seat sections through each camera's calibrated polygons;
//! a vehicle's frames (several cameras, several instants) fuse into per-section counts with a
//! confidence; the lane's policy turns the total into a decision. Pure: no I/O, no model.
//!
//! Fusion rules: a section's count is the largest count any readable frame covering it saw
//! (a view where a head hides another undercounts, never overcounts); its confidence is the
//! mean score of the faces counted there, lowered to one minus the best score that stayed
//! below the counting threshold (a face seen too faintly to count may be an occupant missed).
//! A vehicle whose weakest section's confidence is below `min_confidence` is unreadable. A vehicle whose driver no readable frame found
//! is unreadable: every vehicle has a driver, so not seeing one means the windows were not read.
//! So is a vehicle with a section that only unreadable frames cover (the side camera's glare,
//! say): counting it as empty would undercount, and could turn a full car into a violation.

use std::collections::BTreeMap;

use chrono::{DateTime, Timelike, Utc};
use lanewatch_agent_config::{LanePolicyConfig, SeatSectionConfig, parse_window};

use super::model::Face;
use crate::domain::{OccupancyStatus, SectionCount, ValueClass};

/// Most occupants one section can hold; detections beyond are duplicates or reflections.
fn capacity(section: &str) -> u32 {
    match section {
        "driver" | "front_passenger" => 1,
        _ => 3,
    }
}

/// Whether `p` lies inside `polygon` (even-odd rule; points on an edge may go either way).
pub fn point_in_polygon(p: [f32; 2], polygon: &[[f32; 2]]) -> bool {
    let mut inside = false;
    let n = polygon.len();
    for i in 0..n {
        let (a, b) = (polygon[i], polygon[(i + n - 1) % n]);
        if (a[1] > p[1]) != (b[1] > p[1]) {
            let x = a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
            if p[0] < x {
                inside = !inside;
            }
        }
    }
    inside
}

/// What one frame says about each section its camera covers.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameCounts {
    /// Whether the frame was readable: enough contrast in the sections, or a face counted
    /// there (a face seen proves the glass was seen through).
    pub readable: bool,
    /// Luma standard deviation over the sections (0-255).
    pub contrast: f32,
    /// Per covered section: scores of faces at or above the count threshold, and the best
    /// score below it.
    pub sections: BTreeMap<String, SectionSeen>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SectionSeen {
    pub counted: Vec<f32>,
    pub best_below: f32,
}

/// Assigns faces (by centre) to the camera's sections; `contrast` over the sections decides
/// readability with `min_contrast`, unless a face was counted.
pub fn count_frame(
    faces: &[Face],
    sections: &[SeatSectionConfig],
    threshold: f32,
    contrast: f32,
    min_contrast: f32,
) -> FrameCounts {
    let mut out: BTreeMap<String, SectionSeen> =
        sections.iter().map(|s| (s.name.clone(), SectionSeen::default())).collect();
    for f in faces {
        let Some(s) = sections.iter().find(|s| point_in_polygon(f.centre(), &s.polygon)) else { continue };
        let seen = out.get_mut(&s.name).expect("inserted above");
        if f.score >= threshold {
            seen.counted.push(f.score);
        } else {
            seen.best_below = seen.best_below.max(f.score);
        }
    }
    let readable = contrast >= min_contrast || out.values().any(|s| !s.counted.is_empty());
    FrameCounts { readable, contrast, sections: out }
}

/// Fuses the frames of one vehicle. `model` names the face model for the record; a count whose
/// confidence is below `min_confidence` is unreadable instead.
pub fn fuse(frames: &[FrameCounts], model: &str, min_confidence: f32) -> OccupancyStatus {
    // a section no readable frame covered is unknown: a count without it is only a lower bound
    let unread = frames
        .iter()
        .flat_map(|f| f.sections.keys())
        .any(|name| !frames.iter().any(|f| f.readable && f.sections.contains_key(name)));
    if unread {
        return OccupancyStatus::Unreadable { model: model.to_owned() };
    }
    let mut best: BTreeMap<&str, (u32, f32)> = BTreeMap::new();
    for f in frames.iter().filter(|f| f.readable) {
        for (name, seen) in &f.sections {
            let n = (seen.counted.len() as u32).min(capacity(name));
            // a face seen below the counting threshold may be an occupant not counted
            let confidence = if n > 0 {
                let mut scores = seen.counted.clone();
                scores.sort_by(|a, b| b.total_cmp(a));
                let mean = scores.iter().take(n as usize).sum::<f32>() / n as f32;
                mean.min(1.0 - seen.best_below)
            } else {
                1.0 - seen.best_below
            };
            let entry = best.entry(name.as_str()).or_insert((n, confidence));
            if n > entry.0 || (n == entry.0 && confidence > entry.1) {
                *entry = (n, confidence);
            }
        }
    }
    if best.get("driver").is_none_or(|(n, _)| *n == 0) {
        return OccupancyStatus::Unreadable { model: model.to_owned() };
    }
    let sections: Vec<SectionCount> = best
        .iter()
        .map(|(name, (n, c))| SectionCount { section: (*name).to_owned(), occupants: *n, confidence: *c })
        .collect();
    let confidence = sections.iter().map(|s| s.confidence).fold(1.0, f32::min);
    if confidence < min_confidence {
        return OccupancyStatus::Unreadable { model: model.to_owned() };
    }
    OccupancyStatus::Counted {
        occupants: sections.iter().map(|s| s.occupants).sum(),
        confidence,
        sections,
        model: model.to_owned(),
    }
}

/// The agent's decision for a capture in `lane` at `t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No rule in force for the lane: only the counts matter.
    Statistics,
    Compliant,
    ViolationCandidate,
    /// Vision could not read the vehicle: never a violation.
    Unreadable,
}

impl Decision {
    pub fn value_class(self) -> ValueClass {
        match self {
            Self::Statistics => ValueClass::Statistics,
            Self::Compliant | Self::Unreadable => ValueClass::Compliant,
            Self::ViolationCandidate => ValueClass::ViolationCandidate,
        }
    }
}

/// Whether `policy` is in force at `t` (UTC windows; none: always).
pub fn in_force(policy: &LanePolicyConfig, t: DateTime<Utc>) -> bool {
    if policy.windows_utc.is_empty() {
        return true;
    }
    let minute = t.hour() * 60 + t.minute();
    policy
        .windows_utc
        .iter()
        .filter_map(|w| parse_window(w))
        .any(|(a, b)| if a <= b { (a..b).contains(&minute) } else { minute >= a || minute < b })
}

/// Applies the first policy covering `lane` that is in force at `t`.
pub fn decide(
    occupancy: &OccupancyStatus,
    lane: u32,
    t: DateTime<Utc>,
    policies: &[LanePolicyConfig],
) -> Decision {
    let rule = policies.iter().find(|p| p.lanes.contains(&lane) && in_force(p, t));
    match (occupancy, rule) {
        (OccupancyStatus::Unreadable { .. } | OccupancyStatus::Unknown, _) => Decision::Unreadable,
        (OccupancyStatus::Counted { .. }, None) => Decision::Statistics,
        (OccupancyStatus::Counted { occupants, .. }, Some(p)) => {
            if *occupants >= p.min_occupants {
                Decision::Compliant
            } else {
                Decision::ViolationCandidate
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(name: &str, x: f32, y: f32, size: f32) -> SeatSectionConfig {
        SeatSectionConfig {
            name: name.into(),
            polygon: vec![[x, y], [x + size, y], [x + size, y + size], [x, y + size]],
        }
    }

    fn face_at(x: f32, y: f32, score: f32) -> Face {
        Face { x0: x - 5.0, y0: y - 5.0, x1: x + 5.0, y1: y + 5.0, score, landmarks: [[0.0; 2]; 5] }
    }

    #[test]
    fn point_in_polygon_handles_concave_shapes() {
        // an L shape
        let l = [[0.0, 0.0], [10.0, 0.0], [10.0, 4.0], [4.0, 4.0], [4.0, 10.0], [0.0, 10.0]];
        assert!(point_in_polygon([2.0, 8.0], &l));
        assert!(point_in_polygon([8.0, 2.0], &l));
        assert!(!point_in_polygon([8.0, 8.0], &l), "in the notch");
        assert!(!point_in_polygon([-1.0, 2.0], &l));
    }

    fn front() -> Vec<SeatSectionConfig> {
        vec![square("driver", 0.0, 0.0, 100.0), square("front_passenger", 100.0, 0.0, 100.0)]
    }

    #[test]
    fn faces_count_in_the_section_of_their_centre() {
        let faces = [face_at(50.0, 50.0, 0.9), face_at(150.0, 50.0, 0.3), face_at(500.0, 50.0, 0.99)];
        let counts = count_frame(&faces, &front(), 0.5, 50.0, 12.0);
        assert_eq!(counts.sections["driver"].counted, vec![0.9]);
        assert!(counts.sections["front_passenger"].counted.is_empty());
        assert_eq!(counts.sections["front_passenger"].best_below, 0.3);
        assert_eq!(counts.sections.len(), 2, "the face outside every section counts nowhere");
    }

    #[test]
    fn fusion_takes_each_section_from_the_cameras_that_see_it() {
        let front_frame =
            count_frame(&[face_at(50.0, 50.0, 0.9), face_at(150.0, 50.0, 0.8)], &front(), 0.5, 50.0, 12.0);
        let side = vec![square("rear_row_1", 0.0, 0.0, 300.0)];
        let side_a = count_frame(&[face_at(50.0, 50.0, 0.7)], &side, 0.5, 50.0, 12.0);
        let side_b =
            count_frame(&[face_at(50.0, 50.0, 0.7), face_at(200.0, 50.0, 0.6)], &side, 0.5, 50.0, 12.0);
        let OccupancyStatus::Counted { occupants, sections, confidence, .. } =
            fuse(&[front_frame, side_a, side_b], "m", 0.0)
        else {
            panic!("counted");
        };
        assert_eq!(occupants, 4, "driver, passenger and two in the rear (the better rear view)");
        let rear = sections.iter().find(|s| s.section == "rear_row_1").unwrap();
        assert_eq!(rear.occupants, 2);
        assert!((rear.confidence - 0.65).abs() < 1e-6);
        assert!((confidence - 0.65).abs() < 1e-6, "the weakest section");
    }

    #[test]
    fn a_face_too_faint_to_count_lowers_confidence_down_to_unreadable() {
        let faces = [face_at(50.0, 50.0, 0.9), face_at(150.0, 50.0, 0.9), face_at(180.0, 80.0, 0.45)];
        let frame = count_frame(&faces, &front(), 0.5, 50.0, 12.0);
        let OccupancyStatus::Counted { occupants, confidence, .. } =
            fuse(std::slice::from_ref(&frame), "m", 0.0)
        else {
            panic!("counted without a minimum confidence")
        };
        assert_eq!(occupants, 2);
        assert!((confidence - 0.55).abs() < 1e-6, "{confidence}");
        assert!(matches!(fuse(&[frame], "m", 0.6), OccupancyStatus::Unreadable { .. }));
    }

    #[test]
    fn no_driver_or_unreadable_frames_make_the_vehicle_unreadable() {
        let dark = count_frame(&[face_at(50.0, 50.0, 0.3)], &front(), 0.5, 1.0, 12.0);
        assert!(
            matches!(fuse(&[dark], "m", 0.0), OccupancyStatus::Unreadable { .. }),
            "unreadable frames are ignored"
        );
        let dark_with_a_face = count_frame(&[face_at(50.0, 50.0, 0.9)], &front(), 0.5, 1.0, 12.0);
        assert!(dark_with_a_face.readable, "a counted face proves the glass was seen through");
        let front_ok = count_frame(&[face_at(50.0, 50.0, 0.9)], &front(), 0.5, 50.0, 12.0);
        let side = vec![square("rear_row_1", 0.0, 0.0, 300.0)];
        let side_dark = count_frame(&[], &side, 0.5, 1.0, 12.0);
        assert!(
            matches!(
                fuse(&[front_ok.clone(), side_dark.clone()], "m", 0.0),
                OccupancyStatus::Unreadable { .. }
            ),
            "the rear row was not read: not counted as empty"
        );
        let side_ok = count_frame(&[], &side, 0.5, 50.0, 12.0);
        assert!(
            matches!(
                fuse(&[front_ok, side_dark, side_ok], "m", 0.0),
                OccupancyStatus::Counted { occupants: 1, .. }
            ),
            "another readable view of the rear row is enough"
        );
        let passenger_only = count_frame(&[face_at(150.0, 50.0, 0.9)], &front(), 0.5, 50.0, 12.0);
        assert!(matches!(fuse(&[passenger_only], "m", 0.0), OccupancyStatus::Unreadable { .. }));
        assert!(matches!(fuse(&[], "m", 0.0), OccupancyStatus::Unreadable { .. }));
        let two_drivers =
            count_frame(&[face_at(20.0, 20.0, 0.9), face_at(70.0, 70.0, 0.9)], &front(), 0.5, 50.0, 12.0);
        let OccupancyStatus::Counted { occupants, .. } = fuse(&[two_drivers], "m", 0.0) else { panic!() };
        assert_eq!(occupants, 1, "a driver's seat holds one");
    }

    #[test]
    fn policy_decides_per_lane_and_window_and_never_flags_the_unreadable() {
        let t = |h: u32| chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, 2, h, 15, 0).unwrap();
        let hov2 =
            LanePolicyConfig { lanes: vec![2], min_occupants: 2, windows_utc: vec!["06:00-09:00".into()] };
        let hov3 =
            LanePolicyConfig { lanes: vec![3], min_occupants: 3, windows_utc: vec!["22:00-02:00".into()] };
        let policies = [hov2, hov3];
        let counted = |n: u32| OccupancyStatus::Counted {
            occupants: n,
            sections: vec![],
            confidence: 1.0,
            model: "m".into(),
        };
        assert_eq!(decide(&counted(1), 2, t(7), &policies), Decision::ViolationCandidate);
        assert_eq!(decide(&counted(2), 2, t(7), &policies), Decision::Compliant);
        assert_eq!(decide(&counted(1), 2, t(10), &policies), Decision::Statistics, "outside the window");
        assert_eq!(decide(&counted(1), 0, t(7), &policies), Decision::Statistics, "no rule for lane 0");
        assert_eq!(
            decide(&counted(2), 3, t(1), &policies),
            Decision::ViolationCandidate,
            "window wraps midnight"
        );
        assert_eq!(decide(&counted(3), 3, t(23), &policies), Decision::Compliant);
        let unreadable = OccupancyStatus::Unreadable { model: "m".into() };
        assert_eq!(decide(&unreadable, 2, t(7), &policies), Decision::Unreadable);
        assert_eq!(Decision::Unreadable.value_class(), ValueClass::Compliant);
    }
}
