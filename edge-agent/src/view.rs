//! What the local UI shows of the running pipeline, published by the stages that know it: the
//! detector's latest scan profile (at most [`SCAN_EVERY`]) with the learnt empty road and the
//! occupied lanes, its recent lane entries and exits, and vision's latest released frame per
//! camera (anonymized and re-checked, with its face boxes and seat-section polygons).
//!
//! Invariant: a frame reaches the view only from vision's `Released` path, after anonymization
//! and the fail-closed re-check, so the UI cannot serve pixels that were not anonymized; an
//! agent without `[vision]` publishes no frames at all. The view outlives config generations.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::domain::VehicleClass;

/// The detector publishes a scan at most this often.
pub const SCAN_EVERY: Duration = Duration::from_millis(100);
/// Lane events kept.
const EVENTS: usize = 500;

/// One scan as the plot shows it: points across the road (y, metres from the right edge) and
/// height above the road plane (z).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanProfile {
    pub at: Option<DateTime<Utc>>,
    pub points: Vec<(f32, f32)>,
    /// The learnt empty road, same coordinates; empty while learning.
    pub road: Vec<(f32, f32)>,
    pub lanes: u32,
    pub lane_width_m: f64,
    /// Lanes with a vehicle in them now.
    pub occupied: Vec<bool>,
    pub degraded: bool,
}

/// A vehicle entering or leaving a lane.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneEvent {
    pub at: DateTime<Utc>,
    pub lane: u32,
    pub entered: bool,
    pub class: Option<VehicleClass>,
}

/// A camera's latest released frame: anonymized JPEG bytes and what vision saw in it.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraFrame {
    pub at: DateTime<Utc>,
    pub capture_id: uuid::Uuid,
    pub jpeg: Bytes,
    /// Face boxes in frame pixels (x0, y0, x1, y1): masked before release.
    pub faces: Vec<[f32; 4]>,
    /// (name, polygon in frame pixels) of the camera's seat sections.
    pub sections: Vec<(String, Vec<[f32; 2]>)>,
}

#[derive(Default)]
struct Inner {
    events: Mutex<VecDeque<LaneEvent>>,
    frames: Mutex<BTreeMap<String, Arc<CameraFrame>>>,
}

/// The shared view; cheap to clone.
#[derive(Clone)]
pub struct SiteView {
    scan: watch::Sender<Arc<ScanProfile>>,
    inner: Arc<Inner>,
    /// Bumped on every change: what live pages wait on.
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for SiteView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteView").field("frames", &self.inner.frames.lock().unwrap().len()).finish()
    }
}

impl Default for SiteView {
    fn default() -> Self {
        Self {
            scan: watch::channel(Arc::new(ScanProfile::default())).0,
            inner: Arc::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl SiteView {
    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn publish_scan(&self, profile: ScanProfile) {
        self.scan.send_replace(Arc::new(profile));
        self.bump();
    }

    pub fn lane_event(&self, event: LaneEvent) {
        let mut events = self.inner.events.lock().unwrap();
        if events.len() == EVENTS {
            events.pop_front();
        }
        events.push_back(event);
        drop(events);
        self.bump();
    }

    /// Vision's released frame of `camera` (see the module's invariant).
    pub fn released_frame(&self, camera: &str, frame: CameraFrame) {
        self.inner.frames.lock().unwrap().insert(camera.to_owned(), Arc::new(frame));
        self.bump();
    }

    pub fn scan(&self) -> Arc<ScanProfile> {
        self.scan.borrow().clone()
    }

    /// The most recent lane events, newest last.
    pub fn events(&self, last: usize) -> Vec<LaneEvent> {
        let events = self.inner.events.lock().unwrap();
        events.iter().skip(events.len().saturating_sub(last)).cloned().collect()
    }

    /// Vehicles that left each lane within `window` before `now`.
    pub fn exits_per_lane(&self, lanes: u32, window: chrono::Duration, now: DateTime<Utc>) -> Vec<u32> {
        let mut out = vec![0u32; lanes as usize];
        for e in self.inner.events.lock().unwrap().iter().filter(|e| !e.entered && now - e.at <= window) {
            if let Some(n) = out.get_mut(e.lane as usize) {
                *n += 1;
            }
        }
        out
    }

    pub fn frames(&self) -> BTreeMap<String, Arc<CameraFrame>> {
        self.inner.frames.lock().unwrap().clone()
    }

    pub fn frame(&self, camera: &str) -> Option<Arc<CameraFrame>> {
        self.inner.frames.lock().unwrap().get(camera).cloned()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_counted_per_lane_within_the_window() {
        let view = SiteView::default();
        let now = Utc::now();
        for (secs, lane, entered) in [(90, 0, false), (30, 0, false), (20, 1, false), (10, 1, true)] {
            view.lane_event(LaneEvent {
                at: now - chrono::Duration::seconds(secs),
                lane,
                entered,
                class: None,
            });
        }
        assert_eq!(view.exits_per_lane(2, chrono::Duration::seconds(60), now), vec![1, 1]);
        assert_eq!(view.events(2).len(), 2);
    }

    #[test]
    fn subscribers_see_every_change() {
        let view = SiteView::default();
        let mut rx = view.subscribe();
        view.publish_scan(ScanProfile::default());
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        view.lane_event(LaneEvent { at: Utc::now(), lane: 0, entered: true, class: None });
        assert!(rx.has_changed().unwrap());
    }
}
