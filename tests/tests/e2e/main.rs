//! End-to-end suite: one test binary (one link) whose modules start the real binaries through
//! the `lanewatch_tests` harness.

mod auth;
mod bench;
mod capture_flow;
mod config;
mod faults;
mod lifecycle;
mod protocol;
mod replicas;
mod sensing;
mod tidy;
