//! Test captures on an operator's request (`TriggerTestCapture`): the handle through which the
//! uplink asks one camera's acquire stage for a capture now, without a vehicle.
//!
//! The pipeline registers each camera's request outlet (the same inbox the trigger feeds) for
//! its generation of components; the uplink holds the handle. A test capture is the camera's
//! newest frame, made into a capture marked `test` that goes through vision (faces masked,
//! occupants counted) and the buffer like any other, so it proves the whole chain and never
//! lets un-anonymized pixels out; the control plane never counts it nor makes it a violation.
//! A request whose asker gave up (its answer channel closed) is dropped by the camera, so a
//! camera that was paused or stalled never takes captures nobody waits for.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::domain::{AcquireRequest, TestReply};
use crate::stage::Outlet;

/// The cameras a test capture can be asked of, by camera id.
#[derive(Clone, Default)]
pub struct TestCameras(Arc<RwLock<BTreeMap<String, TestCamera>>>);

#[derive(Clone)]
struct TestCamera {
    /// The lane the capture is filed under (the camera's first).
    lane: u32,
    requests: Outlet<AcquireRequest>,
}

impl TestCameras {
    /// Registers a camera's acquire inbox (the pipeline, once per camera and generation).
    pub fn insert(&self, camera_id: &str, lane: u32, requests: Outlet<AcquireRequest>) {
        self.0.write().unwrap().insert(camera_id.to_owned(), TestCamera { lane, requests });
    }

    pub fn cameras(&self) -> Vec<String> {
        self.0.read().unwrap().keys().cloned().collect()
    }

    /// Asks `camera` for a test capture and waits up to `within` for its acquire stage to have
    /// made it (handed it to vision or the buffer). The capture's id, or why there is none.
    pub async fn take(&self, camera: &str, within: Duration) -> Result<Uuid, String> {
        let target = self.0.read().unwrap().get(camera).cloned();
        let Some(target) = target else {
            let known = self.cameras();
            return Err(format!("no camera {camera:?} at this agent (cameras: {})", known.join(", ")));
        };
        let capture_id = Uuid::now_v7();
        let (tx, rx) = oneshot::channel();
        let request = AcquireRequest::Test { capture_id, lane: target.lane, reply: TestReply::new(tx) };
        let asked = async {
            target.requests.send(request).await.map_err(|_| format!("camera {camera} is not running"))?;
            rx.await
                .map_err(|_| format!("camera {camera} restarted before it took the capture"))?
                .map(|()| capture_id)
        };
        tokio::time::timeout(within, asked).await.unwrap_or_else(|_| {
            Err(format!("camera {camera} took no frame within {} ms", within.as_millis()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn asks_the_named_camera_and_names_the_known_ones_otherwise() {
        let cameras = TestCameras::default();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        cameras.insert("front", 2, Outlet::new(tx));
        let err = cameras.take("rear", Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(err, "no camera \"rear\" at this agent (cameras: front)");

        let camera = tokio::spawn(async move {
            match rx.recv().await {
                Some(AcquireRequest::Test { capture_id, lane, reply }) => {
                    assert_eq!(lane, 2);
                    reply.send(Ok(()));
                    capture_id
                }
                other => panic!("{other:?}"),
            }
        });
        let id = cameras.take("front", Duration::from_secs(5)).await.unwrap();
        assert_eq!(camera.await.unwrap(), id, "the camera made the capture the answer names");
    }

    #[tokio::test(start_paused = true)]
    async fn a_camera_that_never_answers_times_out_and_its_request_is_abandoned() {
        let cameras = TestCameras::default();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        cameras.insert("front", 0, Outlet::new(tx));
        let err = cameras.take("front", Duration::from_millis(500)).await.unwrap_err();
        assert_eq!(err, "camera front took no frame within 500 ms");
        let Some(AcquireRequest::Test { reply, .. }) = rx.recv().await else { panic!("no request") };
        assert!(reply.abandoned(), "the asker is gone: the camera skips it");
    }
}
