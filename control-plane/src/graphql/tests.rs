//! Tests of the schema as a whole: the committed SDL matches the code, and captures page
//! through opaque cursors as a client sees them.

use chrono::DateTime;

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
    let blobs = crate::blob::BlobStore::open(&crate::config::BlobConfig::Local { dir: dir.path().join("b") })
        .await
        .unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let gateway =
        Gateway::new(db.clone(), blobs.clone(), Default::default(), crate::metrics::Metrics::new(), rx);
    let schema =
        schema(ApiContext { db: db.clone(), gateway, blobs: blobs.clone(), links: test_links(&blobs) });
    let operator = |q: async_graphql::Request| q.data(Principal::anonymous_local());
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
            sections: vec![],
            confidence: None,
            model_version: None,
            test: false,
        };
        ids.push(meta.id.to_string());
        let capture = domain::Capture {
            image_key: domain::image_key(&meta, ImageContentType::Png, &[1; 32]),
            meta,
            agent_id: "agent-1".into(),
            image_sha256: [1; 32],
            image_bytes: 3,
            image_content_type: ImageContentType::Png,
            received_at: Utc::now(),
            decision: domain::Decision::Unreadable,
            trace_parent: None,
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
        let data = schema.execute(operator(q)).await.into_result().unwrap().data.into_json().unwrap();
        let page = &data["captures"];
        for edge in page["edges"].as_array().unwrap() {
            let node = &edge["node"];
            assert_eq!(node["vehicleClass"], "VAN");
            assert_eq!(node["speedKmh"], 12.3);
            assert_eq!(node["occupancy"]["status"], "UNREADABLE");
            assert!(node["occupancy"]["occupants"].is_null());
            let id = node["id"].as_str().unwrap().to_owned();
            let url = node["imageUrl"].as_str().unwrap();
            assert!(url.starts_with(&format!("http://cp.test/images/{id}?expires=")), "{url}");
            seen.push(id);
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, ids);

    let bad = schema.execute(operator("{ captures(first: 101) { nodes { id } } }".into())).await;
    assert!(bad.errors[0].message.contains("between 1 and 100"), "{:?}", bad.errors);
    let bad = schema.execute(operator("{ captures(after: \"nope\") { nodes { id } } }".into())).await;
    assert!(bad.errors[0].message.contains("not a cursor"), "{:?}", bad.errors);
    let offline = schema.execute(operator("{ agents { id } agent(id: \"x\") { id } }".into())).await;
    assert!(offline.errors.is_empty(), "{:?}", offline.errors);
    let anonymous = schema.execute("{ agents { id } }").await;
    assert!(anonymous.errors[0].message.contains("no authenticated principal"), "{:?}", anonymous.errors);
}

fn test_links(blobs: &BlobStore) -> ImageLinks {
    let config = crate::config::ImageLinksConfig { ttl_secs: 300, signing_key: None };
    ImageLinks::new("http://cp.test".into(), &config, blobs.clone())
}
