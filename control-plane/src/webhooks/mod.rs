//! Webhook ("vehicle push") delivery, lower layer: Standard Webhooks signing (`sign`) and the
//! HTTP client that posts to receivers under an SSRF address policy (`client`). The delivery
//! jobs (queueing, retries, attempt records) build on these and live above them.

pub mod client;
pub mod sign;

pub use client::{Cidr, CidrError, ClientOptions, DeliveryClient, DeliveryError, Response, refused_reason};
pub use sign::{Secret, SecretError, headers, sign, verify};
