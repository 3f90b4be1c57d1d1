//! A capture made at an agent is queryable through GraphQL with byte-identical image, on the
//! embedded defaults (SQLite + local directory) and on PostgreSQL + S3 (SeaweedFS).

use anyhow::Result;
use lanewatch_tests::{Agent, AgentBuilder, Blob, CameraSource, ControlPlane, Db, Postgres, SeaweedFs};
use serde_json::{Value, json};

/// Starts an agent whose camera replays one large JPEG, waits for its first capture in GraphQL,
/// and checks metadata and image bytes.
async fn capture_roundtrip(cp: &ControlPlane, site: &str) -> Result<()> {
    let frames = tempfile::tempdir()?;
    let image = lanewatch_tests::noise_jpeg(1600, 1200, 42);
    assert!(image.len() > 1 << 20, "the fixture must be multi-megabyte to exercise chunking");
    std::fs::write(frames.path().join("frame-000.jpg"), &image)?;

    let agent: Agent =
        AgentBuilder::new(cp, site).camera(CameraSource::Replay(frames.path().into())).start()?;

    let capture: Value = cp
        .wait_for("the agent's first capture", || async {
            let captures = cp.all_captures().await?;
            Ok(captures.into_iter().find(|c| c["site"] == site))
        })
        .await?;

    assert_eq!(capture["agentId"], agent.id.as_str());
    assert!(capture["lane"].as_i64().is_some_and(|l| (0..2).contains(&l)), "{capture}");
    assert!(capture["capturedAt"].as_str().is_some_and(|t| t.contains('T')), "{capture}");
    assert!(capture["vehicleClass"].is_string(), "{capture}");
    assert_eq!(capture["imageSha256"], lanewatch_tests::sha256_hex(&image));
    assert_eq!(capture["imageBytes"], image.len());

    let url = capture["imageUrl"].as_str().expect("imageUrl");
    assert!(url.starts_with("http://"), "imageUrl is absolute: {url}");
    let response = cp.get(url).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("image/jpeg"));
    let served = response.bytes().await?;
    assert!(served.as_ref() == image.as_slice(), "served image differs from the camera's bytes");

    // The agent shows as online with its software version.
    let data = cp.graphql("{ agents { id site online lastSeen version } }", json!({})).await?;
    let me = data["agents"].as_array().unwrap().iter().find(|a| a["id"] == agent.id.as_str()).cloned();
    let me = me.expect("agent listed");
    assert_eq!(me["site"], site);
    assert_eq!(me["online"], true);
    assert!(me["version"].as_str().is_some_and(|v| !v.is_empty()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_is_queryable_with_identical_image_on_embedded_defaults() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    capture_roundtrip(&cp, "site-embedded").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_is_queryable_with_identical_image_on_postgres_and_s3() -> Result<()> {
    let pg = Postgres::fresh_database()?;
    let s3 = SeaweedFs::start()?;
    let cp = ControlPlane::start(Db::Url(pg.url.clone()), s3.blob("lanewatch-e2e")).await?;
    capture_roundtrip(&cp, "site-production").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_traffic_yields_captures_with_unknown_occupancy() -> Result<()> {
    let cp = ControlPlane::start(Db::Sqlite, Blob::Local).await?;
    let _agent = AgentBuilder::new(&cp, "site-sim").flow(2500).start()?;
    let captures = cp
        .wait_for("three simulated captures", || async {
            let c = cp.all_captures().await?;
            Ok((c.len() >= 3).then_some(c))
        })
        .await?;
    for c in &captures {
        // No vision runs yet: occupancy must be unknown, never copied from simulator truth.
        assert_eq!(c["occupancy"]["status"], "UNKNOWN", "{c}");
        assert!(c["occupancy"]["occupants"].is_null(), "{c}");
        assert_ne!(c["vehicleClass"], "UNKNOWN", "the detector classifies every vehicle: {c}");
        let img = cp.get(c["imageUrl"].as_str().unwrap()).await?.bytes().await?;
        assert_eq!(&img[..3], &[0xFF, 0xD8, 0xFF], "a JPEG image");
    }
    // Newest first.
    let times: Vec<&str> = captures.iter().map(|c| c["capturedAt"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "captures are newest first");
    Ok(())
}

/// A CA and a server certificate for `localhost` / 127.0.0.1 signed by it, as PEM files.
fn test_pki(dir: &std::path::Path) -> Result<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate()?;
    let server_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let server_cert = server_params.signed_by(&server_key, &issuer)?;
    let (ca, cert, key) = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&ca, ca_cert.pem())?;
    std::fs::write(&cert, server_cert.pem())?;
    std::fs::write(&key, server_key.serialize_pem())?;
    Ok((ca, cert, key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_upload_over_tls_and_plaintext_is_refused() -> Result<()> {
    let pki = tempfile::tempdir()?;
    let (ca, cert, key) = test_pki(pki.path())?;
    let cp = ControlPlane::start_tls(Db::Sqlite, Blob::Local, &cert, &key).await?;
    assert!(cp.grpc_url().starts_with("https://"));

    // A plaintext client cannot open a session on the TLS gateway.
    let plaintext = format!("http://{}", cp.grpc_addr);
    assert!(
        lanewatch_tests::grpc::Session::open(&plaintext, "agent-plain", "site-plain").await.is_err(),
        "plaintext session refused"
    );

    // An agent that trusts the CA uploads as usual.
    let frames = tempfile::tempdir()?;
    let image = lanewatch_tests::noise_jpeg(320, 240, 9);
    std::fs::write(frames.path().join("f.jpg"), &image)?;
    let _agent = AgentBuilder::new(&cp, "site-tls")
        .ca_path(&ca)
        .camera(CameraSource::Replay(frames.path().into()))
        .start()?;
    let capture = cp
        .wait_for("a capture over TLS", || async {
            Ok(cp.all_captures().await?.into_iter().find(|c| c["site"] == "site-tls"))
        })
        .await?;
    assert_eq!(capture["imageSha256"], lanewatch_tests::sha256_hex(&image));
    Ok(())
}
