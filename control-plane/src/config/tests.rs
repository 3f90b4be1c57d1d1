//! Tests of the control plane's config file: defaults, overrides, and the errors that name a field.
use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, &Overrides::default(), &Env::default())
}

fn field_of(text: &str) -> String {
    parse(text).unwrap_err().field
}

#[test]
fn embedded_defaults_are_valid() {
    let c = Config::embedded(&Overrides::default(), &Env::default()).unwrap();
    assert_eq!(c.grpc.listen.to_string(), "127.0.0.1:7400");
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.shutdown_grace_secs, 10);
    assert!(matches!(c.blob, BlobConfig::Local { .. }));
}

#[test]
fn full_file_parses() {
    let c = parse(
        r#"
version = 1
shutdown_grace_secs = 3
[grpc]
listen = "0.0.0.0:7400"
tls = { cert_path = "c.pem", key_path = "k.pem", client_ca_path = "ca.pem" }
[http]
listen = "127.0.0.1:0"
public_url = "https://lanewatch.example.org/"
[database]
url = "postgres://lw:secret@db:5432/lanewatch"
[blob]
kind = "s3"
bucket = "captures"
endpoint_url = "http://127.0.0.1:8333"
force_path_style = true
create_bucket = true
access_key_id = "AKIA"
secret_access_key = "hush"
[limits]
max_chunk_bytes = 65536
"#,
    )
    .unwrap();
    assert_eq!(c.http.public_url.as_deref(), Some("https://lanewatch.example.org"));
    assert_eq!(c.limits.max_chunk_bytes, 65536);
    let BlobConfig::S3(s3) = &c.blob else { panic!("expected s3") };
    assert_eq!(s3.region, "us-east-1");
    let debug = format!("{c:?}");
    assert!(!debug.contains("hush") && !debug.contains("secret@"), "{debug}");
}

#[test]
fn errors_name_fields() {
    assert_eq!(field_of(""), "version");
    assert_eq!(field_of("version = 2"), "version");
    assert_eq!(field_of("version = 1\nbogus = 1"), "bogus");
    assert_eq!(field_of("version = 1\n[grpc]\nlisten = \"nope\""), "grpc.listen");
    assert_eq!(field_of("version = 1\n[grpc]\nlisten = \"0.0.0.0:7400\""), "grpc.tls");
    assert_eq!(field_of("version = 1\n[grpc]\nextra = 1"), "grpc.extra");
    assert_eq!(field_of("version = 1\n[limits]\nmax_chunk_bytes = \"big\""), "limits.max_chunk_bytes");
    assert_eq!(field_of("version = 1\n[limits]\nmax_chunk_bytes = 0"), "limits.max_chunk_bytes");
    assert_eq!(
        field_of("version = 1\n[limits]\nmax_stores_per_session = 0"),
        "limits.max_stores_per_session"
    );
    assert_eq!(field_of("version = 1\n[database]\nurl = \"mysql://x\""), "database.url");
    assert_eq!(field_of("version = 1\n[blob]\nkind = \"s3\""), "blob.bucket");
    assert_eq!(field_of("version = 1\n[blob]\nkind = \"s3\"\nbucket = \"b\""), "blob.access_key_id");
    assert_eq!(field_of("version = 1\n[blob]\nbucket = \"b\""), "blob.bucket");
    assert_eq!(field_of("version = 1\n[http]\npublic_url = \"ftp://x\""), "http.public_url");
    assert_eq!(field_of("version = [1"), "(document)");
}

#[test]
fn env_supplies_s3_credentials_and_overrides_apply() {
    let env = Env {
        aws_access_key_id: Some("a".into()),
        aws_secret_access_key: Some("s".into()),
        ..Env::default()
    };
    let c = Config::parse("version = 1\n[blob]\nkind = \"s3\"\nbucket = \"b\"", &Overrides::default(), &env)
        .unwrap();
    assert!(matches!(c.blob, BlobConfig::S3(ref s) if s.access_key_id == "a"));

    let o = Overrides {
        grpc_listen: Some("127.0.0.1:0".into()),
        http_listen: Some("127.0.0.1:0".into()),
        database_url: Some("sqlite::memory:".into()),
        blob_dir: Some("/tmp/x".into()),
    };
    let c = Config::parse("version = 1", &o, &Env::default()).unwrap();
    assert_eq!(c.grpc.listen.port(), 0);
    assert_eq!(c.database.url, "sqlite::memory:");
    assert!(matches!(c.blob, BlobConfig::Local { ref dir } if dir == &PathBuf::from("/tmp/x")));
}

#[test]
fn anonymous_local_access_only_on_loopback() {
    assert!(parse("version = 1").unwrap().auth.allow_anonymous_local);
    let public = "version = 1\n[http]\nlisten = \"0.0.0.0:8080\"";
    assert!(!parse(public).unwrap().auth.allow_anonymous_local);
    let forced = format!("{public}\n[auth]\nallow_anonymous_local = true");
    assert_eq!(field_of(&forced), "auth.allow_anonymous_local");
    let off = "version = 1\n[auth]\nallow_anonymous_local = false";
    assert!(!parse(off).unwrap().auth.allow_anonymous_local);
    assert_eq!(field_of("version = 1\n[auth]\nanonymous = true"), "auth.anonymous");
}

#[test]
fn image_links_and_cluster_are_validated() {
    let c = parse("version = 1").unwrap();
    assert_eq!(c.image_links.ttl_secs, DEFAULT_PRESIGN_TTL_SECS);
    assert!(c.image_links.signing_key.is_none() && !c.cluster.enabled);
    assert_eq!(field_of("version = 1\n[blob]\npresign_ttl_secs = 0"), "blob.presign_ttl_secs");
    assert_eq!(field_of("version = 1\n[http]\nurl_signing_key = \"short\""), "http.url_signing_key");
    assert_eq!(field_of("version = 1\n[cluster]\nenabled = true"), "cluster.enabled");
    let pg = "version = 1\n[database]\nurl = \"postgres://db/lw\"\n[cluster]\nenabled = true";
    assert_eq!(field_of(pg), "http.url_signing_key");
    let key = "k".repeat(32);
    let c =
        parse(&format!("{pg}\n[http]\nurl_signing_key = \"{key}\"\n[blob]\npresign_ttl_secs = 60")).unwrap();
    assert!(c.cluster.enabled);
    assert_eq!(c.image_links.ttl_secs, 60);
    assert!(!format!("{c:?}").contains(&key));
}

#[test]
fn client_certificates_follow_the_client_ca() {
    let tls = |extra: &str| {
        format!("version = 1\n[grpc]\ntls = {{ cert_path = \"c\", key_path = \"k\"{extra} }}\n")
    };
    assert!(!parse("version = 1").unwrap().grpc.require_client_cert);
    assert!(!parse(&tls("")).unwrap().grpc.require_client_cert);
    let mtls = tls(", client_ca_path = \"ca\"");
    assert!(parse(&mtls).unwrap().grpc.require_client_cert);
    let optional = format!("{mtls}require_client_cert = false\n");
    assert!(!parse(&optional).unwrap().grpc.require_client_cert);
    let no_ca = format!("{}require_client_cert = true\n", tls(""));
    assert_eq!(field_of(&no_ca), "grpc.require_client_cert");
}

#[test]
fn redacts_database_password() {
    assert_eq!(redact_url("postgres://u:p@h:5432/d"), "postgres://u:<redacted>@h:5432/d");
    assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
}
