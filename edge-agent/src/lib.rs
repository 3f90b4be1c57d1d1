//! Lanewatch edge agent: senses vehicles at one highway site, captures camera images of them,
//! buffers the captures durably and uploads them to the control plane.
//!
//! Pipeline: sense → detect → trigger → acquire (per camera) → buffer → uplink, every stage a
//! supervised component connected by bounded channels (`stage`: the plumbing every stage shares).
//! See `pipeline` for the wiring. `ui` serves the local web UI; `view` is what the stages publish
//! for it.

pub mod acquire;
pub mod bench;
pub mod buffer;
pub mod camera;
pub mod config;
pub mod detect;
pub mod diagnostics;
pub mod domain;
pub mod generation;
pub mod lidar;
pub mod load;
pub mod logs;
pub mod metrics;
pub mod pipeline;
pub mod process;
pub mod sim;
pub mod sources;
pub mod stage;
pub mod state;
pub mod supervisor;
pub mod test_capture;
pub mod traces;
pub mod trigger;
pub mod ui;
pub mod uplink;
pub mod view;
pub mod vision;
