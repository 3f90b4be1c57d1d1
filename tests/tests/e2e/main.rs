//! End-to-end suite: one test binary (one link) whose modules start the real binaries through
//! the `lanewatch_tests` harness.

mod agent_logs;
mod alerts;
mod auth;
mod bench;
mod browser;
mod cameras;
mod capture_flow;
mod chart;
mod cli;
mod commands;
mod config;
mod config_rollout;
mod console;
mod demo;
mod faults;
mod history;
mod jobs;
mod kube;
mod lifecycle;
mod local_ui;
mod metrics;
mod protocol;
mod replicas;
mod sensing;
mod terraform;
mod test_capture;
mod tidy;
mod top;
mod traces;
mod vision;
