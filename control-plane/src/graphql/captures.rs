//! Captures and what was made of them: the `captures`, `violations`, `captureCounts`,
//! `occupancyStats` and `deletionReceipts` queries, the `reviewViolation` mutation, and the
//! GraphQL objects they answer with (captures, violations and their evidence packages, hourly
//! statistics, deletion receipts), converted by hand from domain types.

use async_graphql::connection::Connection;
use async_graphql::{ComplexObject, Context, Enum, ErrorExtensions, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    PageCursor, audited, connection, cursor, guard, page_size, parse_uuid, parts, storage, storage_error,
};
use crate::auth::Action;
use crate::db::Reviewed;
use crate::domain::{self, CaptureCursor};
use crate::error::{Error, ErrorKind};

#[derive(Default)]
pub struct CapturesQuery;

#[Object]
impl CapturesQuery {
    /// Captures the caller may see, newest first by capture time; `from` is inclusive, `to`
    /// exclusive. An agency key without the all-captures grant sees only flagged captures.
    #[allow(clippy::too_many_arguments)]
    async fn captures(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        site: Option<String>,
        lane: Option<u32>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        decision: Option<Decision>,
        min_occupants: Option<u32>,
        max_occupants: Option<u32>,
        vehicle_class: Option<VehicleClass>,
    ) -> async_graphql::Result<Connection<PageCursor, Capture>> {
        let (api, who) = guard(ctx, Action::ReadCaptures)?;
        let limit = page_size(first)?;
        let after = cursor(after)?;
        let filter = domain::CaptureFilter {
            site_id: site,
            lane,
            from,
            to,
            decision: decision.map(Decision::to_domain),
            min_occupants,
            max_occupants,
            vehicle_class: vehicle_class.map(VehicleClass::to_domain),
        };
        let rows = api
            .db
            .captures_page(&filter, &who.visibility(), after, limit + 1)
            .await
            .map_err(storage_error)?;
        Ok(connection(rows, limit, after.is_some(), CaptureCursor::of, Capture::from_domain))
    }

    async fn capture(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Capture>> {
        let (api, who) = guard(ctx, Action::ReadCaptures)?;
        let id = parse_uuid("capture id", &id).map_err(|e| e.extend())?;
        let found = api.db.capture(id, &who.visibility()).await.map_err(storage_error)?;
        Ok(found.map(Capture::from_domain))
    }

    /// Violation records the caller may see, newest capture first.
    async fn violations(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        state: Option<ViolationState>,
        site: Option<String>,
    ) -> async_graphql::Result<Connection<PageCursor, Violation>> {
        let (api, who) = guard(ctx, Action::ReadViolations)?;
        let limit = page_size(first)?;
        let after = cursor(after)?;
        let rows = api
            .db
            .violations_page(
                state.map(ViolationState::to_domain),
                site.as_deref(),
                &who.visibility(),
                after,
                limit + 1,
            )
            .await
            .map_err(storage_error)?;
        Ok(connection(
            rows,
            limit,
            after.is_some(),
            |v| CaptureCursor { captured_at: v.captured_at, id: v.id },
            Violation,
        ))
    }

    async fn violation(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Violation>> {
        let (api, who) = guard(ctx, Action::ReadViolations)?;
        let id = parse_uuid("violation id", &id).map_err(|e| e.extend())?;
        Ok(api.db.violation(id, &who.visibility()).await.map_err(storage_error)?.map(Violation))
    }

    /// Captures the caller may see in `[from, to)`, per decision: exact counts over the same
    /// filters as `captures`.
    async fn capture_counts(
        &self,
        ctx: &Context<'_>,
        site: Option<String>,
        lane: Option<u32>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<CaptureCounts> {
        let (api, who) = guard(ctx, Action::ReadCaptures)?;
        let filter = domain::CaptureFilter { site_id: site, lane, from, to, ..Default::default() };
        let counts = api.db.capture_counts(&filter, &who.visibility()).await.map_err(storage_error)?;
        let by_decision: Vec<DecisionCount> = [
            Decision::Compliant,
            Decision::ViolationCandidate,
            Decision::Unreadable,
            Decision::Unknown,
            Decision::Test,
        ]
        .into_iter()
        .map(|decision| DecisionCount {
            decision,
            count: counts.iter().filter(|(d, _)| *d == decision.to_domain()).map(|(_, n)| *n).sum(),
        })
        .collect();
        Ok(CaptureCounts { total: by_decision.iter().map(|d| d.count).sum(), by_decision })
    }

    /// Vehicles per site per hour in `[from, to)`: occupancy distribution and violation rate,
    /// over the captures the caller may see.
    async fn occupancy_stats(
        &self,
        ctx: &Context<'_>,
        site: Option<String>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> async_graphql::Result<Vec<HourlyStats>> {
        let (api, who) = guard(ctx, Action::ReadCaptures)?;
        if to <= from || to - from > chrono::Duration::days(93) {
            return Err(Error::invalid("occupancyStats needs from < to, at most 93 days apart").extend());
        }
        let rows = api
            .db
            .occupancy_stats(site.as_deref(), from, to, &who.visibility())
            .await
            .map_err(storage_error)?;
        Ok(rows.into_iter().map(HourlyStats::from).collect())
    }
}

#[derive(Default)]
pub struct DeletionReceiptsQuery;

#[Object]
impl DeletionReceiptsQuery {
    /// Proofs that agents deleted captures without uploading them (evicted when their buffer
    /// was full, expired, damaged), newest deletion first. Admins and operators see all; an
    /// agency sees those of its jurisdiction's sites.
    async fn deletion_receipts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        site: Option<String>,
    ) -> async_graphql::Result<Connection<PageCursor, DeletionReceipt>> {
        let (api, who) = guard(ctx, Action::ReadCaptures)?;
        let limit = page_size(first)?;
        let after = cursor(after)?;
        let rows = api
            .db
            .receipts_page(site.as_deref(), &who.visibility(), after, limit + 1)
            .await
            .map_err(storage_error)?;
        Ok(connection(
            rows,
            limit,
            after.is_some(),
            |r| CaptureCursor { captured_at: r.deleted_at, id: r.receipt_id },
            DeletionReceipt::from,
        ))
    }
}

#[derive(Default)]
pub struct CapturesMutation;

#[Object]
impl CapturesMutation {
    /// Confirms or rejects a pending violation (operators and admins); a reason is required to reject.
    async fn review_violation(
        &self,
        ctx: &Context<'_>,
        id: ID,
        decision: ReviewDecision,
        reason: Option<String>,
    ) -> async_graphql::Result<Violation> {
        let (api, who) = parts(ctx)?;
        let result = async {
            who.authorize(Action::ReviewViolation)?;
            let id = parse_uuid("violation id", &id)?;
            let reason = reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
            let decision = match decision {
                ReviewDecision::Confirm => domain::ReviewDecision::Confirm,
                ReviewDecision::Reject => domain::ReviewDecision::Reject,
            };
            if decision == domain::ReviewDecision::Reject && reason.is_none() {
                return Err(Error::invalid("a reason is required to reject a violation"));
            }
            let reviewed = api
                .db
                .review_violation(id, decision, &who.actor(), reason, &who.visibility(), Utc::now())
                .await
                .map_err(storage)?;
            match reviewed {
                Reviewed::Done(v) => Ok(Violation(v)),
                Reviewed::NotFound => Err(Error::not_found(format!("no violation with id {id}"))),
                Reviewed::AlreadyReviewed(state) => Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("violation {id} was already reviewed: {}", state.as_str()),
                )),
            }
        }
        .await;
        audited(api, who, "reviewViolation", &format!("violation/{}", id.as_str()), result).await
    }
}

/// Why an agent deleted a capture without uploading it.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum DeletionReason {
    EvictedFull,
    Expired,
    Damaged,
    Unknown,
}

/// How much a capture was worth keeping, as its agent classed it.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ValueClass {
    Statistics,
    Compliant,
    ViolationCandidate,
    Unknown,
}

/// An agent's proof that it deleted a capture the control plane never received.
#[derive(SimpleObject)]
pub struct DeletionReceipt {
    receipt_id: ID,
    /// Null when the agent could not read the damaged record's id.
    capture_id: Option<ID>,
    agent_id: String,
    site: String,
    value_class: ValueClass,
    /// Null when unknown (a damaged record).
    captured_at: Option<DateTime<Utc>>,
    deleted_at: DateTime<Utc>,
    reason: DeletionReason,
    /// Bytes the capture occupied in the agent's buffer.
    bytes: u64,
}

impl From<domain::DeletionReceipt> for DeletionReceipt {
    fn from(r: domain::DeletionReceipt) -> Self {
        Self {
            receipt_id: ID(r.receipt_id.to_string()),
            capture_id: r.capture_id.map(|id| ID(id.to_string())),
            agent_id: r.agent_id,
            site: r.site_id,
            value_class: match r.value_class {
                domain::ValueClass::Statistics => ValueClass::Statistics,
                domain::ValueClass::Compliant => ValueClass::Compliant,
                domain::ValueClass::ViolationCandidate => ValueClass::ViolationCandidate,
                domain::ValueClass::Unknown => ValueClass::Unknown,
            },
            captured_at: r.captured_at,
            deleted_at: r.deleted_at,
            reason: match r.reason {
                domain::DeletionReason::EvictedFull => DeletionReason::EvictedFull,
                domain::DeletionReason::Expired => DeletionReason::Expired,
                domain::DeletionReason::Damaged => DeletionReason::Damaged,
                domain::DeletionReason::Unknown => DeletionReason::Unknown,
            },
            bytes: r.bytes,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum VehicleClass {
    Motorcycle,
    Car,
    Van,
    Truck,
    Bus,
    Unknown,
}

impl VehicleClass {
    fn from_domain(v: domain::VehicleClass) -> Self {
        match v {
            domain::VehicleClass::Motorcycle => Self::Motorcycle,
            domain::VehicleClass::Car => Self::Car,
            domain::VehicleClass::Van => Self::Van,
            domain::VehicleClass::Truck => Self::Truck,
            domain::VehicleClass::Bus => Self::Bus,
            domain::VehicleClass::Unknown => Self::Unknown,
        }
    }

    fn to_domain(self) -> domain::VehicleClass {
        match self {
            Self::Motorcycle => domain::VehicleClass::Motorcycle,
            Self::Car => domain::VehicleClass::Car,
            Self::Van => domain::VehicleClass::Van,
            Self::Truck => domain::VehicleClass::Truck,
            Self::Bus => domain::VehicleClass::Bus,
            Self::Unknown => domain::VehicleClass::Unknown,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum OccupancyStatus {
    Unknown,
    Counted,
    Unreadable,
}

/// What the lane's HOV policy made of a capture at ingest.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Decision {
    Compliant,
    ViolationCandidate,
    Unreadable,
    Unknown,
    /// An operator's test capture (`triggerTestCapture`): no vehicle, never judged, never in
    /// statistics, never shown to agencies.
    Test,
}

impl Decision {
    fn from_domain(d: domain::Decision) -> Self {
        match d {
            domain::Decision::Compliant => Self::Compliant,
            domain::Decision::ViolationCandidate => Self::ViolationCandidate,
            domain::Decision::Unreadable => Self::Unreadable,
            domain::Decision::Unknown => Self::Unknown,
            domain::Decision::Test => Self::Test,
        }
    }

    fn to_domain(self) -> domain::Decision {
        match self {
            Self::Compliant => domain::Decision::Compliant,
            Self::ViolationCandidate => domain::Decision::ViolationCandidate,
            Self::Unreadable => domain::Decision::Unreadable,
            Self::Unknown => domain::Decision::Unknown,
            Self::Test => domain::Decision::Test,
        }
    }
}

/// Captures per decision.
#[derive(SimpleObject)]
pub struct CaptureCounts {
    pub total: u64,
    /// Every decision, in a fixed order, zeros included.
    pub by_decision: Vec<DecisionCount>,
}

#[derive(SimpleObject)]
pub struct DecisionCount {
    pub decision: Decision,
    pub count: u64,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ViolationState {
    Pending,
    Confirmed,
    Rejected,
}

impl ViolationState {
    fn from_domain(s: domain::ViolationState) -> Self {
        match s {
            domain::ViolationState::Pending => Self::Pending,
            domain::ViolationState::Confirmed => Self::Confirmed,
            domain::ViolationState::Rejected => Self::Rejected,
        }
    }

    fn to_domain(self) -> domain::ViolationState {
        match self {
            Self::Pending => domain::ViolationState::Pending,
            Self::Confirmed => domain::ViolationState::Confirmed,
            Self::Rejected => domain::ViolationState::Rejected,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ReviewDecision {
    Confirm,
    Reject,
}

#[derive(SimpleObject)]
pub struct OccupancyDistribution {
    zero: u64,
    one: u64,
    two: u64,
    three_plus: u64,
    /// Not counted by vision (unknown or unreadable).
    unknown: u64,
}

#[derive(SimpleObject)]
pub struct HourlyStats {
    site: String,
    /// Start of the hour (UTC).
    hour: DateTime<Utc>,
    vehicles: u64,
    occupancy: OccupancyDistribution,
    /// Captures with a violation record that was not rejected.
    violations: u64,
    /// `violations / vehicles`.
    violation_rate: f64,
}

impl From<domain::HourlyStats> for HourlyStats {
    fn from(s: domain::HourlyStats) -> Self {
        let violation_rate = if s.vehicles == 0 { 0.0 } else { s.violations as f64 / s.vehicles as f64 };
        Self {
            site: s.site_id,
            hour: s.hour,
            vehicles: s.vehicles,
            occupancy: OccupancyDistribution {
                zero: s.occupants_0,
                one: s.occupants_1,
                two: s.occupants_2,
                three_plus: s.occupants_3_plus,
                unknown: s.unknown,
            },
            violations: s.violations,
            violation_rate,
        }
    }
}

#[derive(SimpleObject)]
pub struct Occupancy {
    status: OccupancyStatus,
    /// Present only when the status is COUNTED.
    occupants: Option<u32>,
}

#[derive(SimpleObject)]
pub struct SectionCount {
    section: String,
    occupants: u32,
    confidence: f64,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Capture {
    id: ID,
    agent_id: String,
    site: String,
    lane: u32,
    captured_at: DateTime<Utc>,
    detected_at: Option<DateTime<Utc>>,
    vehicle_class: VehicleClass,
    occupancy: Occupancy,
    /// Occupants per seat section, as vision reported them.
    sections: Vec<SectionCount>,
    decision: Decision,
    /// The lowest section confidence, when vision reported sections.
    confidence: Option<f64>,
    model_version: Option<String>,
    speed_kmh: Option<f64>,
    height_m: f64,
    width_m: f64,
    camera_id: String,
    config_version: u64,
    image_sha256: String,
    image_bytes: u64,
    #[graphql(skip)]
    capture_id: Uuid,
    #[graphql(skip)]
    image_key: String,
}

#[ComplexObject]
impl Capture {
    /// Absolute, time-limited URL of the image (`blob.presign_ttl_secs`): a presigned S3 URL, or
    /// a signed `/images/{id}` link that needs no API key until it expires.
    async fn image_url(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        let (api, _) = guard(ctx, Action::ReadCaptures)?;
        api.links.url(self.capture_id, &self.image_key, Utc::now()).await.map_err(|e| e.extend())
    }

    /// Absolute, time-limited URL of a small copy of the image (`width` pixels wide, 64 to 1024,
    /// the aspect kept), made by this control plane from the stored image: for lists and
    /// previews. A signed `/images/{id}?…&width=` link, whatever the blob store.
    async fn thumbnail_url(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 320)] width: u32,
    ) -> async_graphql::Result<String> {
        let (api, _) = guard(ctx, Action::ReadCaptures)?;
        if !crate::links::THUMBNAIL_WIDTHS.contains(&width) {
            return Err(Error::invalid(format!("width must be between 64 and 1024, got {width}")).extend());
        }
        Ok(format!("{}&width={width}", api.links.signed_url(self.capture_id, Utc::now())))
    }

    /// The violation record of this capture, when it has one the caller may see.
    async fn violation(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Violation>> {
        let (api, who) = guard(ctx, Action::ReadViolations)?;
        let found =
            api.db.violation_of_capture(self.capture_id, &who.visibility()).await.map_err(storage_error)?;
        Ok(found.map(Violation))
    }
}

/// Widens through the shortest decimal form so that 12.3f32 reads 12.3.
fn widen(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

impl Capture {
    pub(super) fn from_domain(c: domain::Capture) -> Self {
        let m = c.meta;
        let status = match m.occupancy_status {
            domain::OccupancyStatus::Unknown => OccupancyStatus::Unknown,
            domain::OccupancyStatus::Counted => OccupancyStatus::Counted,
            domain::OccupancyStatus::Unreadable => OccupancyStatus::Unreadable,
        };
        Self {
            id: ID(m.id.to_string()),
            capture_id: m.id,
            agent_id: c.agent_id,
            site: m.site_id,
            lane: m.lane,
            captured_at: m.captured_at,
            detected_at: m.detected_at,
            vehicle_class: VehicleClass::from_domain(m.vehicle_class),
            occupancy: Occupancy { status, occupants: m.occupants },
            sections: m
                .sections
                .into_iter()
                .map(|s| SectionCount {
                    section: s.section,
                    occupants: s.occupants,
                    confidence: widen(s.confidence),
                })
                .collect(),
            decision: Decision::from_domain(c.decision),
            confidence: m.confidence.map(widen),
            model_version: m.model_version,
            speed_kmh: m.speed_kmh.map(widen),
            height_m: widen(m.height_m),
            width_m: widen(m.width_m),
            camera_id: m.camera_id,
            config_version: m.config_version,
            image_key: c.image_key,
            image_sha256: hex::encode(c.image_sha256),
            image_bytes: c.image_bytes,
        }
    }
}

/// A capture the HOV policy flagged, and its review.
pub struct Violation(domain::Violation);

#[Object]
impl Violation {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn site(&self) -> &str {
        &self.0.site_id
    }
    async fn captured_at(&self) -> DateTime<Utc> {
        self.0.captured_at
    }
    async fn state(&self) -> ViolationState {
        ViolationState::from_domain(self.0.state)
    }
    /// The API key id of the reviewer.
    async fn reviewer(&self) -> Option<&str> {
        self.0.reviewer.as_deref()
    }
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    async fn reviewed_at(&self) -> Option<DateTime<Utc>> {
        self.0.reviewed_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The flagged capture.
    async fn capture(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Capture>> {
        let (api, who) = guard(ctx, Action::ReadCaptures)?;
        let found = api.db.capture(self.0.capture_id, &who.visibility()).await.map_err(storage_error)?;
        Ok(found.map(Capture::from_domain))
    }
    /// Everything needed to prosecute, once confirmed; null while pending or when rejected.
    /// Image hashes are recomputed from the stored bytes and must equal those verified at ingest.
    async fn evidence_package(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<EvidencePackage>> {
        let (api, who) = guard(ctx, Action::ReadViolations)?;
        if self.0.state != domain::ViolationState::Confirmed {
            return Ok(None);
        }
        let Some(c) = api.db.capture(self.0.capture_id, &who.visibility()).await.map_err(storage_error)?
        else {
            return Ok(None);
        };
        let bytes = api.blobs.get(&c.image_key).await.map_err(|e| {
            Error::unavailable(format!("image of capture {} is unavailable: {e}", c.meta.id)).extend()
        })?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if digest != c.image_sha256 {
            tracing::error!(capture_id = %c.meta.id, "stored image does not match its ingest sha256");
            return Err(Error::new(
                ErrorKind::Internal,
                format!("image of capture {} failed its integrity check", c.meta.id),
            )
            .extend());
        }
        let image = EvidenceImage {
            camera_id: c.meta.camera_id.clone(),
            url: api.links.url(c.meta.id, &c.image_key, Utc::now()).await.map_err(|e| e.extend())?,
            sha256: hex::encode(digest),
            bytes: bytes.len() as u64,
            content_type: c.image_content_type.mime().to_owned(),
        };
        Ok(Some(EvidencePackage {
            violation_id: ID(self.0.id.to_string()),
            state: ViolationState::from_domain(self.0.state),
            reviewer: self.0.reviewer.clone(),
            reviewed_at: self.0.reviewed_at,
            model_version: c.meta.model_version.clone(),
            config_version: c.meta.config_version,
            decision: Decision::from_domain(c.decision),
            images: vec![image],
            generated_at: Utc::now(),
            capture: Capture::from_domain(c),
        }))
    }
}

#[derive(SimpleObject)]
pub struct EvidenceImage {
    camera_id: String,
    url: String,
    /// SHA-256 of the image bytes as stored, hex.
    sha256: String,
    bytes: u64,
    content_type: String,
}

/// The evidence of a confirmed violation: capture metadata, the decision and the versions that
/// produced it, and each image with its content hash.
#[derive(SimpleObject)]
pub struct EvidencePackage {
    violation_id: ID,
    state: ViolationState,
    reviewer: Option<String>,
    reviewed_at: Option<DateTime<Utc>>,
    capture: Capture,
    decision: Decision,
    model_version: Option<String>,
    config_version: u64,
    images: Vec<EvidenceImage>,
    generated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_keeps_short_decimals() {
        assert_eq!(widen(12.3), 12.3);
        assert_eq!(widen(88.5), 88.5);
    }
}
