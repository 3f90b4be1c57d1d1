//! Trigger: turns detections into acquisition requests for every camera that sees the lane.
//!
//! On Entry, each such camera gets `Take` with `trigger_at = entered_at + delay`; on Exit it gets
//! `Finalize` with the LIDAR's class, height and width. The delay ([`trigger_delay`]) is the
//! time the vehicle needs from the scan plane to the camera's aim point,
//! `distance_from_lidar_m / speed`, when the camera's geometry is configured and the vehicle's
//! speed was measured (two scan planes, `detect::SpeedTrap`); otherwise the camera's fixed
//! `trigger_delay_ms`.

use std::collections::BTreeMap;

use crate::domain::{AcquireRequest, Detection};
use crate::load::WaitingOn;
use crate::stage::{Inlet, Outlet};
use crate::state::{ComponentState, TriggerState};
use crate::supervisor::{Component, ComponentCtx, RunFuture};

/// One camera as the trigger sees it.
#[derive(Clone)]
pub struct CameraRoute {
    pub camera_id: String,
    pub lanes: Vec<u32>,
    pub trigger_delay_ms: u64,
    /// Scan plane to aim point along the road, metres.
    pub distance_from_lidar_m: Option<f64>,
    pub output: Outlet<AcquireRequest>,
}

/// Slowest measured speed the delay is derived from, km/h; slower ones (a jam, a bad pairing)
/// fall back to the fixed delay.
pub const MIN_SPEED_KMH: f64 = 3.0;
/// Longest delay derived from a speed.
pub const MAX_DERIVED_DELAY_MS: f64 = 10_000.0;

/// The trigger delay of one camera for a vehicle at `speed_kmh` (when measured).
pub fn trigger_delay(route: &CameraRoute, speed_kmh: Option<f64>) -> chrono::Duration {
    match (route.distance_from_lidar_m, speed_kmh) {
        (Some(distance_m), Some(speed_kmh)) if speed_kmh.is_finite() && speed_kmh >= MIN_SPEED_KMH => {
            let ms = (distance_m / (speed_kmh / 3.6) * 1e3).min(MAX_DERIVED_DELAY_MS);
            chrono::Duration::microseconds((ms * 1e3).round() as i64)
        }
        _ => chrono::Duration::milliseconds(route.trigger_delay_ms as i64),
    }
}

/// Requests for each camera (by index in `routes`) that one detection produces, with the
/// fixed delays.
pub fn route(routes: &[CameraRoute], detection: &Detection) -> Vec<(usize, AcquireRequest)> {
    route_with_speed(routes, detection, None)
}

/// [`route`] for a vehicle whose speed (km/h) was measured on entry, when it was.
pub fn route_with_speed(
    routes: &[CameraRoute],
    detection: &Detection,
    speed_kmh: Option<f64>,
) -> Vec<(usize, AcquireRequest)> {
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
                    trigger_at: *t + trigger_delay(r, speed_kmh),
                    speed_kmh,
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
    /// Detections, each Entry with the vehicle's measured speed (km/h) when known.
    pub input: Inlet<crate::detect::Sensed>,
    pub routes: Vec<CameraRoute>,
    /// From the scan a vehicle entered in to its camera requests
    /// (`lanewatch_agent_scan_to_trigger_seconds`).
    pub scan_to_trigger: prometheus_client::metrics::histogram::Histogram,
}

impl Component for TriggerComponent {
    fn name(&self) -> String {
        "trigger".into()
    }

    fn run(&self, ctx: ComponentCtx) -> RunFuture {
        let (input, routes) = (self.input.clone(), self.routes.clone());
        let scan_to_trigger = self.scan_to_trigger.clone();
        Box::pin(async move {
            let mut input = input.lock().await;
            let mut per_camera: BTreeMap<String, u64> = BTreeMap::new();
            while let Some((detection, speed_kmh)) = ctx.waiting(WaitingOn::Input, input.recv()).await {
                for (i, request) in route_with_speed(&routes, &detection, speed_kmh) {
                    if let AcquireRequest::Take { detected_at, .. } = &request {
                        let since = chrono::Utc::now() - *detected_at;
                        scan_to_trigger.observe(since.num_microseconds().unwrap_or(0).max(0) as f64 / 1e6);
                        *per_camera.entry(routes[i].camera_id.clone()).or_default() += 1;
                    }
                    ctx.waiting(WaitingOn::Downstream, routes[i].output.send(request)).await?;
                }
                ctx.processed(1);
                if matches!(detection, Detection::Entry { .. }) {
                    ctx.state(ComponentState::Trigger(TriggerState {
                        triggers_per_camera: per_camera.clone(),
                    }));
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
                distance_from_lidar_m: None,
                output: Outlet::closed(),
            },
            CameraRoute {
                camera_id: "b".into(),
                lanes: vec![2],
                trigger_delay_ms: 50,
                distance_from_lidar_m: Some(5.0),
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
                    trigger_at: t + chrono::Duration::milliseconds(150),
                    speed_kmh: None,
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

    #[test]
    fn delay_from_distance_and_speed_else_the_fixed_delay() {
        let cam = |distance: Option<f64>| CameraRoute {
            camera_id: "c".into(),
            lanes: vec![0],
            trigger_delay_ms: 150,
            distance_from_lidar_m: distance,
            output: Outlet::closed(),
        };
        let ms = |d: chrono::Duration| d.num_microseconds().unwrap() as f64 / 1e3;
        // 5 m at 100 km/h (27.78 m/s) = 180 ms; at 50 km/h 360 ms
        assert!((ms(trigger_delay(&cam(Some(5.0)), Some(100.0))) - 180.0).abs() < 0.01);
        assert!((ms(trigger_delay(&cam(Some(5.0)), Some(50.0))) - 360.0).abs() < 0.01);
        assert_eq!(ms(trigger_delay(&cam(Some(0.0)), Some(80.0))), 0.0, "aimed at the scan plane");
        for (distance, speed) in
            [(Some(5.0), None), (None, Some(100.0)), (Some(5.0), Some(1.0)), (Some(5.0), Some(f64::NAN))]
        {
            assert_eq!(ms(trigger_delay(&cam(distance), speed)), 150.0, "{distance:?} {speed:?}");
        }
        assert_eq!(ms(trigger_delay(&cam(Some(200.0)), Some(3.0))), MAX_DERIVED_DELAY_MS, "capped");
        let t = chrono::Utc::now();
        let out =
            route_with_speed(&[cam(Some(10.0))], &Detection::Entry { track: 1, lane: 0, t }, Some(72.0));
        assert_eq!(
            out,
            vec![(
                0,
                AcquireRequest::Take {
                    track: 1,
                    lane: 0,
                    detected_at: t,
                    trigger_at: t + chrono::Duration::milliseconds(500),
                    speed_kmh: Some(72.0),
                }
            )]
        );
    }
}
