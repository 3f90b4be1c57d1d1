//! sea-orm entities: the SQL rows of every table, seen only by the `db` module.

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
        pub decision: String,
        pub confidence: Option<f64>,
        pub model_version: Option<String>,
        /// `[{"section":..,"occupants":..,"confidence":..}]`
        pub sections_json: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod agencies {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "agencies")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub jurisdiction: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod sites {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "sites")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub jurisdiction: Option<String>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod lanes {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "lanes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub site_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub lane_index: i64,
        pub min_occupants: i64,
        /// `[{"start_minute":..,"end_minute":..}]`, UTC minutes after midnight
        pub windows_json: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod cameras {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "cameras")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub site_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub first_seen: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod violations {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "violations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        #[sea_orm(unique)]
        pub capture_id: String,
        pub site_id: String,
        pub captured_at: DateTimeUtc,
        pub state: String,
        pub reviewer: Option<String>,
        pub reason: Option<String>,
        pub reviewed_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_keys {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub role: String,
        pub agency_id: Option<String>,
        pub all_captures: bool,
        pub secret_sha256: String,
        pub created_at: DateTimeUtc,
        pub revoked_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_log {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_log")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub at: DateTimeUtc,
        pub actor: String,
        pub action: String,
        pub target: String,
        pub result: String,
        pub message: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod deletion_receipts {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "deletion_receipts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub receipt_id: String,
        pub capture_id: Option<String>,
        pub agent_id: String,
        pub site_id: String,
        pub value_class: String,
        pub captured_at: Option<DateTimeUtc>,
        pub deleted_at: DateTimeUtc,
        pub reason: String,
        pub bytes: i64,
        pub received_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod revoked_agents {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "revoked_agents")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agent_id: String,
        pub reason: String,
        pub by: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod site_configs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "site_configs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub site_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i64,
        #[sea_orm(column_type = "Text")]
        pub toml: String,
        pub comment: Option<String>,
        pub rolled_back_from: Option<i64>,
        pub created_by: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod agent_config_states {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "agent_config_states")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agent_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i64,
        pub site_id: String,
        pub state: String,
        pub error: Option<String>,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Raw component history: one row per component line of a heartbeat, kept
/// `history.raw_retention_secs`. Times are Unix milliseconds, statuses
/// `ComponentStatus::code`s, so that rollups are the same arithmetic on SQLite and PostgreSQL.
pub mod component_samples {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "component_samples")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agent_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub component: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub at_ms: i64,
        pub status: i16,
        pub restarts: i32,
        pub processed: i64,
        pub inbox_depth: Option<i32>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Component history rolled up per agent × component × `history.rollup_secs` period (its start,
/// `bucket_ms`), kept `history.rollup_retention_secs`.
pub mod component_rollups {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "component_rollups")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agent_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub component: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub bucket_ms: i64,
        pub samples: i32,
        pub worst_status: i16,
        /// The status of the period's newest sample.
        pub last_status: i16,
        pub max_restarts: i32,
        pub processed_end: i64,
        pub max_inbox_depth: Option<i32>,
        pub not_running: i32,
        pub left_running: i32,
        pub restarts_added: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The newest sample of each agent × component (what `fleetComponents` reads), with when its
/// restart count last grew.
pub mod component_latest {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "component_latest")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agent_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub component: String,
        pub at_ms: i64,
        pub status: i16,
        pub restarts: i32,
        pub processed: i64,
        pub inbox_depth: Option<i32>,
        pub last_restart_ms: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// One row (`id` 1): raw samples before `rolled_until_ms` are rolled up.
pub mod history_rollup_state {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "history_rollup_state")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub rolled_until_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
