//! Values from the process environment, read once by `main` and passed to validation: the S3
//! credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`) and the image-link signing key
//! (`LANEWATCH_URL_SIGNING_KEY`), so that secrets can come from a Kubernetes Secret rather than
//! the config file. A value in the file wins. `Debug` never prints them. `POD_NAME` (the
//! downward API) names this replica as a leader-lock holder.

use std::fmt;

#[derive(Clone, Default)]
pub struct Env {
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    /// `http.url_signing_key` when the file has none.
    pub url_signing_key: Option<String>,
    /// This replica's pod, its identity in the leader Lease (not a secret).
    pub pod_name: Option<String>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("Env")
            .field("aws_access_key_id", &redacted(&self.aws_access_key_id))
            .field("aws_secret_access_key", &redacted(&self.aws_secret_access_key))
            .field("url_signing_key", &redacted(&self.url_signing_key))
            .field("pod_name", &self.pod_name)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, Overrides};
    use super::*;

    #[test]
    fn the_signing_key_comes_from_the_environment_when_the_file_has_none() {
        let key = "k".repeat(32);
        let env = Env { url_signing_key: Some(key.clone()), ..Env::default() };
        let config = Config::parse("version = 1\n", &Overrides::default(), &env).unwrap();
        assert_eq!(config.image_links.signing_key.as_deref(), Some(key.as_bytes()));
        let file = format!("version = 1\n[http]\nurl_signing_key = \"{}\"\n", "f".repeat(32));
        let config = Config::parse(&file, &Overrides::default(), &env).unwrap();
        assert_eq!(
            config.image_links.signing_key.as_deref(),
            Some("f".repeat(32).as_bytes()),
            "the file wins"
        );
        let short = Env { url_signing_key: Some("short".into()), ..Env::default() };
        let e = Config::parse("version = 1\n", &Overrides::default(), &short).unwrap_err();
        assert_eq!(e.field, "http.url_signing_key");
        assert!(!format!("{short:?}").contains("short"), "Debug redacts it");
    }
}
