//! Standard Webhooks signing: endpoint secrets (`whsec_<base64>`), the `v1` HMAC-SHA256
//! signature over `{msg_id}.{timestamp}.{body}`, and the three `webhook-*` headers a delivery
//! carries. Pure functions, no I/O.
//!
//! See <https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>.
//! During a secret rotation both the old and the new secret sign, and the signature header holds
//! one `v1,<base64>` entry per secret, separated by a single space.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix that marks a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Header carrying the message id, the same on every retry of one message.
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the send time in seconds since the Unix epoch.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the space-separated `v1,<base64>` signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// Shortest key the spec allows, in bytes.
pub const MIN_KEY_BYTES: usize = 16;
/// Longest key the spec allows, in bytes.
pub const MAX_KEY_BYTES: usize = 64;
/// Size of a key that [`Secret::generate`] draws, in bytes.
pub const GENERATED_KEY_BYTES: usize = 32;

/// Why a string is not a usable secret. The messages never contain the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("webhook secret must start with \"whsec_\"")]
    MissingPrefix,
    #[error("webhook secret is not valid standard base64 after the \"whsec_\" prefix")]
    InvalidBase64,
    #[error("webhook secret key is {len} bytes, shorter than the minimum of {MIN_KEY_BYTES}")]
    TooShort { len: usize },
    #[error("webhook secret key is {len} bytes, longer than the maximum of {MAX_KEY_BYTES}")]
    TooLong { len: usize },
}

/// An endpoint's signing key: the raw key bytes behind `whsec_<base64>`.
///
/// `Display` (and so `to_string()`) gives the storable `whsec_<base64>` form and therefore shows
/// the key; `Debug` does not, so a secret inside a logged struct stays hidden.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl Secret {
    /// A fresh secret of [`GENERATED_KEY_BYTES`] random bytes from the thread-local CSPRNG.
    pub fn generate() -> Self {
        let key: [u8; GENERATED_KEY_BYTES] = rand::random();
        Self { key: key.to_vec() }
    }

    /// Parses `whsec_<standard base64>`, with a key of 16 to 64 bytes.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or(SecretError::MissingPrefix)?;
        let key = BASE64.decode(encoded).map_err(|_| SecretError::InvalidBase64)?;
        Self::from_bytes(key)
    }

    /// A secret from raw key bytes, with the same length bounds as [`Secret::parse`].
    pub fn from_bytes(key: Vec<u8>) -> Result<Self, SecretError> {
        match key.len() {
            len if len < MIN_KEY_BYTES => Err(SecretError::TooShort { len }),
            len if len > MAX_KEY_BYTES => Err(SecretError::TooLong { len }),
            _ => Ok(Self { key }),
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("hmac accepts keys of any length")
    }
}

impl FromStr for Secret {
    type Err = SecretError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SECRET_PREFIX}{}", BASE64.encode(&self.key))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The keyed MAC over the signed content `{msg_id}.{timestamp}.{body}`.
fn signed_content(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = secret.mac();
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` header value: one `v1,<base64 HMAC-SHA256>` entry per secret, in the
/// order given, joined by a single space. Pass two secrets during a rotation's overlap.
pub fn sign(secrets: &[&Secret], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| {
            let tag = signed_content(secret, msg_id, timestamp, body).finalize().into_bytes();
            format!("v1,{}", BASE64.encode(tag))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether any `v1,` entry of a `webhook-signature` header value is `secret`'s signature of this
/// message. Entries of other versions or with bad base64 are skipped; the comparison is constant
/// time. Checking the timestamp's age against a tolerance is the receiver's business, not this.
pub fn verify(secret: &Secret, header_value: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> bool {
    let expected = signed_content(secret, msg_id, timestamp, body);
    header_value.split_ascii_whitespace().any(|entry| {
        let Some(("v1", encoded)) = entry.split_once(',') else {
            return false;
        };
        let Ok(signature) = BASE64.decode(encoded) else {
            return false;
        };
        expected.clone().verify_slice(&signature).is_ok()
    })
}

/// The three Standard Webhooks headers of one delivery attempt, as `(name, value)` pairs in the
/// shape [`super::client::DeliveryClient::post`] takes: `webhook-id`, `webhook-timestamp` and
/// `webhook-signature` (signed with every secret in `secrets`).
pub fn headers(
    secrets: &[&Secret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    [
        (HEADER_ID, msg_id.to_owned()),
        (HEADER_TIMESTAMP, timestamp.to_string()),
        (HEADER_SIGNATURE, sign(secrets, msg_id, timestamp, body)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks spec's known-answer vector, as used by its reference libraries'
    // tests; cross-checked independently with Python's hmac, hashlib and base64 modules.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn spec_secret() -> Secret {
        Secret::parse(SPEC_SECRET).unwrap()
    }

    #[test]
    fn signs_the_spec_vector() {
        let secret = spec_secret();
        assert_eq!(sign(&[&secret], SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY), SPEC_SIGNATURE);
        assert!(verify(&secret, SPEC_SIGNATURE, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY));
    }

    #[test]
    fn two_secrets_give_two_entries_and_either_verifies() {
        let old = spec_secret();
        let new = Secret::generate();
        let header = sign(&[&old, &new], SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY);
        let entries: Vec<&str> = header.split(' ').collect();
        assert_eq!(entries.len(), 2, "{header}");
        assert_eq!(entries[0], SPEC_SIGNATURE);
        assert!(entries[1].starts_with("v1,"));
        assert!(verify(&old, &header, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY));
        assert!(verify(&new, &header, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY));
        // a receiver that only knows the new secret accepts the header as well as its own entry
        assert!(verify(&new, entries[1], SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY));
        assert!(!verify(&new, entries[0], SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY));
    }

    #[test]
    fn tampering_fails_verification() {
        let secret = spec_secret();
        let header = sign(&[&secret], SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert!(!verify(&secret, &header, SPEC_MSG_ID, SPEC_TIMESTAMP, br#"{"test": 2432232315}"#));
        assert!(!verify(&secret, &header, "msg_p5jXN8AQM9LWM0D4loKWxJeK", SPEC_TIMESTAMP, SPEC_BODY));
        assert!(!verify(&secret, &header, SPEC_MSG_ID, SPEC_TIMESTAMP + 1, SPEC_BODY));
        assert!(!verify(&Secret::generate(), &header, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY));
    }

    #[test]
    fn verify_skips_malformed_and_other_version_entries() {
        let secret = spec_secret();
        let tag = SPEC_SIGNATURE.strip_prefix("v1,").unwrap();
        let cases = [
            ("", false),
            ("v1,", false),
            ("v1,not*base64", false),
            (tag, false),
            (&format!("v2,{tag}"), false),
            (&format!("v1a,{tag}"), false),
            (&format!("garbage v1,AAAA {SPEC_SIGNATURE}"), true),
            (&format!("  {SPEC_SIGNATURE}  "), true),
        ];
        for (header, expected) in cases {
            assert_eq!(
                verify(&secret, header, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY),
                expected,
                "{header:?}"
            );
        }
    }

    #[test]
    fn secret_round_trips_through_its_text_form() {
        let secret = spec_secret();
        assert_eq!(secret.to_string(), SPEC_SECRET);
        let generated = Secret::generate();
        let text = generated.to_string();
        assert!(text.starts_with(SECRET_PREFIX));
        assert_eq!(Secret::parse(&text).unwrap(), generated);
        assert_eq!(text.parse::<Secret>().unwrap(), generated);
        assert_ne!(Secret::generate(), generated);
    }

    #[test]
    fn parse_errors_are_clear() {
        let short = format!("whsec_{}", BASE64.encode([7u8; 15]));
        let long = format!("whsec_{}", BASE64.encode([7u8; 65]));
        let cases = [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", SecretError::MissingPrefix),
            ("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", SecretError::MissingPrefix),
            ("whsec_MfKQ9r8G*YqrTwjUPD8ILPZIo2LaLaSw", SecretError::InvalidBase64),
            ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", SecretError::InvalidBase64),
            ("whsec_", SecretError::TooShort { len: 0 }),
            (&short, SecretError::TooShort { len: 15 }),
            (&long, SecretError::TooLong { len: 65 }),
        ];
        for (text, expected) in cases {
            assert_eq!(Secret::parse(text), Err(expected.clone()), "{text:?}");
        }
        assert_eq!(SecretError::MissingPrefix.to_string(), "webhook secret must start with \"whsec_\"");
        assert_eq!(
            SecretError::TooShort { len: 15 }.to_string(),
            "webhook secret key is 15 bytes, shorter than the minimum of 16"
        );
        assert_eq!(
            SecretError::TooLong { len: 65 }.to_string(),
            "webhook secret key is 65 bytes, longer than the maximum of 64"
        );
        // the bounds themselves are accepted
        assert!(Secret::from_bytes(vec![1; MIN_KEY_BYTES]).is_ok());
        assert!(Secret::from_bytes(vec![1; MAX_KEY_BYTES]).is_ok());
    }

    #[test]
    fn debug_hides_the_key() {
        let secret = spec_secret();
        let debug = format!("{secret:?} {:?}", Some(&secret));
        assert_eq!(debug, "Secret(..) Some(Secret(..))");
        assert!(!debug.contains("MfKQ9r8G"));
    }

    #[test]
    fn headers_name_the_three_standard_headers() {
        let secret = spec_secret();
        let headers = headers(&[&secret], SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert_eq!(
            headers,
            [
                ("webhook-id", SPEC_MSG_ID.to_owned()),
                ("webhook-timestamp", "1614265330".to_owned()),
                ("webhook-signature", SPEC_SIGNATURE.to_owned()),
            ]
        );
    }
}
