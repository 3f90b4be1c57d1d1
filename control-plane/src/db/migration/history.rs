//! Migration 7: component history (`component_samples` raw, `component_rollups` per period,
//! `component_latest`, and the rollup mark `history_rollup_state`); BRIN indexes on the time
//! columns on PostgreSQL, b-tree indexes on SQLite.

use sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum ComponentSamples {
    Table,
    AgentId,
    Component,
    AtMs,
    Status,
    Restarts,
    Processed,
    InboxDepth,
}

#[derive(DeriveIden)]
enum ComponentRollups {
    Table,
    AgentId,
    Component,
    BucketMs,
    Samples,
    WorstStatus,
    LastStatus,
    MaxRestarts,
    ProcessedEnd,
    MaxInboxDepth,
    NotRunning,
    LeftRunning,
    RestartsAdded,
}

#[derive(DeriveIden)]
enum ComponentLatest {
    Table,
    AgentId,
    Component,
    AtMs,
    Status,
    Restarts,
    Processed,
    InboxDepth,
    LastRestartMs,
}

#[derive(DeriveIden)]
enum HistoryRollupState {
    Table,
    Id,
    RolledUntilMs,
}

/// Component history: raw samples, rollups, the newest sample per agent × component, the rollup
/// mark. Fixed-width columns first (no padding); time indexes BRIN on PostgreSQL (time order).
pub struct M0007ComponentHistory;

impl MigrationName for M0007ComponentHistory {
    fn name(&self) -> &str {
        "m0007_component_history"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0007ComponentHistory {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ComponentSamples as S;
        manager
            .create_table(
                Table::create()
                    .table(S::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(S::AtMs).big_integer().not_null())
                    .col(ColumnDef::new(S::Processed).big_integer().not_null())
                    .col(ColumnDef::new(S::Restarts).integer().not_null())
                    .col(ColumnDef::new(S::InboxDepth).integer().null())
                    .col(ColumnDef::new(S::Status).small_integer().not_null())
                    .col(ColumnDef::new(S::AgentId).string().not_null())
                    .col(ColumnDef::new(S::Component).string().not_null())
                    .primary_key(Index::create().col(S::AgentId).col(S::Component).col(S::AtMs))
                    .to_owned(),
            )
            .await?;
        use ComponentRollups as R;
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(R::BucketMs).big_integer().not_null())
                    .col(ColumnDef::new(R::ProcessedEnd).big_integer().not_null())
                    .col(ColumnDef::new(R::Samples).integer().not_null())
                    .col(ColumnDef::new(R::MaxRestarts).integer().not_null())
                    .col(ColumnDef::new(R::MaxInboxDepth).integer().null())
                    .col(ColumnDef::new(R::NotRunning).integer().not_null())
                    .col(ColumnDef::new(R::LeftRunning).integer().not_null())
                    .col(ColumnDef::new(R::RestartsAdded).integer().not_null())
                    .col(ColumnDef::new(R::WorstStatus).small_integer().not_null())
                    .col(ColumnDef::new(R::LastStatus).small_integer().not_null())
                    .col(ColumnDef::new(R::AgentId).string().not_null())
                    .col(ColumnDef::new(R::Component).string().not_null())
                    .primary_key(Index::create().col(R::AgentId).col(R::Component).col(R::BucketMs))
                    .to_owned(),
            )
            .await?;
        use ComponentLatest as L;
        manager
            .create_table(
                Table::create()
                    .table(L::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(L::AtMs).big_integer().not_null())
                    .col(ColumnDef::new(L::Processed).big_integer().not_null())
                    .col(ColumnDef::new(L::LastRestartMs).big_integer().null())
                    .col(ColumnDef::new(L::Restarts).integer().not_null())
                    .col(ColumnDef::new(L::InboxDepth).integer().null())
                    .col(ColumnDef::new(L::Status).small_integer().not_null())
                    .col(ColumnDef::new(L::AgentId).string().not_null())
                    .col(ColumnDef::new(L::Component).string().not_null())
                    .primary_key(Index::create().col(L::AgentId).col(L::Component))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(HistoryRollupState::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(HistoryRollupState::Id).integer().not_null().primary_key())
                    .col(ColumnDef::new(HistoryRollupState::RolledUntilMs).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        for (name, table, column) in [
            ("component_samples_at", S::Table.into_iden(), S::AtMs.into_iden()),
            ("component_rollups_bucket", R::Table.into_iden(), R::BucketMs.into_iden()),
        ] {
            if manager.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
                let (table, column) = (table.to_string(), column.to_string());
                manager
                    .get_connection()
                    .execute_unprepared(&format!(
                        "CREATE INDEX IF NOT EXISTS {name}_brin ON {table} USING brin ({column}) \
                         WITH (pages_per_range = 32)"
                    ))
                    .await?;
            } else {
                let index = Index::create().name(name).table(table).col(column).if_not_exists().to_owned();
                manager.create_index(index).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let (state, latest) = (HistoryRollupState::Table.into_iden(), ComponentLatest::Table.into_iden());
        for table in [state, latest, ComponentRollups::Table.into_iden(), ComponentSamples::Table.into_iden()]
        {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
