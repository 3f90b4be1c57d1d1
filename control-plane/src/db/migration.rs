//! Schema migrations (sea-orm-migration), run at start-up on SQLite and PostgreSQL alike; the
//! first six here, each later one in a file of its own under `migration/`.

use sea_orm_migration::prelude::*;

mod console;
mod history;
mod jobs;
mod leader;
mod webhooks;

pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Init),
            Box::new(M0002Access),
            Box::new(M0003DeletionReceipts),
            Box::new(M0004RevokedAgents),
            Box::new(M0005DecisionIndex),
            Box::new(M0006SiteConfigs),
            Box::new(history::M0007ComponentHistory),
            Box::new(jobs::M0008Jobs),
            Box::new(webhooks::M0009Webhooks),
            Box::new(console::M0010ConsoleSessions),
            Box::new(leader::M0011LeaderAndSiteManagers),
        ]
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
    Decision,
    Confidence,
    ModelVersion,
    SectionsJson,
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

#[derive(DeriveIden)]
enum Agencies {
    Table,
    Id,
    Name,
    Jurisdiction,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Sites {
    Table,
    Id,
    Name,
    Jurisdiction,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Lanes {
    Table,
    SiteId,
    LaneIndex,
    MinOccupants,
    WindowsJson,
}

#[derive(DeriveIden)]
enum Cameras {
    Table,
    SiteId,
    Id,
    FirstSeen,
}

#[derive(DeriveIden)]
enum Violations {
    Table,
    Id,
    CaptureId,
    SiteId,
    CapturedAt,
    State,
    Reviewer,
    Reason,
    ReviewedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Name,
    Role,
    AgencyId,
    AllCaptures,
    SecretSha256,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    At,
    Actor,
    Action,
    Target,
    Result,
    Message,
}

/// Agencies, sites, lanes and cameras, violations, API keys and the audit log; captures gain
/// the policy decision and vision's section counts. Sites of existing agents are backfilled.
struct M0002Access;

impl MigrationName for M0002Access {
    fn name(&self) -> &str {
        "m0002_access"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0002Access {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE
        let columns = [
            ColumnDef::new(Captures::Decision).string().not_null().default("unknown").to_owned(),
            ColumnDef::new(Captures::Confidence).double().null().to_owned(),
            ColumnDef::new(Captures::ModelVersion).string().null().to_owned(),
            ColumnDef::new(Captures::SectionsJson).string().not_null().default("[]").to_owned(),
        ];
        for mut column in columns {
            manager
                .alter_table(Table::alter().table(Captures::Table).add_column(&mut column).to_owned())
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("captures_site_captured_at_id_desc")
                    .table(Captures::Table)
                    .col(Captures::SiteId)
                    .col((Captures::CapturedAt, IndexOrder::Desc))
                    .col((Captures::Id, IndexOrder::Desc))
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Agencies::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Agencies::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Agencies::Name).string().not_null())
                    .col(ColumnDef::new(Agencies::Jurisdiction).string().not_null())
                    .col(ColumnDef::new(Agencies::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Sites::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Sites::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Sites::Name).string().not_null())
                    .col(ColumnDef::new(Sites::Jurisdiction).string().null())
                    .col(ColumnDef::new(Sites::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("sites_jurisdiction")
                    .table(Sites::Table)
                    .col(Sites::Jurisdiction)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Lanes::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Lanes::SiteId).string().not_null())
                    .col(ColumnDef::new(Lanes::LaneIndex).big_integer().not_null())
                    .col(ColumnDef::new(Lanes::MinOccupants).big_integer().not_null())
                    .col(ColumnDef::new(Lanes::WindowsJson).string().not_null())
                    .primary_key(Index::create().col(Lanes::SiteId).col(Lanes::LaneIndex))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Cameras::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Cameras::SiteId).string().not_null())
                    .col(ColumnDef::new(Cameras::Id).string().not_null())
                    .col(ColumnDef::new(Cameras::FirstSeen).timestamp_with_time_zone().not_null())
                    .primary_key(Index::create().col(Cameras::SiteId).col(Cameras::Id))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Violations::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Violations::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Violations::CaptureId).string().not_null().unique_key())
                    .col(ColumnDef::new(Violations::SiteId).string().not_null())
                    .col(ColumnDef::new(Violations::CapturedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Violations::State).string().not_null())
                    .col(ColumnDef::new(Violations::Reviewer).string().null())
                    .col(ColumnDef::new(Violations::Reason).string().null())
                    .col(ColumnDef::new(Violations::ReviewedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(Violations::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("violations_captured_at_id_desc")
                    .table(Violations::Table)
                    .col((Violations::CapturedAt, IndexOrder::Desc))
                    .col((Violations::Id, IndexOrder::Desc))
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(ApiKeys::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(ApiKeys::Name).string().not_null())
                    .col(ColumnDef::new(ApiKeys::Role).string().not_null())
                    .col(ColumnDef::new(ApiKeys::AgencyId).string().null())
                    .col(ColumnDef::new(ApiKeys::AllCaptures).boolean().not_null())
                    .col(ColumnDef::new(ApiKeys::SecretSha256).string().not_null())
                    .col(ColumnDef::new(ApiKeys::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(ApiKeys::RevokedAt).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(AuditLog::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(AuditLog::At).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(AuditLog::Actor).string().not_null())
                    .col(ColumnDef::new(AuditLog::Action).string().not_null())
                    .col(ColumnDef::new(AuditLog::Target).string().not_null())
                    .col(ColumnDef::new(AuditLog::Result).string().not_null())
                    .col(ColumnDef::new(AuditLog::Message).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_log_at_id_desc")
                    .table(AuditLog::Table)
                    .col((AuditLog::At, IndexOrder::Desc))
                    .col((AuditLog::Id, IndexOrder::Desc))
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // every agent that said hello before this migration gets its site
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO sites (id, name, jurisdiction, created_at) \
                 SELECT site_id, site_id, NULL, MIN(first_seen) FROM agents GROUP BY site_id",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditLog::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Violations::Table.into_iden(),
            Cameras::Table.into_iden(),
            Lanes::Table.into_iden(),
            Sites::Table.into_iden(),
            Agencies::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        for column in
            [Captures::Decision, Captures::Confidence, Captures::ModelVersion, Captures::SectionsJson]
        {
            manager.alter_table(Table::alter().table(Captures::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum DeletionReceipts {
    Table,
    ReceiptId,
    CaptureId,
    AgentId,
    SiteId,
    ValueClass,
    CapturedAt,
    DeletedAt,
    Reason,
    Bytes,
    ReceivedAt,
}

/// Deletion receipts: agents' proof of captures deleted without upload, keyed by receipt id so
/// that storing one twice stores it once.
struct M0003DeletionReceipts;

impl MigrationName for M0003DeletionReceipts {
    fn name(&self) -> &str {
        "m0003_deletion_receipts"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0003DeletionReceipts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DeletionReceipts::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(DeletionReceipts::ReceiptId).string().not_null().primary_key())
                    .col(ColumnDef::new(DeletionReceipts::CaptureId).string().null())
                    .col(ColumnDef::new(DeletionReceipts::AgentId).string().not_null())
                    .col(ColumnDef::new(DeletionReceipts::SiteId).string().not_null())
                    .col(ColumnDef::new(DeletionReceipts::ValueClass).string().not_null())
                    .col(ColumnDef::new(DeletionReceipts::CapturedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(DeletionReceipts::DeletedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(DeletionReceipts::Reason).string().not_null())
                    .col(ColumnDef::new(DeletionReceipts::Bytes).big_integer().not_null())
                    .col(ColumnDef::new(DeletionReceipts::ReceivedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("deletion_receipts_site_deleted_at_id_desc")
                    .table(DeletionReceipts::Table)
                    .col(DeletionReceipts::SiteId)
                    .col((DeletionReceipts::DeletedAt, IndexOrder::Desc))
                    .col((DeletionReceipts::ReceiptId, IndexOrder::Desc))
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(DeletionReceipts::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum RevokedAgents {
    Table,
    AgentId,
    Reason,
    By,
    CreatedAt,
}

/// Revoked agents: one row per agent refused its sessions; reinstating deletes the row.
struct M0004RevokedAgents;

impl MigrationName for M0004RevokedAgents {
    fn name(&self) -> &str {
        "m0004_revoked_agents"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0004RevokedAgents {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RevokedAgents::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(RevokedAgents::AgentId).string().not_null().primary_key())
                    .col(ColumnDef::new(RevokedAgents::Reason).string().not_null())
                    .col(ColumnDef::new(RevokedAgents::By).string().not_null())
                    .col(ColumnDef::new(RevokedAgents::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(RevokedAgents::Table).to_owned()).await
    }
}

/// Captures filtered by decision, newest first: rare decisions (`unknown`, `unreadable`) no
/// longer walk the whole time index (`bench api` showed deep pages of them at ~90 ms p99 on
/// 1,000,000 rows).
struct M0005DecisionIndex;

impl MigrationName for M0005DecisionIndex {
    fn name(&self) -> &str {
        "m0005_decision_index"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0005DecisionIndex {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("captures_decision_captured_at_id_desc")
                    .table(Captures::Table)
                    .col(Captures::Decision)
                    .col((Captures::CapturedAt, IndexOrder::Desc))
                    .col((Captures::Id, IndexOrder::Desc))
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop().name("captures_decision_captured_at_id_desc").table(Captures::Table).to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum SiteConfigs {
    Table,
    SiteId,
    Version,
    Toml,
    Comment,
    RolledBackFrom,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AgentConfigStates {
    Table,
    AgentId,
    Version,
    SiteId,
    State,
    Error,
    UpdatedAt,
}

/// Versioned site configs (one row per site and version, never updated) and each agent's
/// rollout state per version (pending, staged, applied, rejected).
struct M0006SiteConfigs;

impl MigrationName for M0006SiteConfigs {
    fn name(&self) -> &str {
        "m0006_site_configs"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0006SiteConfigs {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SiteConfigs::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(SiteConfigs::SiteId).string().not_null())
                    .col(ColumnDef::new(SiteConfigs::Version).big_integer().not_null())
                    .col(ColumnDef::new(SiteConfigs::Toml).text().not_null())
                    .col(ColumnDef::new(SiteConfigs::Comment).string().null())
                    .col(ColumnDef::new(SiteConfigs::RolledBackFrom).big_integer().null())
                    .col(ColumnDef::new(SiteConfigs::CreatedBy).string().not_null())
                    .col(ColumnDef::new(SiteConfigs::CreatedAt).timestamp_with_time_zone().not_null())
                    // two concurrent edits of one site cannot both become version N+1
                    .primary_key(Index::create().col(SiteConfigs::SiteId).col(SiteConfigs::Version))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AgentConfigStates::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(AgentConfigStates::AgentId).string().not_null())
                    .col(ColumnDef::new(AgentConfigStates::Version).big_integer().not_null())
                    .col(ColumnDef::new(AgentConfigStates::SiteId).string().not_null())
                    .col(ColumnDef::new(AgentConfigStates::State).string().not_null())
                    .col(ColumnDef::new(AgentConfigStates::Error).text().null())
                    .col(ColumnDef::new(AgentConfigStates::UpdatedAt).timestamp_with_time_zone().not_null())
                    .primary_key(
                        Index::create().col(AgentConfigStates::AgentId).col(AgentConfigStates::Version),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("agent_config_states_site_version")
                    .table(AgentConfigStates::Table)
                    .col(AgentConfigStates::SiteId)
                    .col(AgentConfigStates::Version)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(AgentConfigStates::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(SiteConfigs::Table).to_owned()).await
    }
}
