//! Tests of the SSRF-guarded client: the refusal matrix, the allowlist, the resolver's
//! filtering, IP literals, redirects, body caps, timeouts and TLS, against receivers on 127.0.0.1.
use std::future::Future;

use axum::extract::State;
use axum::http::HeaderMap as AxumHeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;
use crate::webhooks::sign::{self, Secret};

/// Upper bound on each networked test, so that a regression fails instead of hanging.
const TEST_LIMIT: Duration = Duration::from_secs(10);

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_LIMIT, future).await.expect("test ran past its time limit")
}

fn options(allow: &[&str]) -> ClientOptions {
    install_crypto_provider();
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        max_body_bytes: 1024,
        allow: allow.iter().map(|cidr| Cidr::parse(cidr).unwrap()).collect(),
    }
}

fn client(allow: &[&str]) -> DeliveryClient {
    DeliveryClient::new(options(allow)).unwrap()
}

/// The provider main.rs installs; the first install in the test process wins, which is
/// fine as every test installs the same one.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Asserts that nobody connected to `listener` (a connection would be waiting in its backlog).
async fn assert_no_connection(listener: &TcpListener) {
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(accepted.is_err(), "the receiver saw a connection: {accepted:?}");
}

/// Reads an HTTP request head (up to the blank line) and returns it.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A receiver on 127.0.0.1 that hands its first connection to `handler`.
async fn raw_receiver<F, Fut>(handler: F) -> SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        handler(stream).await;
    });
    addr
}

#[test]
fn refusal_matrix() {
    let refused = [
        // ipv4
        ("0.0.0.0", "unspecified address"),
        ("0.1.2.3", "\"this network\" range 0.0.0.0/8"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.0.0.1", "private network"),
        ("10.255.255.255", "private network"),
        ("172.16.0.1", "private network"),
        ("172.31.255.255", "private network"),
        ("192.168.1.1", "private network"),
        ("100.64.0.1", "carrier-grade nat shared range 100.64.0.0/10"),
        ("100.127.255.255", "carrier-grade nat shared range 100.64.0.0/10"),
        ("100.100.100.200", "carrier-grade nat shared range 100.64.0.0/10"),
        ("169.254.169.254", "cloud metadata endpoint"),
        ("169.254.0.1", "link-local"),
        ("192.0.0.8", "ietf protocol assignments 192.0.0.0/24"),
        ("192.0.2.1", "documentation range"),
        ("198.51.100.7", "documentation range"),
        ("203.0.113.9", "documentation range"),
        ("198.18.0.1", "benchmarking range"),
        ("198.19.255.255", "benchmarking range"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved range 240.0.0.0/4"),
        ("255.255.255.255", "broadcast address"),
        // ipv6
        ("::", "unspecified address"),
        ("::1", "loopback"),
        ("fd00:ec2::254", "cloud metadata endpoint"),
        ("fc00::1", "unique local (private) address"),
        ("fdff:ffff::1", "unique local (private) address"),
        ("fe80::1", "link-local"),
        ("febf::1", "link-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation range"),
        ("100::1", "discard-only range 100::/64"),
        ("2001::1", "teredo tunnel range 2001::/32"),
        ("64:ff9b:1::a00:1", "local-use nat64 range 64:ff9b:1::/48"),
        // ipv6 forms of refused ipv4 addresses
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:7f00:1", "loopback"),
        ("::ffff:10.1.2.3", "private network"),
        ("::ffff:169.254.169.254", "cloud metadata endpoint"),
        ("::ffff:0.0.0.0", "unspecified address"),
        ("::127.0.0.1", "loopback"),
        ("::192.168.0.1", "private network"),
        ("64:ff9b::127.0.0.1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata endpoint"),
        ("64:ff9b::100.64.0.1", "carrier-grade nat shared range 100.64.0.0/10"),
        ("2002:7f00:1::", "loopback"),
        ("2002:a9fe:a9fe::1", "cloud metadata endpoint"),
    ];
    for (addr, reason) in refused {
        assert_eq!(refused_reason(ip(addr)), Some(reason), "{addr}");
    }
    let allowed = [
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "169.253.255.255",
        "192.0.1.1",
        "198.20.0.1",
        "223.255.255.255",
        "2606:4700:4700::1111",
        "2a00:1450:4001::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::8.8.8.8",
        "2002:808:808::1",
    ];
    for addr in allowed {
        assert_eq!(refused_reason(ip(addr)), None, "{addr}");
    }
}

#[test]
fn allowlist_overrides_the_policy_and_gates_plain_http() {
    let allow: Arc<[Cidr]> = ["127.0.0.1/32", "10.1.0.0/16", "fd12::/16"]
        .iter()
        .map(|cidr| Cidr::parse(cidr).unwrap())
        .collect::<Vec<_>>()
        .into();
    let https = AddressPolicy { allow: allow.clone(), plain_http: false };
    let http = AddressPolicy { allow, plain_http: true };
    for addr in ["127.0.0.1", "10.1.2.3", "::ffff:10.1.2.3", "fd12::5", "8.8.8.8"] {
        assert_eq!(https.check(ip(addr)), Ok(()), "https {addr}");
    }
    for addr in ["127.0.0.1", "10.1.2.3", "::ffff:10.1.2.3", "fd12::5"] {
        assert_eq!(http.check(ip(addr)), Ok(()), "http {addr}");
    }
    assert_eq!(https.check(ip("127.0.0.2")), Err("loopback"));
    assert_eq!(https.check(ip("10.2.0.1")), Err("private network"));
    assert_eq!(https.check(ip("::1")), Err("loopback"));
    assert_eq!(https.check(ip("169.254.169.254")), Err("cloud metadata endpoint"));
    assert_eq!(http.check(ip("8.8.8.8")), Err("plain http is allowed only to allowlisted addresses"));
    assert_eq!(http.check(ip("10.2.0.1")), Err("private network"));
}

#[test]
fn resolved_addresses_are_filtered_to_the_allowed_ones() {
    let policy = AddressPolicy { allow: Arc::from(Vec::new()), plain_http: false };
    let public: SocketAddr = "93.184.215.14:0".parse().unwrap();
    let mixed = vec!["10.0.0.7:0".parse().unwrap(), public, "[::1]:0".parse().unwrap()];
    assert_eq!(policy.filter("rebind.example", mixed).unwrap(), vec![public]);
    let refusal = policy
        .filter("rebind.example", vec!["169.254.169.254:0".parse().unwrap(), "[::1]:0".parse().unwrap()])
        .unwrap_err();
    assert_eq!(
        refusal.message,
        "host rebind.example resolves only to refused addresses: \
         169.254.169.254 (cloud metadata endpoint), ::1 (loopback)"
    );
}

#[test]
fn cidr_parses_and_contains() {
    let cases = [
        ("10.0.0.0/8", "10.255.0.1", true),
        ("10.0.0.0/8", "11.0.0.1", false),
        ("10.0.0.1/8", "10.9.9.9", true),
        ("127.0.0.1/32", "127.0.0.1", true),
        ("127.0.0.1/32", "127.0.0.2", false),
        ("127.0.0.1", "127.0.0.1", true),
        ("0.0.0.0/0", "203.0.113.1", true),
        ("0.0.0.0/0", "::1", false),
        ("::1/128", "::1", true),
        ("::1/128", "::2", false),
        ("fd00::/8", "fdab::1", true),
        ("::/0", "2001:db8::1", true),
        ("::/0", "127.0.0.1", false),
    ];
    for (cidr, addr, expected) in cases {
        assert_eq!(Cidr::parse(cidr).unwrap().contains(ip(addr)), expected, "{cidr} {addr}");
    }
    assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
    assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
    let errors = [
        ("10.0.0.0/33", "invalid cidr \"10.0.0.0/33\": prefix length exceeds 32 for ipv4"),
        ("::/129", "invalid cidr \"::/129\": prefix length exceeds 128 for ipv6"),
        ("10.0.0.0/", "invalid cidr \"10.0.0.0/\": prefix length is not a number"),
        ("10.0.0.0/+8", "invalid cidr \"10.0.0.0/+8\": prefix length is not a number"),
        ("10.0.0.0/999", "invalid cidr \"10.0.0.0/999\": prefix length is too long"),
        ("example.com/8", "invalid cidr \"example.com/8\": not an ip address before the prefix"),
        ("", "invalid cidr \"\": not an ip address before the prefix"),
    ];
    for (text, message) in errors {
        assert_eq!(Cidr::parse(text).unwrap_err().to_string(), message);
    }
}

#[tokio::test]
async fn literal_addresses_are_refused_before_sending() {
    let client = client(&[]);
    let cases = [
        ("https://127.0.0.1/hook", "address 127.0.0.1 is refused: loopback"),
        ("https://[::1]:8443/hook", "address ::1 is refused: loopback"),
        ("https://[::ffff:127.0.0.1]/", "address ::ffff:127.0.0.1 is refused: loopback"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "address 169.254.169.254 is refused: cloud metadata endpoint",
        ),
        ("https://[fd00:ec2::254]/", "address fd00:ec2::254 is refused: cloud metadata endpoint"),
        (
            "https://100.64.1.1/",
            "address 100.64.1.1 is refused: carrier-grade nat shared range 100.64.0.0/10",
        ),
        // the url crate normalises other spellings of an IPv4 address
        ("https://0x7f.1/", "address 127.0.0.1 is refused: loopback"),
        ("https://2130706433/", "address 127.0.0.1 is refused: loopback"),
        (
            "http://93.184.215.14/",
            "address 93.184.215.14 is refused: plain http is allowed only to allowlisted addresses",
        ),
    ];
    for (url, reason) in cases {
        let error = bounded(client.post(url, &[], Bytes::new())).await.unwrap_err();
        assert_eq!(error, DeliveryError::Refused { reason: reason.to_owned() }, "{url}");
    }
}

#[tokio::test]
async fn bad_urls_and_headers_are_rejected() {
    let client = client(&[]);
    for url in ["not a url", "ftp://example.com/", "file:///etc/passwd", "gopher://example.com/"] {
        let error = bounded(client.post(url, &[], Bytes::new())).await.unwrap_err();
        assert!(matches!(error, DeliveryError::InvalidUrl { .. }), "{url}: {error:?}");
    }
    let error = client.post("ftp://example.com/", &[], Bytes::new()).await.unwrap_err();
    assert_eq!(error.to_string(), "invalid receiver url: scheme \"ftp\" is not http or https");
    let error = client
        .post("https://example.com/", &[("webhook-id", "a\nb".to_owned())], Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "invalid header \"webhook-id\": value has invalid bytes");
}

#[tokio::test]
async fn allowlisted_receiver_gets_the_post_with_its_headers() {
    let (tx, mut rx) = mpsc::channel::<(AxumHeaderMap, Bytes)>(1);
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State(tx): State<mpsc::Sender<(AxumHeaderMap, Bytes)>>,
                 headers: AxumHeaderMap,
                 body: Bytes| async move {
                    tx.send((headers, body)).await.unwrap();
                    "received"
                },
            ),
        )
        .with_state(tx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let secret = Secret::generate();
    let body = Bytes::from_static(br#"{"type":"vehicle.seen","data":{}}"#);
    let headers = sign::headers(&[&secret], "msg_1", 1_700_000_000, &body);
    let client = client(&["127.0.0.1/32"]);
    let response =
        bounded(client.post(&format!("http://{addr}/hook"), &headers, body.clone())).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body_snippet, "received");
    assert!(response.latency > Duration::ZERO);

    let (received_headers, received_body) = bounded(rx.recv()).await.unwrap();
    assert_eq!(received_body, body);
    assert_eq!(received_headers["webhook-id"], "msg_1");
    assert_eq!(received_headers["webhook-timestamp"], "1700000000");
    let signature = received_headers["webhook-signature"].to_str().unwrap();
    assert!(sign::verify(&secret, signature, "msg_1", 1_700_000_000, &received_body));
    assert_eq!(received_headers["user-agent"], USER_AGENT);
}

#[tokio::test]
async fn receiver_not_allowlisted_is_refused_without_a_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = client(&[]);
    for url in [format!("http://{addr}/hook"), format!("https://{addr}/hook")] {
        let error = bounded(client.post(&url, &[], Bytes::from_static(b"{}"))).await.unwrap_err();
        assert_eq!(
            error,
            DeliveryError::Refused { reason: "address 127.0.0.1 is refused: loopback".to_owned() },
            "{url}"
        );
    }
    assert_no_connection(&listener).await;
}

#[tokio::test]
async fn localhost_is_refused_by_the_resolver() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = client(&[]);
    for url in [format!("https://localhost:{port}/hook"), format!("http://localhost:{port}/hook")] {
        let error = bounded(client.post(&url, &[], Bytes::new())).await.unwrap_err();
        let DeliveryError::Refused { reason } = &error else {
            panic!("{url}: expected a refusal, got {error:?}");
        };
        assert!(reason.starts_with("host localhost resolves only to refused addresses: "), "{reason}");
        assert!(reason.contains("127.0.0.1 (loopback)"), "{reason}");
    }
    assert_no_connection(&listener).await;
}

#[tokio::test]
async fn localhost_reaches_an_allowlisted_receiver_through_the_resolver() {
    let addr = raw_receiver(|mut stream| async move {
        read_head(&mut stream).await;
        stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
    })
    .await;
    let client = client(&["127.0.0.1/32"]);
    let url = format!("http://localhost:{}/hook", addr.port());
    let response = bounded(client.post(&url, &[], Bytes::new())).await.unwrap();
    assert_eq!(response.status, 204);
    assert_eq!(response.body_snippet, "");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let addr = raw_receiver(|mut stream| async move {
        read_head(&mut stream).await;
        stream
            .write_all(b"HTTP/1.1 302 Found\r\nLocation: http://10.0.0.1/\r\nContent-Length: 5\r\n\r\nmoved")
            .await
            .unwrap();
    })
    .await;
    let client = client(&["127.0.0.1/32"]);
    let response = bounded(client.post(&format!("http://{addr}/hook"), &[], Bytes::new())).await.unwrap();
    assert_eq!(response.status, 302);
    assert_eq!(response.body_snippet, "moved");
}

#[tokio::test]
async fn a_ten_mib_body_is_read_only_up_to_the_cap() {
    const BODY_BYTES: usize = 10 * 1024 * 1024;
    let addr = raw_receiver(|mut stream| async move {
        read_head(&mut stream).await;
        let head = format!("HTTP/1.1 500 Internal Server Error\r\nContent-Length: {BODY_BYTES}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..BODY_BYTES / chunk.len() {
            // the client hangs up after the cap: stop at the first failed write
            if stream.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await;
    let client = client(&["127.0.0.1/32"]);
    let response = bounded(client.post(&format!("http://{addr}/hook"), &[], Bytes::new())).await.unwrap();
    assert_eq!(response.status, 500);
    assert_eq!(response.body_snippet.len(), 1024);
    assert!(response.body_snippet.bytes().all(|b| b == b'x'));
}

#[tokio::test]
async fn reading_stops_at_the_cap_without_waiting_for_the_rest() {
    // the receiver announces 10 MiB, sends 64 KiB and stalls: reading to the end would hit
    // the 5 s request timeout
    let addr = raw_receiver(|mut stream| async move {
        read_head(&mut stream).await;
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n").await.unwrap();
        stream.write_all(&vec![b'y'; 64 * 1024]).await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    let client = client(&["127.0.0.1/32"]);
    let response = bounded(client.post(&format!("http://{addr}/hook"), &[], Bytes::new())).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body_snippet, "y".repeat(1024));
    assert!(response.latency < Duration::from_secs(4), "{:?}", response.latency);
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    let addr = raw_receiver(|mut stream| async move {
        read_head(&mut stream).await;
        // hold the connection open without answering
        std::future::pending::<()>().await;
    })
    .await;
    let client = DeliveryClient::new(ClientOptions {
        timeout: Duration::from_millis(300),
        ..options(&["127.0.0.1/32"])
    })
    .unwrap();
    let started = Instant::now();
    let error = bounded(client.post(&format!("http://{addr}/hook"), &[], Bytes::new())).await.unwrap_err();
    assert_eq!(error, DeliveryError::Timeout { what: "request", limit: Duration::from_millis(300) });
    assert_eq!(error.to_string(), "receiver did not answer within the 300ms request timeout");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn https_goes_through_tls_and_a_failed_handshake_is_a_connect_error() {
    // an allowlisted receiver that answers the TLS client hello with plain HTTP
    let addr = raw_receiver(|mut stream| async move {
        let mut hello = [0u8; 512];
        let _ = stream.read(&mut hello).await;
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
    })
    .await;
    let client = client(&["127.0.0.1/32"]);
    let error = bounded(client.post(&format!("https://{addr}/hook"), &[], Bytes::new())).await.unwrap_err();
    assert!(matches!(error, DeliveryError::Connect { .. }), "{error:?}");
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = client(&["127.0.0.1/32"]);
    let error = bounded(client.post(&format!("http://{addr}/hook"), &[], Bytes::new())).await.unwrap_err();
    let DeliveryError::Connect { message } = &error else {
        panic!("expected a connect error, got {error:?}");
    };
    assert!(!message.contains("/hook"), "the url stays out of the message: {message}");
}
