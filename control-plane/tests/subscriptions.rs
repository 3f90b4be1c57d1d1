//! GraphQL subscriptions through a real WebSocket (graphql-transport-ws) against in-process gRPC
//! and HTTP servers on 127.0.0.1:0: a capture ingested through the gateway reaches the
//! subscribers allowed to see it and no others; session changes reach operators.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use lanewatch_control_plane::auth::{self, KeyRequest};
use lanewatch_control_plane::blob::BlobStore;
use lanewatch_control_plane::config::{BlobConfig, ImageLinksConfig, Limits};
use lanewatch_control_plane::db::Db;
use lanewatch_control_plane::domain::{Agency, Role};
use lanewatch_control_plane::gateway::Gateway;
use lanewatch_control_plane::graphql::{self, ApiContext};
use lanewatch_control_plane::http::{self, AppState};
use lanewatch_control_plane::links::ImageLinks;
use lanewatch_control_plane::metrics::Metrics;
use lanewatch_proto::v1 as pb;
use lanewatch_proto::v1::agent_message::Body as In;
use lanewatch_proto::v1::control_message::Body as Out;
use serde_json::{Value, json};
use sha2::Digest;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

struct Servers {
    db: Db,
    grpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
    events: lanewatch_control_plane::events::Events,
    _shutdown: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn servers() -> Servers {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display())).await.unwrap();
    let blobs = BlobStore::open(&BlobConfig::Local { dir: dir.path().join("blobs") }).await.unwrap();
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let gateway = Gateway::new(db.clone(), blobs.clone(), Limits::default(), Metrics::new(), rx);
    let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = grpc_listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(gateway.clone().into_service())
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc_listener)),
    );
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = http_listener.local_addr().unwrap();
    let config = ImageLinksConfig { ttl_secs: 300, signing_key: None };
    let links = ImageLinks::new(format!("http://{http}"), &config, blobs.clone());
    let events = gateway.events().clone();
    let schema =
        graphql::schema(ApiContext { db: db.clone(), gateway, blobs: blobs.clone(), links: links.clone() });
    let router = http::router(
        AppState { schema, db: db.clone(), blobs, metrics: Metrics::new(), allow_anonymous: false, links },
        None,
    );
    tokio::spawn(axum::serve(http_listener, router).into_future());
    Servers { db, grpc, http, events, _shutdown: shutdown, _dir: dir }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/graphql/ws`, authenticates in `connection_init` and starts one subscription, which is
/// listening when this returns.
async fn subscribe(s: &Servers, key: &str, query: &str) -> Ws {
    let listening = s.events.receiver_count();
    let ws = start_subscription(s, key, query).await;
    // the protocol does not acknowledge a subscribe: wait until the subscription's resolver has
    // subscribed to the event channel, so no event published after this returns is missed
    tokio::time::timeout(Duration::from_secs(10), async {
        while s.events.receiver_count() <= listening {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the subscription did not register within 10s");
    ws
}

/// Like [`subscribe`], without waiting for the subscription to listen (one that is refused never
/// does).
async fn start_subscription(s: &Servers, key: &str, query: &str) -> Ws {
    let mut request = format!("ws://{}/graphql/ws", s.http).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {key}") } });
    ws.send(Message::Text(init.to_string().into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "connection_ack");
    let sub = json!({ "id": "1", "type": "subscribe", "payload": { "query": query } });
    ws.send(Message::Text(sub.to_string().into())).await.unwrap();
    ws
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no websocket message within 10s")
            .expect("websocket closed")
            .unwrap();
        if let Message::Text(text) = msg {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

/// The payload of the next `next` message of the subscription.
async fn next_data(ws: &mut Ws) -> Value {
    let msg = next_json(ws).await;
    assert_eq!(msg["type"], "next", "{msg}");
    assert!(msg["payload"]["errors"].is_null(), "{msg}");
    msg["payload"]["data"].clone()
}

type Session = (mpsc::Sender<pb::AgentMessage>, tonic::Streaming<pb::ControlMessage>);

async fn agent(s: &Servers, agent_id: &str, site: &str) -> Session {
    let mut client =
        pb::agent_gateway_client::AgentGatewayClient::connect(format!("http://{}", s.grpc)).await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    let hello = In::Hello(pb::Hello {
        protocol_version: 1,
        agent_id: agent_id.into(),
        site_id: site.into(),
        software_version: "0.1.0".into(),
        config_version: 1,
        wants_heartbeat_acks: false,
        local_config: String::new(),
    });
    tx.send(pb::AgentMessage { body: Some(hello) }).await.unwrap();
    let mut inbound = client.session(ReceiverStream::new(rx)).await.unwrap().into_inner();
    match inbound.message().await.unwrap() {
        Some(pb::ControlMessage { body: Some(Out::Welcome(_)) }) => (tx, inbound),
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// Uploads one capture and waits for its ack (it is durable from then on).
async fn ingest(session: &mut Session, site: &str) -> Uuid {
    let id = Uuid::now_v7();
    let image = format!("jpeg bytes of {id}").into_bytes();
    let start = In::CaptureStart(pb::CaptureStart {
        meta: Some(pb::CaptureMeta {
            capture_id: id.to_string(),
            site_id: site.into(),
            captured_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            ..Default::default()
        }),
        image_size_bytes: image.len() as u64,
        image_sha256: sha2::Sha256::digest(&image).to_vec(),
        image_content_type: "image/jpeg".into(),
    });
    let chunk =
        In::CaptureChunk(pb::CaptureChunk { capture_id: id.to_string(), offset: 0, data: image.into() });
    for body in [start, chunk] {
        session.0.send(pb::AgentMessage { body: Some(body) }).await.unwrap();
    }
    loop {
        match session.1.message().await.unwrap() {
            Some(pb::ControlMessage { body: Some(Out::CaptureAck(ack)) }) => {
                assert_eq!(ack.capture_id, id.to_string());
                return id;
            }
            Some(_) => continue,
            None => panic!("session ended before the ack"),
        }
    }
}

async fn key(db: &Db, role: Role, agency: Option<&str>) -> String {
    let req = KeyRequest {
        name: "k".into(),
        role,
        agency_id: agency.map(str::to_owned),
        all_captures: role == Role::Agency,
    };
    auth::issue_key(db, req, chrono::Utc::now()).await.unwrap().1
}

#[tokio::test]
async fn capture_added_reaches_only_subscribers_that_may_see_it() {
    let s = servers().await;
    let mut site_a = agent(&s, "agent-a", "site-a").await;
    let mut site_b = agent(&s, "agent-b", "site-b").await;
    for (agency, jurisdiction, site) in [("ag-a", "ja", "site-a"), ("ag-b", "jb", "site-b")] {
        let a = Agency { id: agency.into(), name: agency.into(), jurisdiction: jurisdiction.into() };
        s.db.insert_agency(&a, chrono::Utc::now()).await.unwrap();
        s.db.set_site_jurisdiction(site, Some(jurisdiction)).await.unwrap();
    }
    let query = "subscription { captureAdded { id site imageUrl imageSha256 } }";
    let mut agency_a = subscribe(&s, &key(&s.db, Role::Agency, Some("ag-a")).await, query).await;
    let mut agency_b = subscribe(&s, &key(&s.db, Role::Agency, Some("ag-b")).await, query).await;
    let operator_key = key(&s.db, Role::Operator, None).await;
    let mut only_b =
        subscribe(&s, &operator_key, "subscription { captureAdded(site: \"site-b\") { id site } }").await;

    let in_a = ingest(&mut site_a, "site-a").await;
    let got = next_data(&mut agency_a).await;
    assert_eq!(got["captureAdded"]["id"], in_a.to_string());
    assert_eq!(got["captureAdded"]["site"], "site-a");
    let url = got["captureAdded"]["imageUrl"].as_str().unwrap();
    assert!(url.starts_with(&format!("http://{}/images/{in_a}?expires=", s.http)), "{url}");
    // the signed link needs no key
    let (status, body) = fetch(url).await;
    assert_eq!(status, 200);
    assert_eq!(body, format!("jpeg bytes of {in_a}").into_bytes());

    // agency B's and the site-b subscription's first event is site-b's capture, not site-a's
    let in_b = ingest(&mut site_b, "site-b").await;
    assert_eq!(next_data(&mut agency_b).await["captureAdded"]["id"], in_b.to_string());
    assert_eq!(next_data(&mut only_b).await["captureAdded"]["id"], in_b.to_string());
    let again = tokio::time::timeout(Duration::from_millis(300), agency_a.next()).await;
    assert!(again.is_err(), "agency a must not see site-b's capture: {again:?}");
}

#[tokio::test]
async fn agent_status_changes_reach_operators_only() {
    let s = servers().await;
    let query = "subscription { agentStatusChanged { agentId site online } }";
    let mut operator = subscribe(&s, &key(&s.db, Role::Operator, None).await, query).await;
    let session = agent(&s, "agent-x", "site-x").await;
    let got = next_data(&mut operator).await;
    assert_eq!(got["agentStatusChanged"], json!({ "agentId": "agent-x", "site": "site-x", "online": true }));
    drop(session);
    let got = next_data(&mut operator).await;
    assert_eq!(got["agentStatusChanged"], json!({ "agentId": "agent-x", "site": "site-x", "online": false }));

    let a = Agency { id: "ag".into(), name: "ag".into(), jurisdiction: "j".into() };
    s.db.insert_agency(&a, chrono::Utc::now()).await.unwrap();
    let mut agency = start_subscription(&s, &key(&s.db, Role::Agency, Some("ag")).await, query).await;
    let refused = next_json(&mut agency).await;
    assert!(refused.to_string().contains("PERMISSION_DENIED"), "{refused}");

    // a bad key is refused at connection_init
    let mut request = format!("ws://{}/graphql/ws", s.http).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let init = json!({ "type": "connection_init", "payload": { "authorization": "Bearer lw_nope_00" } });
    ws.send(Message::Text(init.to_string().into())).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap();
    assert!(
        matches!(closed, Some(Ok(Message::Close(_))) | None | Some(Err(_))),
        "expected the server to close: {closed:?}"
    );
}

/// A plain HTTP/1.1 GET without any header but Host (no key).
async fn fetch(url: &str) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, response[split + 4..].to_vec())
}

/// Waits for the next `LogsRequest` on a scripted agent's session.
async fn logs_request(session: &mut Session) -> pb::LogsRequest {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), session.1.message())
            .await
            .expect("no log request within 10s")
            .unwrap();
        match message {
            Some(pb::ControlMessage { body: Some(Out::LogsRequest(req)) }) => return req,
            Some(_) => continue,
            None => panic!("session ended before a log request"),
        }
    }
}

fn log_line(seq: u64, message: &str) -> pb::LogLine {
    pb::LogLine {
        seq,
        at: Some(prost_types::Timestamp { seconds: 1_700_000_000 + seq as i64, nanos: 0 }),
        level: "warn".into(),
        target: "lanewatch_edge_agent::uplink".into(),
        message: message.into(),
        fields: vec![pb::LogField { name: "code".into(), value: "Unavailable".into() }],
    }
}

async fn answer_logs(session: &Session, req: pb::LogsRequest, lines: Vec<pb::LogLine>, last_seq: u64) {
    let response = pb::LogsResponse {
        request_id: req.request_id,
        lines,
        truncated: false,
        last_seq,
        error: String::new(),
    };
    session.0.send(pb::AgentMessage { body: Some(In::Logs(response)) }).await.unwrap();
}

#[tokio::test]
async fn agent_logs_follows_the_agents_ring_until_it_goes_offline() {
    let s = servers().await;
    let mut session = agent(&s, "agent-l", "site-l").await;
    let operator = key(&s.db, Role::Operator, None).await;
    let query =
        "subscription { agentLogs(agentId: \"agent-l\", level: \"WARN\", grep: \"session\", last: 1) {
        seq level target message fields { name value } } }";
    let mut follower = start_subscription(&s, &operator, query).await;

    // the first request asks for the newest line with the subscription's filters
    let first = logs_request(&mut session).await;
    assert_eq!((first.level.as_str(), first.grep.as_str(), first.limit), ("warn", "session", 1));
    assert!(!first.has_after_seq);
    answer_logs(&session, first, vec![log_line(5, "session failed")], 9).await;
    assert_eq!(next_data(&mut follower).await["agentLogs"]["seq"], 5);

    // then it follows from the ring's newest sequence number, letting the agent hold the answer
    let follow = logs_request(&mut session).await;
    assert!(follow.has_after_seq);
    assert_eq!((follow.after_seq, follow.wait_ms, follow.level.as_str()), (9, 2000, "warn"));
    answer_logs(
        &session,
        follow,
        vec![log_line(10, "session open"), log_line(12, "session failed again")],
        12,
    )
    .await;
    let got = next_data(&mut follower).await;
    assert_eq!(
        got["agentLogs"],
        json!({ "seq": 10, "level": "warn", "target": "lanewatch_edge_agent::uplink",
            "message": "session open", "fields": [{ "name": "code", "value": "Unavailable" }] })
    );
    assert_eq!(next_data(&mut follower).await["agentLogs"]["seq"], 12);
    // an empty answer (nothing matched within the wait) moves on without sending anything
    let follow = logs_request(&mut session).await;
    assert_eq!(follow.after_seq, 12);
    answer_logs(&session, follow, Vec::new(), 15).await;
    let follow = logs_request(&mut session).await;
    assert_eq!(follow.after_seq, 15);

    // the agent goes away: the subscription ends with an error saying so
    drop(session);
    let ended = next_json(&mut follower).await;
    assert_eq!(ended["type"], "next", "{ended}");
    let error = ended["payload"]["errors"][0].clone();
    assert_eq!(error["extensions"]["code"], "UNAVAILABLE", "{ended}");
    assert!(error["message"].as_str().unwrap().contains("agent agent-l went offline"), "{ended}");

    // agencies may not read agents' logs; a bad level is refused before any request
    let a = Agency { id: "ag".into(), name: "ag".into(), jurisdiction: "j".into() };
    s.db.insert_agency(&a, chrono::Utc::now()).await.unwrap();
    let mut agency = start_subscription(&s, &key(&s.db, Role::Agency, Some("ag")).await, query).await;
    let refused = next_json(&mut agency).await;
    assert!(refused.to_string().contains("PERMISSION_DENIED"), "{refused}");
    let bad = "subscription { agentLogs(agentId: \"agent-l\", level: \"loud\") { seq } }";
    let mut bad = start_subscription(&s, &operator, bad).await;
    let refused = next_json(&mut bad).await;
    assert!(refused.to_string().contains("unknown log level"), "{refused}");
}
