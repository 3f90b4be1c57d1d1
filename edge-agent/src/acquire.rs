//! Acquire (one per camera): keeps the camera's recent frames in a ring, takes the frame nearest
//! each trigger time and, once the vehicle's Exit finalized it, emits a capture.
//!
//! Raw frames are encoded to JPEG only when they become a capture; file-replay frames keep
//! their bytes unchanged.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, mpsc};
use uuid::Uuid;

use crate::domain::{
    AcquireRequest, Capture, CaptureMeta, Frame, FramePayload, OccupancyStatus, ValueClass, VehicleClass,
};
use crate::pipeline::Outlet;
use crate::sources::CameraSource;
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
    frame: Option<Frame>,
    finalized: Option<(f32, f32, VehicleClass)>,
}

/// Frame ring plus pending acquisitions; pure apart from the clock passed in.
pub struct Acquirer {
    ring: VecDeque<Frame>,
    ring_frames: usize,
    pending: BTreeMap<u64, Pending>,
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
}

impl Acquirer {
    pub fn new(ring_frames: usize) -> Self {
        Self { ring: VecDeque::with_capacity(ring_frames), ring_frames, pending: BTreeMap::new() }
    }

    pub fn push_frame(&mut self, frame: Frame) {
        if self.ring.len() == self.ring_frames {
            self.ring.pop_front();
        }
        self.ring.push_back(frame);
    }

    pub fn request(&mut self, request: AcquireRequest) {
        match request {
            AcquireRequest::Take { track, lane, detected_at, trigger_at } => {
                self.pending
                    .insert(track, Pending { lane, detected_at, trigger_at, frame: None, finalized: None });
            }
            AcquireRequest::Finalize { track, max_height_m, width_m, class } => {
                match self.pending.get_mut(&track) {
                    Some(p) => p.finalized = Some((max_height_m, width_m, class)),
                    None => tracing::warn!(track, "finalize for unknown track ignored"),
                }
            }
        }
    }

    fn nearest(&self, t: DateTime<Utc>) -> Option<&Frame> {
        self.ring.iter().min_by_key(|f| (f.t - t).num_microseconds().unwrap_or(i64::MAX).unsigned_abs())
    }

    /// Takes frames for due triggers and returns the acquisitions that are complete.
    /// `now` is the camera clock; `force` takes the nearest frame for every pending trigger.
    pub fn poll(&mut self, now: DateTime<Utc>, force: bool) -> Vec<Ready> {
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
        let mut ready = Vec::new();
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
                });
            } else if stale || (force && p.frame.is_none()) {
                tracing::warn!(track, has_frame = p.frame.is_some(), "acquisition dropped incomplete");
                self.pending.remove(&track);
            }
        }
        ready
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
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
    pub source: Arc<Mutex<Box<dyn CameraSource>>>,
    pub input: Arc<Mutex<mpsc::Receiver<AcquireRequest>>>,
    pub output: Outlet<Capture>,
}

impl Component for AcquireComponent {
    fn name(&self) -> String {
        format!("acquire-{}", self.camera_id)
    }

    fn run(&self, ctx: ComponentCtx) -> RunFuture {
        let (source, input, output) = (self.source.clone(), self.input.clone(), self.output.clone());
        let (camera_id, site_id, config_version, ring_frames) =
            (self.camera_id.clone(), self.site_id.clone(), self.config_version, self.ring_frames);
        Box::pin(async move {
            let mut source = source.lock().await;
            let mut input = input.lock().await;
            let mut acquirer = Acquirer::new(ring_frames);
            let mut frames = 0u64;
            let mut input_open = true;
            while input_open {
                tokio::select! {
                    frame = source.next_frame() => {
                        acquirer.push_frame(frame.context("reading frame")?);
                        frames += 1;
                    }
                    request = input.recv() => match request {
                        Some(request) => acquirer.request(request),
                        None => input_open = false,
                    },
                }
                for ready in acquirer.poll(Utc::now(), !input_open) {
                    let capture = tokio::task::spawn_blocking({
                        let (camera_id, site_id) = (camera_id.clone(), site_id.clone());
                        move || build_capture(ready, &camera_id, &site_id, config_version)
                    })
                    .await
                    .context("capture encode task")??;
                    tracing::info!(capture_id = %capture.meta.capture_id, camera = %camera_id, lane = capture.meta.lane, class = ?capture.meta.class, "capture made");
                    output.send(capture).await?;
                    ctx.processed(1);
                }
                if frames.is_multiple_of(10) {
                    ctx.detail(serde_json::json!({ "frames": frames, "pending": acquirer.pending() }));
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
) -> anyhow::Result<Capture> {
    let (image, content_type) = encode_frame(&ready.frame)?;
    Ok(Capture {
        meta: CaptureMeta {
            capture_id: Uuid::now_v7(),
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
        },
        image,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(t: DateTime<Utc>, tag: u8) -> Frame {
        Frame {
            t,
            payload: FramePayload::Encoded { bytes: Bytes::from(vec![tag]), content_type: "image/png" },
        }
    }

    #[test]
    fn takes_nearest_frame_and_finalizes_on_exit() {
        let t0 = Utc::now();
        let ms = chrono::Duration::milliseconds;
        let mut a = Acquirer::new(4);
        a.push_frame(frame(t0, 0));
        a.request(AcquireRequest::Take { track: 1, lane: 2, detected_at: t0, trigger_at: t0 + ms(140) });
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
        let capture = build_capture(ready.into_iter().next().unwrap(), "front", "site-a", 3).unwrap();
        assert_eq!(capture.image, Bytes::from(vec![1u8]), "encoded bytes pass through unchanged");
        assert_eq!(capture.meta.content_type, "image/png");
        assert_eq!(capture.meta.occupancy, OccupancyStatus::Unknown);
        assert_eq!(a.pending(), 0);
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
