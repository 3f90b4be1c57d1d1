//! A scripted agent session for protocol tests: speaks `lanewatch.v1` directly (to re-send
//! captures, send unknown enum values, or send bytes that are not protobuf at all).

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Buf, BufMut};
use lanewatch_proto::v1::{
    self, AgentMessage, CaptureChunk, CaptureMeta, CaptureStart, ControlMessage, Hello, Welcome,
    agent_gateway_client::AgentGatewayClient, agent_message, control_message,
};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Status, Streaming};

const STEP: Duration = Duration::from_secs(20);

/// One open session, after Hello/Welcome.
pub struct Session {
    tx: mpsc::Sender<AgentMessage>,
    rx: Streaming<ControlMessage>,
    pub welcome: Welcome,
}

pub async fn channel(url: &str) -> Result<Channel> {
    Channel::from_shared(url.to_owned())?.connect_timeout(STEP).connect().await.context("connecting")
}

/// A TLS channel (`https://` url) trusting `ca_pem`, showing `identity` (certificate and key
/// PEM) as its client certificate when given.
pub async fn tls_channel(url: &str, ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(url.to_owned())?
        .tls_config(tls)?
        .connect_timeout(STEP)
        .connect()
        .await
        .context("connecting over tls")
}

impl Session {
    /// Opens a session and completes Hello/Welcome.
    pub async fn open(url: &str, agent_id: &str, site_id: &str) -> Result<Self> {
        Self::open_with_hello(url, hello(agent_id, site_id))
            .await?
            .map_err(|s| anyhow!("session refused: {s:?}"))
    }

    /// Opens a session with a given Hello; the inner error is the status the server ended it with.
    pub async fn open_with_hello(url: &str, hello: Hello) -> Result<Result<Self, Status>> {
        Self::open_on(channel(url).await?, hello).await
    }

    /// Like [`Session::open_with_hello`], on a channel of the caller's (e.g. [`tls_channel`]).
    pub async fn open_on(channel: Channel, hello: Hello) -> Result<Result<Self, Status>> {
        let mut client = AgentGatewayClient::new(channel)
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(64 << 20);
        let (tx, rx) = mpsc::channel(16);
        tx.send(AgentMessage { body: Some(agent_message::Body::Hello(hello)) }).await?;
        let mut rx = match tokio::time::timeout(STEP, client.session(ReceiverStream::new(rx))).await? {
            Ok(response) => response.into_inner(),
            Err(status) => return Ok(Err(status)),
        };
        match tokio::time::timeout(STEP, rx.message()).await? {
            Ok(Some(ControlMessage { body: Some(control_message::Body::Welcome(welcome)) })) => {
                Ok(Ok(Self { tx, rx, welcome }))
            }
            Ok(other) => bail!("expected welcome, got {other:?}"),
            Err(status) => Ok(Err(status)),
        }
    }

    pub async fn send(&self, body: agent_message::Body) -> Result<()> {
        self.tx.send(AgentMessage { body: Some(body) }).await.map_err(|_| anyhow!("session closed"))
    }

    /// The next control message, or the status that ended the session.
    pub async fn next(&mut self) -> Result<Result<Option<ControlMessage>, Status>> {
        tokio::time::timeout(STEP, self.rx.message()).await.context("waiting for the control plane")
    }

    /// Waits for the session to end and returns its status (skipping other messages).
    pub async fn ended_with(&mut self) -> Result<Status> {
        loop {
            match self.next().await? {
                Ok(Some(_)) => continue,
                Ok(None) => bail!("session ended without an error status"),
                Err(status) => return Ok(status),
            }
        }
    }

    /// Uploads one capture in chunks and returns the ack's outcome.
    pub async fn upload(&mut self, meta: CaptureMeta, image: &[u8]) -> Result<v1::AckOutcome> {
        let id = meta.capture_id.clone();
        self.send_capture(meta, image).await?;
        loop {
            match self.next().await? {
                Ok(Some(ControlMessage { body: Some(control_message::Body::CaptureAck(ack)) })) => {
                    if ack.capture_id != id {
                        bail!("ack for {} while waiting for {id}", ack.capture_id);
                    }
                    return Ok(ack.outcome());
                }
                Ok(Some(_)) => continue,
                Ok(None) => bail!("session ended before the ack of {id}"),
                Err(status) => bail!("session ended before the ack of {id}: {status:?}"),
            }
        }
    }

    /// Sends CaptureStart and the chunks, without waiting for the ack.
    pub async fn send_capture(&mut self, meta: CaptureMeta, image: &[u8]) -> Result<()> {
        use sha2::Digest;
        let id = meta.capture_id.clone();
        self.send(agent_message::Body::CaptureStart(CaptureStart {
            meta: Some(meta),
            image_size_bytes: image.len() as u64,
            image_sha256: sha2::Sha256::digest(image).to_vec(),
            image_content_type: "image/jpeg".into(),
        }))
        .await?;
        let chunk = self.welcome.max_chunk_bytes.max(1) as usize;
        for (i, data) in image.chunks(chunk).enumerate() {
            self.send(agent_message::Body::CaptureChunk(CaptureChunk {
                capture_id: id.clone(),
                offset: (i * chunk) as u64,
                data: data.to_vec().into(),
            }))
            .await?;
        }
        Ok(())
    }
}

pub fn hello(agent_id: &str, site_id: &str) -> Hello {
    Hello {
        protocol_version: v1::PROTOCOL_VERSION,
        agent_id: agent_id.into(),
        site_id: site_id.into(),
        software_version: "test".into(),
        config_version: 0,
        wants_heartbeat_acks: false,
        local_config: String::new(),
    }
}

/// Metadata of a capture made "now" at `site`.
pub fn meta(site: &str) -> CaptureMeta {
    let now = std::time::SystemTime::now();
    CaptureMeta {
        capture_id: uuid::Uuid::now_v7().to_string(),
        site_id: site.into(),
        lane: 1,
        captured_at: Some(now.into()),
        vehicle_class: v1::VehicleClass::Car as i32,
        occupancy: Some(v1::Occupancy::default()),
        speed_kmh: None,
        height_m: 1.5,
        width_m: 1.8,
        camera_id: "front".into(),
        detected_at: Some(now.into()),
        config_version: 0,
        test: false,
        traceparent: String::new(),
    }
}

/// Opens a session whose request body is the given frames verbatim: each item is the payload of
/// one gRPC message, so it can be anything, protobuf or not. Returns how the session ended.
pub async fn raw_session(url: &str, payloads: Vec<Vec<u8>>) -> Result<Status> {
    let mut grpc = tonic::client::Grpc::new(channel(url).await?);
    grpc.ready().await.map_err(|e| anyhow!("channel not ready: {e}"))?;
    let (tx, rx) = mpsc::channel(payloads.len().max(1));
    for p in payloads {
        tx.send(p).await?;
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/lanewatch.v1.AgentGateway/Session");
    let request = tonic::Request::new(ReceiverStream::new(rx));
    let response = tokio::time::timeout(STEP, grpc.streaming(request, path, RawCodec)).await?;
    let mut stream = match response {
        Ok(r) => r.into_inner(),
        Err(status) => return Ok(status),
    };
    loop {
        match tokio::time::timeout(STEP, stream.message()).await? {
            Ok(Some(_)) => continue,
            Ok(None) => {
                drop(tx);
                bail!("session ended without an error status")
            }
            Err(status) => return Ok(status),
        }
    }
}

/// Sends `Vec<u8>` payloads as they are and decodes `ControlMessage`s.
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ControlMessage;
    type Encoder = RawEncoder;
    type Decoder = ControlDecoder;
    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        ControlDecoder
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

struct ControlDecoder;

impl Decoder for ControlDecoder {
    type Item = ControlMessage;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ControlMessage>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        prost::Message::decode(bytes).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}
