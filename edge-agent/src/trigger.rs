//! Trigger: turns detections into acquisition requests for every camera that sees the lane.
//!
//! On Entry, each such camera gets `Take` with `trigger_at = entered_at + trigger_delay_ms`; on
//! Exit it gets `Finalize` with the LIDAR's class, height and width.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc};

use crate::domain::{AcquireRequest, Detection};
use crate::pipeline::Outlet;
use crate::supervisor::{Component, ComponentCtx, RunFuture};

/// One camera as the trigger sees it.
#[derive(Clone)]
pub struct CameraRoute {
    pub camera_id: String,
    pub lanes: Vec<u32>,
    pub trigger_delay_ms: u64,
    pub output: Outlet<AcquireRequest>,
}

/// Requests for each camera (by index in `routes`) that one detection produces.
pub fn route(routes: &[CameraRoute], detection: &Detection) -> Vec<(usize, AcquireRequest)> {
    let lane = match detection {
        Detection::Entry { lane, .. } | Detection::Exit { lane, .. } => *lane,
    };
    routes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.lanes.contains(&lane))
        .map(|(i, r)| {
            let request = match detection {
                Detection::Entry { track, lane, t } => AcquireRequest::Take {
                    track: *track,
                    lane: *lane,
                    detected_at: *t,
                    trigger_at: *t + chrono::Duration::milliseconds(r.trigger_delay_ms as i64),
                },
                Detection::Exit { track, max_height_m, width_m, class, .. } => AcquireRequest::Finalize {
                    track: *track,
                    max_height_m: *max_height_m,
                    width_m: *width_m,
                    class: *class,
                },
            };
            (i, request)
        })
        .collect()
}

pub struct TriggerComponent {
    pub input: Arc<Mutex<mpsc::Receiver<Detection>>>,
    pub routes: Vec<CameraRoute>,
}

impl Component for TriggerComponent {
    fn name(&self) -> String {
        "trigger".into()
    }

    fn run(&self, ctx: ComponentCtx) -> RunFuture {
        let (input, routes) = (self.input.clone(), self.routes.clone());
        Box::pin(async move {
            let mut input = input.lock().await;
            let mut per_camera: BTreeMap<String, u64> = BTreeMap::new();
            while let Some(detection) = input.recv().await {
                for (i, request) in route(&routes, &detection) {
                    if matches!(request, AcquireRequest::Take { .. }) {
                        *per_camera.entry(routes[i].camera_id.clone()).or_default() += 1;
                    }
                    routes[i].output.send(request).await?;
                }
                ctx.processed(1);
                if matches!(detection, Detection::Entry { .. }) {
                    ctx.detail(serde_json::json!({ "triggers_per_camera": per_camera }));
                }
            }
            for r in &routes {
                r.output.close();
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::VehicleClass;

    #[test]
    fn routes_by_lane_with_delay() {
        let routes = vec![
            CameraRoute {
                camera_id: "a".into(),
                lanes: vec![0, 1],
                trigger_delay_ms: 150,
                output: Outlet::closed(),
            },
            CameraRoute {
                camera_id: "b".into(),
                lanes: vec![2],
                trigger_delay_ms: 50,
                output: Outlet::closed(),
            },
        ];
        let t = chrono::Utc::now();
        let out = route(&routes, &Detection::Entry { track: 1, lane: 1, t });
        assert_eq!(
            out,
            vec![(
                0,
                AcquireRequest::Take {
                    track: 1,
                    lane: 1,
                    detected_at: t,
                    trigger_at: t + chrono::Duration::milliseconds(150)
                }
            )]
        );
        let out = route(
            &routes,
            &Detection::Exit {
                track: 2,
                lane: 2,
                t,
                max_height_m: 1.5,
                width_m: 1.8,
                class: VehicleClass::Car,
            },
        );
        assert_eq!(
            out,
            vec![(
                1,
                AcquireRequest::Finalize {
                    track: 2,
                    max_height_m: 1.5,
                    width_m: 1.8,
                    class: VehicleClass::Car
                }
            )]
        );
    }
}
