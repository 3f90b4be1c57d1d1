//! sea-orm entities: the SQL rows of `agents` and `captures`, seen only by the `db` module.

pub mod agents {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "agents")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub site_id: String,
        pub software_version: String,
        pub config_version: i64,
        pub online: bool,
        pub health: String,
        pub buffered_captures: i64,
        pub last_seen: DateTimeUtc,
        pub first_seen: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod captures {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "captures")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub agent_id: String,
        pub site_id: String,
        pub lane: i64,
        pub captured_at: DateTimeUtc,
        pub detected_at: Option<DateTimeUtc>,
        pub vehicle_class: String,
        pub occupancy_status: String,
        pub occupants: Option<i64>,
        pub speed_kmh: Option<f64>,
        pub height_m: f64,
        pub width_m: f64,
        pub camera_id: String,
        pub config_version: i64,
        pub image_key: String,
        pub image_sha256: String,
        pub image_bytes: i64,
        pub image_content_type: String,
        pub received_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
