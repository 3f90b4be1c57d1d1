//! Time-limited image links, so that a URL handed out by the API does not stay a bearer token
//! for ever: a presigned S3 `GetObject` URL when images live in S3, else an HMAC-SHA256-signed
//! `/images/{id}?expires=<unix secs>&sig=<hex>` that `http.rs` accepts without an API key while
//! unexpired. The signature covers the capture id and the expiry; the key comes from
//! `http.url_signing_key` (all replicas must share it) or is drawn at start. Links are signed per
//! window of a tenth of the ttl, so the same image gets the same URL within a window (browsers
//! keep it cached across live re-renders); each stays valid between the ttl and 1.1 × the ttl.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use uuid::Uuid;

use crate::blob::BlobStore;
use crate::config::ImageLinksConfig;
use crate::error::{Error, ErrorKind};

type HmacSha256 = Hmac<Sha256>;

/// The widths a thumbnail (`/images/{id}?…&width=`) may have.
pub const THUMBNAIL_WIDTHS: std::ops::RangeInclusive<u32> = 64..=1024;

/// Makes and checks image links; cheap to clone.
#[derive(Clone)]
pub struct ImageLinks {
    public_url: String,
    ttl: Duration,
    key: Arc<[u8]>,
    blobs: BlobStore,
}

impl std::fmt::Debug for ImageLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageLinks").field("public_url", &self.public_url).field("ttl", &self.ttl).finish()
    }
}

impl ImageLinks {
    /// `public_url` is the absolute base URL without a trailing slash.
    pub fn new(public_url: String, config: &ImageLinksConfig, blobs: BlobStore) -> Self {
        let key: Arc<[u8]> = match &config.signing_key {
            Some(key) => key.as_slice().into(),
            None => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                key.as_slice().into()
            }
        };
        Self { public_url, ttl: Duration::from_secs(config.ttl_secs), key, blobs }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The signing window `now` falls in: links made within one window are the same URL (so a
    /// page re-rendered within it, a live console view, does not make the browser fetch its
    /// images again), and each stays valid for at least the ttl: (window start, link expiry).
    fn window(&self, now: DateTime<Utc>) -> (i64, i64) {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 4);
        let step = (ttl / 10).max(1);
        let start = now.timestamp().div_euclid(step) * step;
        (start, start.saturating_add(ttl).saturating_add(step))
    }

    /// A link to the image of capture `id` (stored under `image_key`), valid for at least the ttl.
    pub async fn url(&self, id: Uuid, image_key: &str, now: DateTime<Utc>) -> Result<String, Error> {
        match &self.blobs {
            BlobStore::S3(s3) => {
                let (start, expires) = self.window(now);
                let valid = Duration::from_secs(u64::try_from(expires - start).unwrap_or(0));
                let start = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(start).unwrap_or(0));
                s3.presigned_get(image_key, start, valid)
                    .await
                    .map_err(|e| Error::unavailable(format!("cannot presign the image of capture {id}: {e}")))
            }
            BlobStore::Local(_) => Ok(self.signed_url(id, now)),
        }
    }

    /// `{public_url}/images/{id}?expires=..&sig=..`, served by this control plane.
    pub fn signed_url(&self, id: Uuid, now: DateTime<Utc>) -> String {
        let (_, expires) = self.window(now);
        let sig = hex::encode(self.mac(id, expires).finalize().into_bytes());
        format!("{}/images/{id}?expires={expires}&sig={sig}", self.public_url)
    }

    /// Accepts a signed link while unexpired; 403 when expired or tampered with.
    pub fn verify(&self, id: Uuid, expires: i64, sig: &str, now: DateTime<Utc>) -> Result<(), Error> {
        let tampered = || Error::new(ErrorKind::PermissionDenied, "image link signature is invalid");
        let sig = hex::decode(sig).map_err(|_| tampered())?;
        self.mac(id, expires).verify_slice(&sig).map_err(|_| tampered())?;
        if now.timestamp() >= expires {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                "image link expired; ask the api for a fresh imageUrl",
            ));
        }
        Ok(())
    }

    fn mac(&self, id: Uuid, expires: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("hmac accepts keys of any length");
        mac.update(format!("{id}:{expires}").as_bytes());
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BlobConfig;

    async fn make_links(key: Option<&str>, ttl_secs: u64, dir: &std::path::Path) -> ImageLinks {
        let blobs = BlobStore::open(&BlobConfig::Local { dir: dir.to_owned() }).await.unwrap();
        let config = ImageLinksConfig { ttl_secs, signing_key: key.map(|k| k.as_bytes().to_vec()) };
        ImageLinks::new("http://cp.test".into(), &config, blobs)
    }

    fn query(url: &str) -> (i64, String) {
        let (_, q) = url.split_once('?').unwrap();
        let mut expires = 0;
        let mut sig = String::new();
        for pair in q.split('&') {
            match pair.split_once('=').unwrap() {
                ("expires", v) => expires = v.parse().unwrap(),
                ("sig", v) => sig = v.to_owned(),
                other => panic!("unexpected {other:?}"),
            }
        }
        (expires, sig)
    }

    /// The signature with its last hex digit changed (always to a different digit).
    fn flip_last_hex_digit(sig: &str) -> String {
        let (head, last) = sig.split_at(sig.len() - 1);
        format!("{head}{}", if last == "0" { '1' } else { '0' })
    }

    #[tokio::test]
    async fn signed_links_expire_and_refuse_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let key = "0123456789abcdef0123456789abcdef";
        let links = make_links(Some(key), 300, dir.path()).await;
        let id = Uuid::now_v7();
        // the start of a 30 s signing window (ttl 300 s)
        let now = DateTime::from_timestamp(1_700_000_010, 0).unwrap();
        let url = links.url(id, "captures/x.jpg", now).await.unwrap();
        // signed for the 30 s window the time falls in: valid for the ttl plus that window
        assert!(url.starts_with(&format!("http://cp.test/images/{id}?expires=1700000340&sig=")), "{url}");
        let later = |secs| links.url(id, "captures/x.jpg", now + chrono::Duration::seconds(secs));
        assert_eq!(later(29).await.unwrap(), url, "one window, one URL (browsers keep it cached)");
        assert_ne!(later(30).await.unwrap(), url);
        let (expires, sig) = query(&url);
        links.verify(id, expires, &sig, now).unwrap();
        links.verify(id, expires, &sig, now + chrono::Duration::seconds(329)).unwrap();
        let expired = links.verify(id, expires, &sig, now + chrono::Duration::seconds(330)).unwrap_err();
        assert_eq!(expired.kind, ErrorKind::PermissionDenied);
        assert!(expired.message.contains("expired"), "{}", expired.message);
        // a later expiry, another capture, a flipped signature, garbage: all tampered
        for (id2, exp2, sig2) in [
            (id, expires + 3600, sig.clone()),
            (Uuid::now_v7(), expires, sig.clone()),
            (id, expires, flip_last_hex_digit(&sig)),
            (id, expires, "zz".to_owned()),
        ] {
            let e = links.verify(id2, exp2, &sig2, now).unwrap_err();
            assert!(e.message.contains("signature is invalid"), "{}", e.message);
        }
        // replicas sharing the key accept each other's links; a random key does not
        let same = make_links(Some(key), 300, dir.path()).await;
        same.verify(id, expires, &sig, now).unwrap();
        let other = make_links(None, 300, dir.path()).await;
        assert!(other.verify(id, expires, &sig, now).is_err());
    }
}
