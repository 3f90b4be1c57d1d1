//! OTLP/HTTP's client: the SDK's hyper client, driven on the binary's Tokio runtime. The SDK's
//! batch processor exports from a thread of its own, where hyper would find no reactor; each
//! request is spawned onto the runtime whose handle was current when the exporter was built, and
//! its answer awaited from the exporter's thread.

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response};
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{HttpClient, HttpError};

#[derive(Debug, Clone)]
pub(crate) struct OnRuntime {
    client: HyperClient,
    runtime: tokio::runtime::Handle,
}

impl OnRuntime {
    /// Fails outside a Tokio runtime.
    pub(crate) fn current(timeout: std::time::Duration) -> Result<Self, tokio::runtime::TryCurrentError> {
        let runtime = tokio::runtime::Handle::try_current()?;
        Ok(Self { client: HyperClient::with_default_connector(timeout, None), runtime })
    }
}

#[async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime.spawn(async move { client.send_bytes(request).await }).await?
    }
}
