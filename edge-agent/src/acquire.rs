//! Acquire (one per camera): keeps the camera's recent frames in a ring, takes the frame nearest
//! each trigger time (before or after it) and, once the vehicle's Exit finalized it, emits a
//! capture.
//!
//! Each (re)start opens the camera's source afresh. A camera that delivers no frame for
//! `stall_after_ms` is **stalled**: its state (`CameraState`) says `stalled`, the `stalls` counter
//! grows, and the component fails with an error naming the camera and the source, so the
//! supervisor drops the source and reopens it after its backoff (and escalates, exit 3, when
//! that keeps failing past `supervision.max_restarts`). Pending acquisitions of a restarted
//! camera are lost; frames of the new source fill a fresh ring.
//!
//! Raw frames are encoded to JPEG only when they become a capture; file-replay frames keep
//! their bytes unchanged.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{
    AcquireRequest, Capture, CaptureMeta, Frame, FramePayload, OccupancyStatus, TestReply, ValueClass,
    VehicleClass,
};
use crate::load::WaitingOn;
use crate::sources::{CameraSource, OpenCamera};
use crate::stage::{Inlet, Outlet};
use crate::state::{CameraLink, CameraState, ComponentState};
use crate::supervisor::{Component, ComponentCtx, RunFuture};

/// How long to wait for a frame at or after the trigger time before taking the nearest one.
const FRAME_WAIT: Duration = Duration::from_millis(1000);
/// A taken frame whose vehicle never exits is dropped after this long.
const FINALIZE_TIMEOUT: Duration = Duration::from_secs(60);
const JPEG_QUALITY: u8 = 85;

#[derive(Debug)]
struct Pending {
    lane: u32,
    detected_at: DateTime<Utc>,
    trigger_at: DateTime<Utc>,
    speed_kmh: Option<f64>,
    frame: Option<Frame>,
    finalized: Option<(f32, f32, VehicleClass)>,
    requested_at: Option<DateTime<Utc>>,
}

/// Frame ring plus pending acquisitions; pure apart from the clock passed in.
pub struct Acquirer {
    ring: VecDeque<Frame>,
    ring_frames: usize,
    pending: BTreeMap<u64, Pending>,
    /// Operators' test captures waiting for a frame: (capture id, lane, answer).
    tests: Vec<(Uuid, u32, TestReply)>,
}

/// A capture ready to encode: the frame and the vehicle facts.
pub struct Ready {
    pub track: u64,
    pub lane: u32,
    pub detected_at: DateTime<Utc>,
    pub frame: Frame,
    pub height_m: f32,
    pub width_m: f32,
    pub class: VehicleClass,
    pub speed_kmh: Option<f32>,
    /// An operator's test capture: its id, and where to say it was made.
    pub test: Option<(Uuid, TestReply)>,
    /// When the trigger's request arrived (a trace's `detect` ends, its `trigger` starts).
    pub requested_at: Option<DateTime<Utc>>,
}

impl Acquirer {
    pub fn new(ring_frames: usize) -> Self {
        Self {
            ring: VecDeque::with_capacity(ring_frames),
            ring_frames,
            pending: BTreeMap::new(),
            tests: Vec::new(),
        }
    }

    pub fn push_frame(&mut self, frame: Frame) {
        if self.ring.len() == self.ring_frames {
            self.ring.pop_front();
        }
        self.ring.push_back(frame);
    }

    pub fn request(&mut self, request: AcquireRequest) {
        match request {
            AcquireRequest::Take { track, lane, detected_at, trigger_at, speed_kmh } => {
                let requested_at = Some(Utc::now());
                let pending = Pending {
                    lane,
                    detected_at,
                    trigger_at,
                    speed_kmh,
                    frame: None,
                    finalized: None,
                    requested_at,
                };
                self.pending.insert(track, pending);
            }
            AcquireRequest::Finalize { track, max_height_m, width_m, class } => {
                match self.pending.get_mut(&track) {
                    Some(p) => p.finalized = Some((max_height_m, width_m, class)),
                    None => tracing::warn!(track, "finalize for unknown track ignored"),
                }
            }
            AcquireRequest::Test { capture_id, lane, reply } => self.tests.push((capture_id, lane, reply)),
        }
    }

    fn nearest(&self, t: DateTime<Utc>) -> Option<&Frame> {
        self.ring.iter().min_by_key(|f| (f.t - t).num_microseconds().unwrap_or(i64::MAX).unsigned_abs())
    }

    /// Takes frames for due triggers and returns the acquisitions that are complete.
    /// `now` is the camera clock; `force` takes the nearest frame for every pending trigger.
    pub fn poll(&mut self, now: DateTime<Utc>, force: bool) -> Vec<Ready> {
        let mut ready = self.poll_tests(force);
        let latest = self.ring.back().map(|f| f.t);
        let wait = chrono::Duration::from_std(FRAME_WAIT).expect("small duration");
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.frame.is_none())
            .filter(|(_, p)| force || latest.is_some_and(|t| t >= p.trigger_at) || now - p.trigger_at > wait)
            .map(|(k, _)| *k)
            .collect();
        for track in due {
            let trigger_at = self.pending[&track].trigger_at;
            let frame = self.nearest(trigger_at).cloned();
            if let Some(p) = self.pending.get_mut(&track) {
                p.frame = frame;
            }
        }
        let timeout = chrono::Duration::from_std(FINALIZE_TIMEOUT).expect("small duration");
        let tracks: Vec<u64> = self.pending.keys().copied().collect();
        for track in tracks {
            let p = &self.pending[&track];
            let complete = p.frame.is_some() && p.finalized.is_some();
            let stale = now - p.trigger_at > timeout;
            if complete {
                let p = self.pending.remove(&track).expect("present");
                let (height_m, width_m, class) = p.finalized.expect("checked");
                ready.push(Ready {
                    track,
                    lane: p.lane,
                    detected_at: p.detected_at,
                    frame: p.frame.expect("checked"),
                    height_m,
                    width_m,
                    class,
                    speed_kmh: p.speed_kmh.map(|v| v as f32),
                    test: None,
                    requested_at: p.requested_at,
                });
            } else if stale || (force && p.frame.is_none()) {
                tracing::warn!(track, has_frame = p.frame.is_some(), "acquisition dropped incomplete");
                self.pending.remove(&track);
            }
        }
        ready
    }

    /// Test captures of the newest frame; those whose asker gave up are dropped, and with
    /// `force` (input ended) those without a frame are answered with an error.
    fn poll_tests(&mut self, force: bool) -> Vec<Ready> {
        self.tests.retain(|(_, _, reply)| !reply.abandoned());
        let Some(frame) = self.ring.back().cloned() else {
            if force {
                for (_, _, reply) in self.tests.drain(..) {
                    reply.send(Err("the camera stopped before it had a frame".into()));
                }
            }
            return Vec::new();
        };
        self.tests
            .drain(..)
            .map(|(capture_id, lane, reply)| Ready {
                track: 0,
                lane,
                detected_at: frame.t,
                frame: frame.clone(),
                height_m: 0.0,
                width_m: 0.0,
                class: VehicleClass::Unknown,
                speed_kmh: None,
                test: Some((capture_id, reply)),
                requested_at: None,
            })
            .collect()
    }

    pub fn pending(&self) -> usize {
        self.pending.len() + self.tests.len()
    }

    /// The bytes of pixels and encoded images its frame ring holds now.
    pub fn ring_bytes(&self) -> u64 {
        self.ring
            .iter()
            .map(|f| match &f.payload {
                FramePayload::Rgb { pixels, .. } => pixels.len() as u64,
                FramePayload::Encoded { bytes, .. } => bytes.len() as u64,
            })
            .sum()
    }
}

/// Encodes a frame (raw → JPEG; encoded → unchanged) and returns bytes and content type.
pub fn encode_frame(frame: &Frame) -> anyhow::Result<(Bytes, String)> {
    match &frame.payload {
        FramePayload::Encoded { bytes, content_type } => Ok((bytes.clone(), (*content_type).to_owned())),
        FramePayload::Rgb { width, height, pixels } => {
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
                .encode(pixels, *width, *height, image::ExtendedColorType::Rgb8)
                .context("encoding jpeg")?;
            Ok((Bytes::from(out), "image/jpeg".to_owned()))
        }
    }
}

pub struct AcquireComponent {
    pub camera_id: String,
    pub site_id: String,
    pub config_version: u64,
    pub ring_frames: usize,
    /// Opens the camera's source at every (re)start.
    pub open: OpenCamera,
    /// No frame for this long: stalled.
    pub stall_after: Duration,
    /// Stalls since the agent started (kept across restarts).
    pub stalls: Arc<AtomicU64>,
    /// Test captures made since the agent started (kept across restarts).
    pub tests: Arc<AtomicU64>,
    pub input: Inlet<AcquireRequest>,
    pub output: Outlet<Capture>,
    /// The agent traces captures: each carries its stage marks (`traces.rs`).
    pub trace: bool,
}

/// How often the acquire component publishes its state.
const DETAIL_EVERY: Duration = Duration::from_secs(1);
/// Extra time a freshly opened source gets for its first frame.
const OPEN_GRACE: Duration = Duration::from_secs(5);

impl Component for AcquireComponent {
    fn name(&self) -> String {
        format!("acquire-{}", self.camera_id)
    }

    fn run(&self, ctx: ComponentCtx) -> RunFuture {
        let (open, input, output) = (self.open.clone(), self.input.clone(), self.output.clone());
        let (camera_id, site_id, config_version, ring_frames) =
            (self.camera_id.clone(), self.site_id.clone(), self.config_version, self.ring_frames);
        let (stall_after, stalls, tests) = (self.stall_after, self.stalls.clone(), self.tests.clone());
        let trace = self.trace;
        Box::pin(async move {
            let mut input = input.lock().await;
            let mut source = open().with_context(|| format!("camera {camera_id}: opening its source"))?;
            let mut acquirer = Acquirer::new(ring_frames);
            // the camera thread's CPU is this component's busy time too
            let (busy, mut camera_cpu) = (ctx.busy(), std::time::Duration::ZERO);
            let mut frames = 0u64;
            let mut last_frame_at: Option<DateTime<Utc>> = None;
            let mut last_frame = tokio::time::Instant::now();
            let state = |link: CameraLink,
                         frames: u64,
                         pending: usize,
                         last: Option<DateTime<Utc>>,
                         source: &dyn CameraSource| {
                ComponentState::Camera(CameraState {
                    state: link,
                    frames,
                    pending: pending as u64,
                    stalls: stalls.load(Ordering::Relaxed),
                    stall_after_ms: stall_after.as_millis() as u64,
                    last_frame_at: last,
                    source: source.state(),
                    test_captures: tests.load(Ordering::Relaxed),
                })
            };
            ctx.state(state(CameraLink::Opening, 0, 0, None, &*source));
            let mut tick = tokio::time::interval(DETAIL_EVERY.min(stall_after / 4));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let (mut last_detail, mut publish_now) = (tokio::time::Instant::now(), false);
            let mut input_open = true;
            while input_open {
                ctx.wait_on(WaitingOn::Device);
                tokio::select! {
                    frame = source.next_frame() => {
                        let frame = frame.context("reading frame")?;
                        last_frame_at = Some(frame.t);
                        last_frame = tokio::time::Instant::now();
                        if frames == 0 {
                            tracing::info!(camera = %camera_id, "camera delivering frames");
                        }
                        acquirer.push_frame(frame);
                        frames += 1;
                    }
                    request = input.recv() => match request {
                        Some(request) => acquirer.request(request),
                        None => input_open = false,
                    },
                    _ = tick.tick() => {
                        // opening (discovery, negotiation) may take a while before the first frame
                        let limit = if frames == 0 { stall_after + OPEN_GRACE } else { stall_after };
                        if last_frame.elapsed() > limit {
                            let n = stalls.fetch_add(1, Ordering::Relaxed) + 1;
                            ctx.state(state(CameraLink::Stalled, frames, acquirer.pending(), last_frame_at, &*source));
                            tracing::warn!(camera = %camera_id, stalls = n, stall_after_ms = stall_after.as_millis() as u64, "camera stalled, reopening its source");
                            anyhow::bail!(
                                "camera {camera_id} stalled: no frame for {} ms{}",
                                stall_after.as_millis(),
                                source.state().map(|s| format!(" from {}", s.source)).unwrap_or_default()
                            );
                        }
                    }
                }
                if let Some(cpu) = source.thread_cpu() {
                    busy.add(cpu.saturating_sub(camera_cpu));
                    camera_cpu = cpu;
                }
                for ready in acquirer.poll(Utc::now(), !input_open) {
                    let test = ready.test.as_ref().map(|(_, reply)| reply.clone());
                    let capture = tokio::task::spawn_blocking({
                        let (camera_id, site_id, busy) = (camera_id.clone(), site_id.clone(), busy.clone());
                        move || {
                            busy.measure(|| build_capture(ready, &camera_id, &site_id, config_version, trace))
                        }
                    })
                    .await
                    .context("capture encode task")??;
                    tracing::info!(capture_id = %capture.meta.capture_id, camera = %camera_id, lane = capture.meta.lane, class = ?capture.meta.class, test = capture.meta.test, "capture made");
                    ctx.waiting(WaitingOn::Downstream, output.send(capture)).await?;
                    ctx.processed(1);
                    if let Some(reply) = test {
                        tests.fetch_add(1, Ordering::Relaxed);
                        reply.send(Ok(()));
                        publish_now = true;
                    }
                }
                if publish_now || last_detail.elapsed() >= DETAIL_EVERY || frames == 1 {
                    (last_detail, publish_now) = (tokio::time::Instant::now(), false);
                    let link = if frames == 0 { CameraLink::Opening } else { CameraLink::Streaming };
                    ctx.state(state(link, frames, acquirer.pending(), last_frame_at, &*source));
                    ctx.memory(acquirer.ring_bytes());
                }
            }
            output.close();
            Ok(())
        })
    }
}

fn build_capture(
    ready: Ready,
    camera_id: &str,
    site_id: &str,
    config_version: u64,
    trace: bool,
) -> anyhow::Result<Capture> {
    let (image, content_type) = encode_frame(&ready.frame)?;
    Ok(Capture {
        meta: CaptureMeta {
            capture_id: ready.test.as_ref().map_or_else(Uuid::now_v7, |(id, _)| *id),
            site_id: site_id.to_owned(),
            lane: ready.lane,
            captured_at: ready.frame.t,
            detected_at: ready.detected_at,
            class: ready.class,
            // vision (infer/anonymize) does not run yet: nothing is known about occupants
            occupancy: OccupancyStatus::Unknown,
            height_m: ready.height_m,
            width_m: ready.width_m,
            camera_id: camera_id.to_owned(),
            config_version,
            content_type,
            value_class: ValueClass::from_occupancy(OccupancyStatus::Unknown),
            speed_kmh: ready.speed_kmh,
            test: ready.test.is_some(),
            trace_parent: None,
        },
        image,
        trace: trace.then(|| crate::domain::StageMarks::made(ready.requested_at)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::{Mutex, mpsc};

    fn frame(t: DateTime<Utc>, tag: u8) -> Frame {
        Frame {
            t,
            payload: FramePayload::Encoded { bytes: Bytes::from(vec![tag]), content_type: "image/png" },
        }
    }

    #[test]
    fn a_test_capture_takes_the_newest_frame_and_skips_abandoned_requests() {
        let t0 = Utc::now();
        let mut acq = Acquirer::new(4);
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let (capture_id, reply) = (Uuid::now_v7(), TestReply::new(tx));
        acq.request(AcquireRequest::Test { capture_id, lane: 1, reply: reply.clone() });
        assert!(acq.poll(t0, false).is_empty(), "no frame yet: it waits");
        assert_eq!(acq.pending(), 1);
        // asked and given up on: dropped unanswered
        let (gone_tx, gone_rx) = tokio::sync::oneshot::channel();
        drop(gone_rx);
        acq.request(AcquireRequest::Test {
            capture_id: Uuid::now_v7(),
            lane: 1,
            reply: TestReply::new(gone_tx),
        });
        acq.push_frame(frame(t0, 1));
        acq.push_frame(frame(t0 + chrono::Duration::milliseconds(100), 2));
        let ready = acq.poll(t0, false);
        assert_eq!(ready.len(), 1, "only the request someone waits for");
        let r = &ready[0];
        assert_eq!(
            (r.lane, r.class, r.test.as_ref().map(|(id, _)| *id)),
            (1, VehicleClass::Unknown, Some(capture_id))
        );
        assert!(
            matches!(&r.frame.payload, FramePayload::Encoded { bytes, .. } if bytes[..] == [2]),
            "the newest"
        );
        let capture = build_capture(ready.into_iter().next().unwrap(), "front", "site-a", 3, false).unwrap();
        assert!(capture.meta.test);
        assert_eq!(capture.meta.capture_id, capture_id, "the id the answer names");
        assert!(rx.try_recv().is_err(), "answered only once the capture is handed on");
        assert_eq!(acq.pending(), 0);
    }

    #[test]
    fn a_camera_that_ends_without_a_frame_answers_its_test_captures() {
        let mut acq = Acquirer::new(4);
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        acq.request(AcquireRequest::Test { capture_id: Uuid::now_v7(), lane: 0, reply: TestReply::new(tx) });
        assert!(acq.poll(Utc::now(), true).is_empty());
        assert_eq!(rx.try_recv().unwrap(), Err("the camera stopped before it had a frame".to_owned()));
    }

    #[test]
    fn takes_nearest_frame_and_finalizes_on_exit() {
        let t0 = Utc::now();
        let ms = chrono::Duration::milliseconds;
        let mut a = Acquirer::new(4);
        a.push_frame(frame(t0, 0));
        a.request(AcquireRequest::Take {
            track: 1,
            lane: 2,
            detected_at: t0,
            trigger_at: t0 + ms(140),
            speed_kmh: Some(72.5),
        });
        assert!(a.poll(t0, false).is_empty(), "waits for a frame after the trigger time");
        a.push_frame(frame(t0 + ms(100), 1));
        a.push_frame(frame(t0 + ms(200), 2));
        assert!(a.poll(t0 + ms(200), false).is_empty(), "not finalized yet");
        a.push_frame(frame(t0 + ms(300), 3));
        a.push_frame(frame(t0 + ms(400), 4));
        a.request(AcquireRequest::Finalize {
            track: 1,
            max_height_m: 1.5,
            width_m: 1.8,
            class: VehicleClass::Car,
        });
        let ready = a.poll(t0 + ms(400), false);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].frame.t, t0 + ms(100), "nearest to 140 ms");
        let capture = build_capture(ready.into_iter().next().unwrap(), "front", "site-a", 3, false).unwrap();
        assert_eq!(capture.image, Bytes::from(vec![1u8]), "encoded bytes pass through unchanged");
        assert_eq!(capture.meta.content_type, "image/png");
        assert_eq!(capture.meta.occupancy, OccupancyStatus::Unknown);
        assert_eq!(capture.meta.speed_kmh, Some(72.5), "the entry speed travels with the capture");
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn takes_the_nearest_frame_after_the_trigger_when_that_is_nearer() {
        let t0 = Utc::now();
        let ms = chrono::Duration::milliseconds;
        let mut a = Acquirer::new(8);
        for i in 0..5 {
            a.push_frame(frame(t0 + ms(100 * i), i as u8));
        }
        // 160 ms: 200 is nearer than 100; 349 ms: 300 is nearer than 400; before the ring: oldest
        let cases = [(1, 160, 200), (2, 349, 300), (3, -50, 0)];
        for (track, trigger_ms, _) in cases {
            a.request(AcquireRequest::Take {
                track,
                lane: 0,
                detected_at: t0,
                trigger_at: t0 + ms(trigger_ms),
                speed_kmh: None,
            });
            a.request(AcquireRequest::Finalize {
                track,
                max_height_m: 1.5,
                width_m: 1.8,
                class: VehicleClass::Car,
            });
        }
        let mut ready = a.poll(t0 + ms(400), false);
        ready.sort_by_key(|r| r.track);
        let taken: Vec<i64> = ready.iter().map(|r| (r.frame.t - t0).num_milliseconds()).collect();
        assert_eq!(taken, cases.map(|c| c.2).to_vec());
    }

    /// Delivers `frames` frames 100 ms apart, then nothing. Cancel-safe.
    struct Dying {
        frames: u32,
    }

    impl crate::sources::CameraSource for Dying {
        fn next_frame(&mut self) -> futures::future::BoxFuture<'_, anyhow::Result<Frame>> {
            Box::pin(async move {
                if self.frames == 0 {
                    futures::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.frames -= 1;
                Ok(frame(Utc::now(), 0))
            })
        }
        fn state(&self) -> Option<crate::state::CameraSourceState> {
            Some(crate::state::CameraSourceState { source: "dying test camera".into(), dropped_frames: 0 })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_camera_without_frames_is_reported_stalled_and_fails() {
        let (_tx, rx) = mpsc::channel(4);
        let stalls = Arc::new(AtomicU64::new(0));
        let component = AcquireComponent {
            camera_id: "front".into(),
            site_id: "s".into(),
            config_version: 0,
            ring_frames: 4,
            open: Arc::new(|| Ok(Box::new(Dying { frames: 3 }) as Box<dyn crate::sources::CameraSource>)),
            stall_after: Duration::from_millis(500),
            stalls: stalls.clone(),
            tests: Default::default(),
            input: Arc::new(Mutex::new(rx)),
            output: Outlet::closed(),
            trace: false,
        };
        let registry = crate::supervisor::Registry::default();
        let ctx = ComponentCtx::new("acquire-front", &registry, tokio::sync::watch::channel(false).1);
        let started = tokio::time::Instant::now();
        let err = component.run(ctx.clone()).await.unwrap_err();
        assert_eq!(err.to_string(), "camera front stalled: no frame for 500 ms from dying test camera");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(800) && elapsed < Duration::from_millis(1500),
            "{elapsed:?}"
        );
        let ComponentState::Camera(state) = registry.get("acquire-front").unwrap().state else {
            panic!("not a camera's state")
        };
        assert_eq!(state.state, CameraLink::Stalled);
        assert_eq!(state.stalls, 1);
        assert_eq!(state.frames, 3);
        // a restart opens the source afresh and counts on
        assert!(component.run(ctx).await.is_err());
        assert_eq!(stalls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn raw_frames_become_jpeg() {
        let frame = Frame {
            t: Utc::now(),
            payload: FramePayload::Rgb { width: 8, height: 8, pixels: Arc::new(vec![128; 8 * 8 * 3]) },
        };
        let (bytes, ct) = encode_frame(&frame).unwrap();
        assert_eq!(ct, "image/jpeg");
        assert_eq!(&bytes[..2], &[0xff, 0xd8]);
    }
}
