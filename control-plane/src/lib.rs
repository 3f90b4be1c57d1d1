//! The Lanewatch control plane: agent gateway (gRPC), capture storage (database and blobs) and
//! the operator API (GraphQL over HTTP) and the fleet console; leader election of the singleton
//! loops (`leader`) and the LanewatchSite custom resource (`k8s`). `main.rs` composes these modules.

pub mod auth;
pub mod blob;
pub mod cluster;
pub mod config;
pub mod console;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
pub mod gateway;
pub mod graphql;
pub mod http;
pub mod ingest;
pub mod jobs;
pub mod k8s;
pub mod leader;
pub mod links;
pub mod metrics;
pub mod rollout;
pub mod sessions;
pub mod traces;
pub mod webhooks;
