//! API keys and who may do what: the key format (`lw_<id>_<secret>`), SHA-256 hashing (the secret
//! is never stored), the principal a request acts as, and the one permission matrix of roles ×
//! actions together with the row visibility that every scoped query in `db` applies.

use rand::RngCore;
use sha2::{Digest, Sha256};

use chrono::{DateTime, Utc};

use crate::db::Db;
use crate::domain::{ApiKey, Role, Visibility};
use crate::error::{Error, ErrorKind};

/// The actor recorded for requests without a key where anonymous local access is allowed.
pub const ANONYMOUS_ACTOR: &str = "anonymous-local";

/// Something a caller asks to do; `authorize` decides it for every role in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Agents, their health and live introspection.
    ReadFleet,
    /// Sites, captures, images and aggregates (scoped by `Visibility`).
    ReadCaptures,
    /// Violation records (scoped by `Visibility`).
    ReadViolations,
    ReviewViolation,
    /// Edit and roll back a site's agent config (and read its versions and rollout).
    ConfigureSites,
    /// Commands to agents over their sessions (restart a component).
    OperateAgents,
    /// Agencies, site jurisdictions, lane policies and API keys.
    Administer,
    ReadAudit,
    /// The job queue: read jobs and queues, retry, cancel and delete jobs, pause and resize
    /// queues.
    OperateJobs,
    /// Records of captures deleted by legal retention (scoped by `Visibility`).
    ReadDeletions,
}

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The API key id; `None` for anonymous local access.
    pub key_id: Option<String>,
    pub role: Role,
    pub agency_id: Option<String>,
    /// The agency's jurisdiction, for agency keys.
    pub jurisdiction: Option<String>,
    pub all_captures: bool,
}

impl Principal {
    /// The local demo and console without a key: an operator.
    pub fn anonymous_local() -> Self {
        Self { key_id: None, role: Role::Operator, agency_id: None, jurisdiction: None, all_captures: false }
    }

    /// The audit-log actor: the key id, or `anonymous-local`.
    pub fn actor(&self) -> String {
        self.key_id.clone().unwrap_or_else(|| ANONYMOUS_ACTOR.to_owned())
    }

    /// The rows this principal may read.
    pub fn visibility(&self) -> Visibility {
        match self.role {
            Role::Admin | Role::Operator => Visibility::All,
            // an agency whose jurisdiction is unknown matches no site: an empty string never
            // equals a stored jurisdiction because setting one rejects empty text
            Role::Agency => Visibility::Jurisdiction {
                jurisdiction: self.jurisdiction.clone().unwrap_or_default(),
                all_captures: self.all_captures,
            },
        }
    }

    /// The permission matrix; a denial names the role and the action.
    pub fn authorize(&self, action: Action) -> Result<(), Error> {
        let allowed = match self.role {
            Role::Admin => true,
            Role::Operator => !matches!(action, Action::Administer | Action::ReadAudit),
            Role::Agency => {
                matches!(action, Action::ReadCaptures | Action::ReadViolations | Action::ReadDeletions)
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("permission denied: role {} may not {}", self.role.as_str(), action.describe()),
            ))
        }
    }
}

impl Action {
    fn describe(self) -> &'static str {
        match self {
            Self::ReadFleet => "read the fleet",
            Self::ReadCaptures => "read captures",
            Self::ReadViolations => "read violations",
            Self::ReviewViolation => "review violations",
            Self::ConfigureSites => "configure sites",
            Self::OperateAgents => "send commands to agents",
            Self::Administer => "administer keys, agencies and sites",
            Self::ReadAudit => "read the audit log",
            Self::OperateJobs => "operate the job queue",
            Self::ReadDeletions => "read deletion records",
        }
    }
}

/// A freshly generated key: the id and secret to hand out once, and the hash to store.
#[derive(Debug)]
pub struct NewKey {
    pub id: String,
    /// The full bearer token `lw_<id>_<secret>`; shown once, never stored.
    pub token: String,
    pub secret_sha256: String,
}

pub fn generate_key() -> NewKey {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = hex::encode(secret);
    NewKey { token: format!("lw_{id}_{secret}"), secret_sha256: hash_secret(&secret), id }
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits a bearer token into key id and secret.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix("lw_")?.split_once('_')?;
    let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    (hex(id) && hex(secret)).then_some((id, secret))
}

/// Whether `secret` belongs to `key` and the key is live; compares digests in constant time.
pub fn verify(key: &ApiKey, secret: &str) -> bool {
    let presented = hash_secret(secret);
    let same = presented.len() == key.secret_sha256.len()
        && presented.bytes().zip(key.secret_sha256.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    same && key.revoked_at.is_none()
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn storage(e: crate::db::DbError) -> Error {
    Error::unavailable(format!("database unavailable: {e}"))
}

/// Resolves the `Authorization` header of a request into the principal it acts as.
pub async fn authenticate(
    db: &Db,
    authorization: Option<&str>,
    allow_anonymous: bool,
) -> Result<Principal, Error> {
    let Some(header) = authorization else {
        return if allow_anonymous {
            Ok(Principal::anonymous_local())
        } else {
            Err(Error::unauthenticated("missing api key: send `Authorization: Bearer <key>`"))
        };
    };
    let invalid = || Error::unauthenticated("invalid or revoked api key");
    let token = bearer(header)
        .ok_or_else(|| Error::unauthenticated("authorization header must be `Bearer <key>`"))?;
    let (id, secret) = parse_token(token).ok_or_else(invalid)?;
    let key = db.api_key(id).await.map_err(storage)?.ok_or_else(invalid)?;
    if !verify(&key, secret) {
        return Err(invalid());
    }
    principal_of_key(db, key).await
}

/// The principal of a key that was verified before (a console session's key): refused once the
/// key is revoked.
pub async fn principal_of_key_id(db: &Db, key_id: &str) -> Result<Principal, Error> {
    let invalid = || Error::unauthenticated("the session's api key is revoked or gone: log in again");
    let key = db.api_key(key_id).await.map_err(storage)?.ok_or_else(invalid)?;
    if key.revoked_at.is_some() {
        return Err(invalid());
    }
    principal_of_key(db, key).await
}

async fn principal_of_key(db: &Db, key: ApiKey) -> Result<Principal, Error> {
    let invalid = || Error::unauthenticated("invalid or revoked api key");
    let jurisdiction = match (&key.role, &key.agency_id) {
        (Role::Agency, Some(agency_id)) => {
            Some(db.agency(agency_id).await.map_err(storage)?.ok_or_else(invalid)?.jurisdiction)
        }
        (Role::Agency, None) => return Err(invalid()),
        _ => None,
    };
    Ok(Principal {
        key_id: Some(key.id),
        role: key.role,
        agency_id: key.agency_id,
        jurisdiction,
        all_captures: key.all_captures,
    })
}

/// What an admin asks for when creating a key.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub name: String,
    pub role: Role,
    pub agency_id: Option<String>,
    pub all_captures: bool,
}

/// Validates a key request, stores the hashed key and returns it with its token (shown once).
pub async fn issue_key(db: &Db, req: KeyRequest, now: DateTime<Utc>) -> Result<(ApiKey, String), Error> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(Error::invalid("api key name must be 1 to 200 characters"));
    }
    match (req.role, &req.agency_id) {
        (Role::Agency, None) => return Err(Error::invalid("an agency key needs an agency id")),
        (Role::Agency, Some(id)) => {
            if db.agency(id).await.map_err(storage)?.is_none() {
                return Err(Error::not_found(format!("no agency with id {id:?}")));
            }
        }
        (role, Some(_)) => {
            return Err(Error::invalid(format!(
                "only agency keys name an agency, not {} keys",
                role.as_str()
            )));
        }
        (_, None) => {}
    }
    if req.all_captures && req.role != Role::Agency {
        return Err(Error::invalid("the all_captures grant applies to agency keys only"));
    }
    let fresh = generate_key();
    let key = ApiKey {
        id: fresh.id,
        name: name.to_owned(),
        role: req.role,
        agency_id: req.agency_id,
        all_captures: req.all_captures,
        secret_sha256: fresh.secret_sha256,
        created_at: now,
        revoked_at: None,
    };
    db.insert_api_key(&key).await.map_err(storage)?;
    Ok((key, fresh.token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_only_the_hash_verifies() {
        let k = generate_key();
        let (id, secret) = parse_token(&k.token).unwrap();
        assert_eq!(id, k.id);
        assert!(!k.secret_sha256.contains(secret));
        let key = ApiKey {
            id: k.id.clone(),
            name: "n".into(),
            role: Role::Admin,
            agency_id: None,
            all_captures: false,
            secret_sha256: k.secret_sha256.clone(),
            created_at: chrono::Utc::now(),
            revoked_at: None,
        };
        assert!(verify(&key, secret));
        assert!(!verify(&key, "00"));
        assert!(!verify(&ApiKey { revoked_at: Some(chrono::Utc::now()), ..key }, secret));
        assert_eq!(parse_token("lw_zz_00"), None);
        assert_eq!(parse_token("bearer"), None);
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }

    #[test]
    fn permission_matrix() {
        use Action::*;
        let admin = Principal { role: Role::Admin, ..Principal::anonymous_local() };
        let operator = Principal::anonymous_local();
        let agency =
            Principal { role: Role::Agency, jurisdiction: Some("ca".into()), ..Principal::anonymous_local() };
        let all = [
            ReadFleet,
            ReadCaptures,
            ReadViolations,
            ReviewViolation,
            ConfigureSites,
            OperateAgents,
            Administer,
            ReadAudit,
            OperateJobs,
            ReadDeletions,
        ];
        let allowed = |p: &Principal| all.iter().filter(|a| p.authorize(**a).is_ok()).count();
        assert_eq!(allowed(&admin), 10);
        assert_eq!(allowed(&operator), 8);
        assert!(agency.authorize(OperateJobs).unwrap_err().message.contains("operate the job queue"));
        assert!(operator.authorize(OperateAgents).is_ok());
        assert!(agency.authorize(OperateAgents).unwrap_err().message.contains("send commands to agents"));
        assert_eq!(allowed(&agency), 3);
        assert!(operator.authorize(ConfigureSites).is_ok());
        assert!(agency.authorize(ConfigureSites).unwrap_err().message.contains("configure sites"));
        assert!(agency.authorize(ReadFleet).unwrap_err().message.contains("role agency"));
        assert_eq!(
            agency.visibility(),
            Visibility::Jurisdiction { jurisdiction: "ca".into(), all_captures: false }
        );
    }
}
