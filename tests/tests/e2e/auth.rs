//! Agent authentication on the session: mutual TLS with per-agent client certificates (subject
//! CN = agent id), a Hello that must match its certificate, and revocation through GraphQL.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use lanewatch_tests::grpc::{Session, hello, tls_channel};
use lanewatch_tests::{AgentBuilder, Blob, ControlPlane, Db};
use serde_json::{Value, json};

/// A test CA, the control plane's server certificate and per-agent client certificates.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub(crate) ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl Pki {
    pub(crate) fn new() -> Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir()?;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate()?;
        let server_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        let server = server_params.signed_by(&server_key, &issuer)?;
        let ca = dir.path().join("ca.pem");
        let (server_cert, server_key_path) = (dir.path().join("server.pem"), dir.path().join("server.key"));
        std::fs::write(&ca, ca_cert.pem())?;
        std::fs::write(&server_cert, server.pem())?;
        std::fs::write(&server_key_path, server_key.serialize_pem())?;
        Ok(Self { dir, issuer, ca, server_cert, server_key: server_key_path })
    }

    /// Issues a client certificate whose subject CN is `agent_id`; returns (cert, key) paths.
    pub(crate) fn agent(&self, agent_id: &str) -> Result<(PathBuf, PathBuf)> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, agent_id);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        let (cert_path, key_path) = (
            self.dir.path().join(format!("{agent_id}.pem")),
            self.dir.path().join(format!("{agent_id}.key")),
        );
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Ok((cert_path, key_path))
    }

    pub(crate) async fn start(&self) -> Result<ControlPlane> {
        ControlPlane::start_tls_with_client_ca(
            Db::Sqlite,
            Blob::Local,
            &self.server_cert,
            &self.server_key,
            &self.ca,
        )
        .await
    }

    /// A scripted session over mutual TLS as the holder of `identity`.
    async fn session(
        &self,
        cp: &ControlPlane,
        identity: &(PathBuf, PathBuf),
        agent_id: &str,
    ) -> Result<Result<Session, tonic::Status>> {
        let (cert, key) = (std::fs::read(&identity.0)?, std::fs::read(&identity.1)?);
        let channel = tls_channel(&cp.grpc_url(), &std::fs::read(&self.ca)?, Some((&cert, &key))).await?;
        Session::open_on(channel, hello(agent_id, "site-auth")).await
    }
}

async fn captures_of(cp: &ControlPlane, agent_id: &str) -> Result<usize> {
    Ok(cp.all_captures().await?.iter().filter(|c| c["agentId"] == agent_id).count())
}

async fn online(cp: &ControlPlane, agent_id: &str) -> Result<bool> {
    let data = cp.graphql("query($id: ID!) { agent(id: $id) { online } }", json!({ "id": agent_id })).await?;
    Ok(data["agent"]["online"].as_bool() == Some(true))
}

fn admin(cp: &ControlPlane, token: &str, body: &Value) -> Result<Value> {
    if let Some(errors) = body.get("errors") {
        bail!("graphql errors as admin {token:.10}..: {errors}; control plane:\n{}", cp.proc.stderr());
    }
    Ok(body["data"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_need_their_own_certificate() -> Result<()> {
    let pki = Pki::new()?;
    let cp = pki.start().await?;
    let agent_a = pki.agent("agent-a")?;

    // An agent showing its own certificate uploads captures.
    let _a = AgentBuilder::new(&cp, "site-a")
        .agent_id("agent-a")
        .ca_path(&pki.ca)
        .client_cert(&agent_a.0, &agent_a.1)
        .start()?;
    cp.wait_for("a capture over mutual tls", || async {
        Ok((captures_of(&cp, "agent-a").await? > 0).then_some(()))
    })
    .await?;

    // Without a client certificate, the TLS handshake (or the session) is refused.
    let no_cert = match tls_channel(&cp.grpc_url(), &std::fs::read(&pki.ca)?, None).await {
        Err(_) => true,
        Ok(channel) => !matches!(Session::open_on(channel, hello("agent-b", "site-b")).await, Ok(Ok(_))),
    };
    assert!(no_cert, "a session without a client certificate is refused");
    let mut b = AgentBuilder::new(&cp, "site-b").agent_id("agent-b").ca_path(&pki.ca).start()?;
    cp.wait_for("agent-b's failed session", || async {
        Ok(b.proc.stderr().contains("session failed").then_some(()))
    })
    .await?;
    assert_eq!(captures_of(&cp, "agent-b").await?, 0);
    assert!(b.proc.try_status().is_none(), "a refused agent keeps running and retrying");

    // A certificate speaks for its own agent only.
    let status = match pki.session(&cp, &agent_a, "agent-b").await? {
        Ok(_) => bail!("agent-a's certificate opened a session for agent-b"),
        Err(status) => status,
    };
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "certificate is for agent agent-a, hello says agent-b");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_is_cut_off_until_reinstated() -> Result<()> {
    let pki = Pki::new()?;
    let cp = pki.start().await?;
    let token = cp.create_admin_key()?;
    let identity = pki.agent("agent-r")?;
    let agent = AgentBuilder::new(&cp, "site-r")
        .agent_id("agent-r")
        .ca_path(&pki.ca)
        .client_cert(&identity.0, &identity.1)
        .start()?;
    cp.wait_for("agent-r's first capture", || async {
        Ok((captures_of(&cp, "agent-r").await? > 0).then_some(()))
    })
    .await?;

    // The operator of the local demo is not an admin.
    let denied = cp
        .graphql_raw("mutation { revokeAgent(id: \"agent-r\", reason: \"stolen\") { id } }", json!({}))
        .await?;
    assert_eq!(denied["errors"][0]["extensions"]["code"], "PERMISSION_DENIED", "{denied}");

    let revoke =
        "mutation($id: ID!) { revokeAgent(id: $id, reason: \"device stolen\") { id revoked revokedReason } }";
    let body = cp.graphql_with_key(&token, revoke, json!({ "id": "agent-r" })).await?;
    let data = admin(&cp, &token, &body)?;
    assert_eq!(
        data["revokeAgent"],
        json!({ "id": "agent-r", "revoked": true, "revokedReason": "device stolen" })
    );

    // The live session ends and reconnects are refused.
    cp.wait_for("agent-r offline", || async { Ok((!online(&cp, "agent-r").await?).then_some(())) }).await?;
    cp.wait_for("agent-r's refusal in its log", || async {
        Ok(agent.proc.stderr().contains("control plane refused this agent").then_some(()))
    })
    .await?;
    let status = match pki.session(&cp, &identity, "agent-r").await? {
        Ok(_) => bail!("a revoked agent opened a session"),
        Err(status) => status,
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "agent agent-r is revoked: device stolen");
    let held = captures_of(&cp, "agent-r").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(captures_of(&cp, "agent-r").await?, held, "no capture arrives while revoked");
    assert!(!online(&cp, "agent-r").await?);

    // Reinstated, the agent reconnects and its buffered captures arrive.
    let reinstate = "mutation($id: ID!) { reinstateAgent(id: $id) { id revoked } }";
    let body = cp.graphql_with_key(&token, reinstate, json!({ "id": "agent-r" })).await?;
    assert_eq!(admin(&cp, &token, &body)?["reinstateAgent"]["revoked"], false);
    cp.wait_for("agent-r's buffered captures", || async {
        Ok((captures_of(&cp, "agent-r").await? > held).then_some(()))
    })
    .await?;
    assert!(online(&cp, "agent-r").await?);

    let audit = cp
        .graphql_with_key(&token, "{ auditLog(first: 20) { edges { node { action } } } }", json!({}))
        .await?;
    let actions: Vec<&str> = audit["data"]["auditLog"]["edges"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["node"]["action"].as_str()).collect())
        .unwrap_or_default();
    assert!(actions.contains(&"revokeAgent") && actions.contains(&"reinstateAgent"), "{audit}");
    Ok(())
}
