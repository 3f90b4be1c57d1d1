//! The GraphQL API (async-graphql): schema, GraphQL object types converted by hand from domain
//! types, Relay pagination of captures, and live agent introspection.

use async_graphql::connection::{Connection, CursorType, Edge};
use async_graphql::{
    Context, EmptyMutation, EmptySubscription, Enum, ErrorExtensions, ID, Object, Schema, SchemaBuilder,
    SimpleObject,
};
use chrono::{DateTime, Utc};

use crate::db::Db;
use crate::domain::{self, CaptureCursor};
use crate::error::Error;
use crate::gateway::Gateway;

pub type LanewatchSchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// What resolvers need, put into the schema's data.
#[derive(Clone)]
pub struct ApiContext {
    pub db: Db,
    pub gateway: Gateway,
    /// Absolute base URL for image links, without a trailing slash.
    pub public_url: String,
}

pub const MAX_DEPTH: usize = 10;
pub const MAX_COMPLEXITY: usize = 1000;
pub const MAX_PAGE: i32 = 100;

/// The schema without runtime data (enough for the SDL).
pub fn builder() -> SchemaBuilder<Query, EmptyMutation, EmptySubscription> {
    Schema::build(Query, EmptyMutation, EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
}

pub fn schema(ctx: ApiContext) -> LanewatchSchema {
    builder().data(ctx).finish()
}

pub struct Query;

fn storage_error(e: crate::db::DbError) -> async_graphql::Error {
    Error::unavailable(format!("database unavailable: {e}")).extend()
}

#[Object]
impl Query {
    /// Every agent that ever connected, by id.
    async fn agents(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Agent>> {
        let api = ctx.data::<ApiContext>()?;
        Ok(api
            .db
            .agents()
            .await
            .map_err(storage_error)?
            .into_iter()
            .map(|a| Agent::from_domain(a, &api.gateway))
            .collect())
    }

    async fn agent(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Agent>> {
        let api = ctx.data::<ApiContext>()?;
        Ok(api.db.agent(&id).await.map_err(storage_error)?.map(|a| Agent::from_domain(a, &api.gateway)))
    }

    /// Captures, newest first by capture time.
    async fn captures(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<PageCursor, Capture>> {
        let api = ctx.data::<ApiContext>()?;
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(
                Error::invalid(format!("first must be between 1 and {MAX_PAGE}, got {first}")).extend()
            );
        }
        let after = match after {
            None => None,
            Some(text) => Some(PageCursor::decode_cursor(&text).map_err(|_| {
                Error::invalid(format!("after {text:?} is not a cursor from this api")).extend()
            })?),
        };
        let limit = u64::try_from(first).unwrap_or(20);
        let mut rows = api.db.captures_page(after.map(|c| c.0), limit + 1).await.map_err(storage_error)?;
        let has_next = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let mut connection = Connection::new(after.is_some(), has_next);
        connection.edges.extend(
            rows.into_iter().map(|c| {
                Edge::new(PageCursor(CaptureCursor::of(&c)), Capture::from_domain(c, &api.public_url))
            }),
        );
        Ok(connection)
    }
}

/// The opaque Relay cursor of a capture.
#[derive(Debug, Clone, Copy)]
pub struct PageCursor(pub CaptureCursor);

impl CursorType for PageCursor {
    type Error = String;

    fn decode_cursor(s: &str) -> Result<Self, Self::Error> {
        CaptureCursor::decode(s).map(PageCursor).ok_or_else(|| "invalid cursor".to_owned())
    }

    fn encode_cursor(&self) -> String {
        self.0.encode()
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Health {
    Unknown,
    Ok,
    Degraded,
    Failing,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ComponentStatus {
    Unknown,
    Starting,
    Running,
    BackingOff,
    Stopped,
    Failed,
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

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum OccupancyStatus {
    Unknown,
    Counted,
    Unreadable,
}

pub struct Agent {
    agent: domain::Agent,
    online: bool,
}

impl Agent {
    fn from_domain(agent: domain::Agent, gateway: &Gateway) -> Self {
        // the row says online until the session's end is recorded; the registry is the truth
        let online = agent.online && gateway.is_online(&agent.id);
        Self { agent, online }
    }
}

#[Object]
impl Agent {
    async fn id(&self) -> ID {
        ID(self.agent.id.clone())
    }
    async fn site(&self) -> &str {
        &self.agent.site_id
    }
    async fn online(&self) -> bool {
        self.online
    }
    async fn last_seen(&self) -> DateTime<Utc> {
        self.agent.last_seen
    }
    /// Software version the agent reported.
    async fn version(&self) -> &str {
        &self.agent.software_version
    }
    async fn config_version(&self) -> u64 {
        self.agent.config_version
    }
    async fn health(&self) -> Health {
        match self.agent.health {
            domain::Health::Unknown => Health::Unknown,
            domain::Health::Ok => Health::Ok,
            domain::Health::Degraded => Health::Degraded,
            domain::Health::Failing => Health::Failing,
        }
    }
    async fn buffered_captures(&self) -> u64 {
        self.agent.buffered_captures
    }
    /// Supervised components, asked live from the agent; an error when it is offline.
    async fn components(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Component>> {
        let api = ctx.data::<ApiContext>()?;
        let states = api.gateway.request_introspection(&self.agent.id).await.map_err(|e| e.extend())?;
        Ok(states.into_iter().map(Component::from_domain).collect())
    }
}

#[derive(SimpleObject)]
pub struct Component {
    name: String,
    status: ComponentStatus,
    restarts: u32,
    last_failure: Option<String>,
    last_failure_at: Option<DateTime<Utc>>,
    backoff_ms: u64,
    processed: u64,
    detail_json: String,
}

impl Component {
    fn from_domain(c: domain::ComponentState) -> Self {
        let status = match c.status {
            domain::ComponentStatus::Unknown => ComponentStatus::Unknown,
            domain::ComponentStatus::Starting => ComponentStatus::Starting,
            domain::ComponentStatus::Running => ComponentStatus::Running,
            domain::ComponentStatus::BackingOff => ComponentStatus::BackingOff,
            domain::ComponentStatus::Stopped => ComponentStatus::Stopped,
            domain::ComponentStatus::Failed => ComponentStatus::Failed,
        };
        Self {
            name: c.name,
            status,
            restarts: c.restarts,
            last_failure: c.last_failure,
            last_failure_at: c.last_failure_at,
            backoff_ms: c.backoff_ms,
            processed: c.processed,
            detail_json: c.detail_json,
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
pub struct Capture {
    id: ID,
    agent_id: String,
    site: String,
    lane: u32,
    captured_at: DateTime<Utc>,
    detected_at: Option<DateTime<Utc>>,
    vehicle_class: VehicleClass,
    occupancy: Occupancy,
    speed_kmh: Option<f64>,
    height_m: f64,
    width_m: f64,
    camera_id: String,
    config_version: u64,
    /// Absolute URL of the image.
    image_url: String,
    image_sha256: String,
    image_bytes: u64,
}

/// Widens through the shortest decimal form so that 12.3f32 reads 12.3.
fn widen(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

impl Capture {
    fn from_domain(c: domain::Capture, public_url: &str) -> Self {
        let m = c.meta;
        let vehicle_class = match m.vehicle_class {
            domain::VehicleClass::Motorcycle => VehicleClass::Motorcycle,
            domain::VehicleClass::Car => VehicleClass::Car,
            domain::VehicleClass::Van => VehicleClass::Van,
            domain::VehicleClass::Truck => VehicleClass::Truck,
            domain::VehicleClass::Bus => VehicleClass::Bus,
            domain::VehicleClass::Unknown => VehicleClass::Unknown,
        };
        let status = match m.occupancy_status {
            domain::OccupancyStatus::Unknown => OccupancyStatus::Unknown,
            domain::OccupancyStatus::Counted => OccupancyStatus::Counted,
            domain::OccupancyStatus::Unreadable => OccupancyStatus::Unreadable,
        };
        Self {
            id: ID(m.id.to_string()),
            agent_id: c.agent_id,
            site: m.site_id,
            lane: m.lane,
            captured_at: m.captured_at,
            detected_at: m.detected_at,
            vehicle_class,
            occupancy: Occupancy { status, occupants: m.occupants },
            speed_kmh: m.speed_kmh.map(widen),
            height_m: widen(m.height_m),
            width_m: widen(m.width_m),
            camera_id: m.camera_id,
            config_version: m.config_version,
            image_url: format!("{public_url}/images/{}", m.id),
            image_sha256: hex::encode(c.image_sha256),
            image_bytes: c.image_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDL_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");

    #[test]
    fn committed_sdl_matches_code() {
        let sdl = builder().finish().sdl();
        if std::env::var_os("LANEWATCH_BLESS").is_some() {
            std::fs::write(SDL_PATH, &sdl).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(SDL_PATH).unwrap_or_default();
        assert!(
            committed == sdl,
            "control-plane/schema.graphql drifted from the code; rerun with LANEWATCH_BLESS=1 and commit it"
        );
    }

    #[tokio::test]
    async fn captures_page_through_opaque_cursors_newest_first() {
        use crate::domain::{CaptureMeta, ImageContentType};
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display())).await.unwrap();
        let blobs =
            crate::blob::BlobStore::open(&crate::config::BlobConfig::Local { dir: dir.path().join("b") })
                .await
                .unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let gateway = Gateway::new(db.clone(), blobs, Default::default(), crate::metrics::Metrics::new(), rx);
        let schema = schema(ApiContext { db: db.clone(), gateway, public_url: "http://cp.test".into() });
        let mut ids = Vec::new();
        for i in 0..5 {
            let meta = CaptureMeta {
                id: uuid::Uuid::now_v7(),
                site_id: "a1".into(),
                lane: 0,
                captured_at: DateTime::from_timestamp(1_700_000_000 + i, 0).unwrap(),
                detected_at: None,
                vehicle_class: domain::VehicleClass::Van,
                occupancy_status: domain::OccupancyStatus::Unreadable,
                occupants: None,
                speed_kmh: Some(12.3),
                height_m: 2.0,
                width_m: 1.9,
                camera_id: "cam0".into(),
                config_version: 1,
            };
            ids.push(meta.id.to_string());
            let capture = domain::Capture {
                image_key: domain::image_key(&meta, ImageContentType::Png),
                meta,
                agent_id: "agent-1".into(),
                image_sha256: [1; 32],
                image_bytes: 3,
                image_content_type: ImageContentType::Png,
                received_at: Utc::now(),
            };
            db.insert_capture(&capture).await.unwrap();
        }
        ids.reverse();
        let mut seen = Vec::new();
        let mut after = serde_json::Value::Null;
        loop {
            let q = async_graphql::Request::new(
                "query($after: String) { captures(first: 2, after: $after) { \
                 edges { cursor node { id vehicleClass speedKmh imageUrl occupancy { status occupants } } } \
                 pageInfo { hasNextPage endCursor } } }",
            )
            .variables(async_graphql::Variables::from_json(serde_json::json!({ "after": after })));
            let data = schema.execute(q).await.into_result().unwrap().data.into_json().unwrap();
            let page = &data["captures"];
            for edge in page["edges"].as_array().unwrap() {
                let node = &edge["node"];
                assert_eq!(node["vehicleClass"], "VAN");
                assert_eq!(node["speedKmh"], 12.3);
                assert_eq!(node["occupancy"]["status"], "UNREADABLE");
                assert!(node["occupancy"]["occupants"].is_null());
                let id = node["id"].as_str().unwrap().to_owned();
                assert_eq!(node["imageUrl"], format!("http://cp.test/images/{id}"));
                seen.push(id);
            }
            if page["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = page["pageInfo"]["endCursor"].clone();
        }
        assert_eq!(seen, ids);

        let bad = schema.execute("{ captures(first: 101) { nodes { id } } }").await;
        assert!(bad.errors[0].message.contains("between 1 and 100"), "{:?}", bad.errors);
        let bad = schema.execute("{ captures(after: \"nope\") { nodes { id } } }").await;
        assert!(bad.errors[0].message.contains("not a cursor"), "{:?}", bad.errors);
        let offline = schema.execute("{ agents { id } agent(id: \"x\") { id } }").await;
        assert!(offline.errors.is_empty(), "{:?}", offline.errors);
    }

    #[test]
    fn widening_keeps_short_decimals() {
        assert_eq!(widen(12.3), 12.3);
        assert_eq!(widen(88.5), 88.5);
    }
}
