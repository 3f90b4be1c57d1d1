//! Schema migrations (sea-orm-migration), run at start-up on SQLite and PostgreSQL alike.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(M0001Init)]
    }
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    Id,
    SiteId,
    SoftwareVersion,
    ConfigVersion,
    Online,
    Health,
    BufferedCaptures,
    LastSeen,
    FirstSeen,
}

#[derive(DeriveIden)]
enum Captures {
    Table,
    Id,
    AgentId,
    SiteId,
    Lane,
    CapturedAt,
    DetectedAt,
    VehicleClass,
    OccupancyStatus,
    Occupants,
    SpeedKmh,
    HeightM,
    WidthM,
    CameraId,
    ConfigVersion,
    ImageKey,
    ImageSha256,
    ImageBytes,
    ImageContentType,
    ReceivedAt,
}

struct M0001Init;

impl MigrationName for M0001Init {
    fn name(&self) -> &str {
        "m0001_init"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0001Init {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Agents::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Agents::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Agents::SiteId).string().not_null())
                    .col(ColumnDef::new(Agents::SoftwareVersion).string().not_null())
                    .col(ColumnDef::new(Agents::ConfigVersion).big_integer().not_null())
                    .col(ColumnDef::new(Agents::Online).boolean().not_null())
                    .col(ColumnDef::new(Agents::Health).string().not_null())
                    .col(ColumnDef::new(Agents::BufferedCaptures).big_integer().not_null())
                    .col(ColumnDef::new(Agents::LastSeen).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Agents::FirstSeen).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Captures::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Captures::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Captures::AgentId).string().not_null())
                    .col(ColumnDef::new(Captures::SiteId).string().not_null())
                    .col(ColumnDef::new(Captures::Lane).big_integer().not_null())
                    .col(ColumnDef::new(Captures::CapturedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Captures::DetectedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(Captures::VehicleClass).string().not_null())
                    .col(ColumnDef::new(Captures::OccupancyStatus).string().not_null())
                    .col(ColumnDef::new(Captures::Occupants).big_integer().null())
                    .col(ColumnDef::new(Captures::SpeedKmh).double().null())
                    .col(ColumnDef::new(Captures::HeightM).double().not_null())
                    .col(ColumnDef::new(Captures::WidthM).double().not_null())
                    .col(ColumnDef::new(Captures::CameraId).string().not_null())
                    .col(ColumnDef::new(Captures::ConfigVersion).big_integer().not_null())
                    .col(ColumnDef::new(Captures::ImageKey).string().not_null())
                    .col(ColumnDef::new(Captures::ImageSha256).string().not_null())
                    .col(ColumnDef::new(Captures::ImageBytes).big_integer().not_null())
                    .col(ColumnDef::new(Captures::ImageContentType).string().not_null())
                    .col(ColumnDef::new(Captures::ReceivedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("captures_captured_at_id_desc")
                    .table(Captures::Table)
                    .col((Captures::CapturedAt, IndexOrder::Desc))
                    .col((Captures::Id, IndexOrder::Desc))
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Captures::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Agents::Table).to_owned()).await
    }
}
