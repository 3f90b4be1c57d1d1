//! Deletion receipts (`deletion_receipts`): agents' proofs that they deleted captures without
//! uploading them, stored idempotently by receipt id and paged newest deletion first within the
//! caller's visibility.

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use uuid::Uuid;

use super::entities::deletion_receipts;
use super::{Db, DbError, after_cursor, sites_in, to_i64, to_u64};
use crate::domain::{CaptureCursor, DeletionReason, DeletionReceipt, ValueClass, Visibility};

impl Db {
    /// Stores deletion receipts in one transaction, each unless its receipt id exists already
    /// (`ON CONFLICT (receipt_id) DO NOTHING`); returns how many were new.
    pub async fn insert_receipts(&self, receipts: &[DeletionReceipt]) -> Result<u64, DbError> {
        let txn = self.conn.begin().await?;
        let mut new = 0;
        for r in receipts {
            let row = deletion_receipts::ActiveModel {
                receipt_id: Set(r.receipt_id.to_string()),
                capture_id: Set(r.capture_id.map(|id| id.to_string())),
                agent_id: Set(r.agent_id.clone()),
                site_id: Set(r.site_id.clone()),
                value_class: Set(r.value_class.as_str().to_owned()),
                captured_at: Set(r.captured_at),
                deleted_at: Set(r.deleted_at),
                reason: Set(r.reason.as_str().to_owned()),
                bytes: Set(to_i64(r.bytes)),
                received_at: Set(r.received_at),
            };
            new += deletion_receipts::Entity::insert(row)
                .on_conflict(OnConflict::column(deletion_receipts::Column::ReceiptId).do_nothing().to_owned())
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(new)
    }

    /// Deletion receipts the caller may see (an agency: those of its jurisdiction's sites),
    /// newest deletion first by `(deleted_at DESC, receipt_id DESC)`, strictly after `after`.
    pub async fn receipts_page(
        &self,
        site_id: Option<&str>,
        vis: &Visibility,
        after: Option<CaptureCursor>,
        limit: u64,
    ) -> Result<Vec<DeletionReceipt>, DbError> {
        use deletion_receipts::Column as R;
        let mut cond = match vis {
            Visibility::All => Condition::all(),
            Visibility::Jurisdiction { jurisdiction, .. } => {
                Condition::all().add(R::SiteId.in_subquery(sites_in(jurisdiction)))
            }
        };
        if let Some(site) = site_id {
            cond = cond.add(R::SiteId.eq(site));
        }
        if let Some(c) = after {
            cond = cond.add(after_cursor(R::DeletedAt, R::ReceiptId, c));
        }
        let rows = deletion_receipts::Entity::find()
            .filter(cond)
            .order_by_desc(R::DeletedAt)
            .order_by_desc(R::ReceiptId)
            .limit(limit)
            .all(&self.conn)
            .await?;
        rows.into_iter().map(receipt_from_row).collect()
    }
}

fn receipt_from_row(r: deletion_receipts::Model) -> Result<DeletionReceipt, DbError> {
    let malformed = |why: &str| DbError::Malformed {
        table: "deletion_receipts",
        id: r.receipt_id.clone(),
        why: why.to_owned(),
    };
    let receipt_id = Uuid::parse_str(&r.receipt_id).map_err(|_| malformed("receipt_id is not a uuid"))?;
    let capture_id = r
        .capture_id
        .as_deref()
        .map(Uuid::parse_str)
        .transpose()
        .map_err(|_| malformed("capture_id is not a uuid"))?;
    Ok(DeletionReceipt {
        receipt_id,
        capture_id,
        value_class: ValueClass::parse(&r.value_class).ok_or_else(|| malformed("unknown value_class"))?,
        reason: DeletionReason::parse(&r.reason).ok_or_else(|| malformed("unknown reason"))?,
        agent_id: r.agent_id,
        site_id: r.site_id,
        captured_at: r.captured_at,
        deleted_at: r.deleted_at,
        bytes: to_u64(r.bytes),
        received_at: r.received_at,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::db::tests::temp_db;
    use crate::domain::{Agency, AgentHello};

    #[tokio::test]
    async fn receipts_insert_idempotently_and_page_newest_first_within_visibility() {
        let (_dir, db) = temp_db().await;
        let base = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let receipt = |site: &str, i: i64| DeletionReceipt {
            receipt_id: Uuid::now_v7(),
            capture_id: (i % 2 == 0).then(Uuid::now_v7),
            agent_id: format!("agent-{site}"),
            site_id: site.to_owned(),
            value_class: ValueClass::Statistics,
            captured_at: (i % 2 == 0).then_some(base),
            deleted_at: base + chrono::Duration::seconds(i),
            reason: DeletionReason::EvictedFull,
            bytes: 100,
            received_at: base,
        };
        let ours: Vec<_> = (0..3).map(|i| receipt("a1-km12", i)).collect();
        let theirs = receipt("b2-km3", 10);
        assert_eq!(db.insert_receipts(&ours).await.unwrap(), 3);
        assert_eq!(
            db.insert_receipts(&[ours[1].clone(), theirs.clone()]).await.unwrap(),
            1,
            "receipt id is the key"
        );
        db.insert_agency(
            &Agency { id: "ag".into(), name: "Agency".into(), jurisdiction: "north".into() },
            base,
        )
        .await
        .unwrap();
        db.upsert_agent(
            &AgentHello {
                agent_id: "agent-a1-km12".into(),
                site_id: "a1-km12".into(),
                software_version: "t".into(),
                config_version: 0,
                wants_heartbeat_acks: false,
                local_config: String::new(),
            },
            base,
        )
        .await
        .unwrap();
        db.set_site_jurisdiction("a1-km12", Some("north")).await.unwrap();
        let all = db.receipts_page(None, &Visibility::All, None, 10).await.unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0], theirs, "newest deletion first");
        let first = db.receipts_page(None, &Visibility::All, None, 2).await.unwrap();
        let cursor = CaptureCursor { captured_at: first[1].deleted_at, id: first[1].receipt_id };
        let rest = db.receipts_page(None, &Visibility::All, Some(cursor), 10).await.unwrap();
        assert_eq!([first, rest].concat(), all, "pages without gaps");
        let north = Visibility::Jurisdiction { jurisdiction: "north".into(), all_captures: false };
        let visible = db.receipts_page(None, &north, None, 10).await.unwrap();
        assert_eq!(visible.iter().rev().cloned().collect::<Vec<_>>(), ours, "only the jurisdiction's site");
        assert!(db.receipts_page(Some("b2-km3"), &north, None, 10).await.unwrap().is_empty());
    }
}
