//! [`ApprovalStore`] for PostgreSQL: table `pocket_approvals` (migration 2).

use futures_util::future::BoxFuture;
use pocket_agent::Approval;
use sqlx::migrate::{Migration, MigrationType};

use super::super::StoreError;
use super::super::approvals::{
    ApprovalRecord, ApprovalStore, Decided, NewApproval, check_same, pending_limit,
    validate_request,
};
use super::super::sql::{approval_columns, approval_row, corrupt, to_json};
use super::{PostgresStore, db};

/// Migration 2: table `pocket_approvals`.
pub(super) fn migration() -> Migration {
    Migration::new(
        2,
        "approvals".into(),
        MigrationType::Simple,
        sqlx::SqlSafeStr::into_sql_str(include_str!(
            "../../../migrations/postgres/0002_approvals.sql"
        )),
        false,
    )
}

impl PostgresStore {
    async fn approval_by_id(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            approval_columns!(),
            " FROM pocket_approvals a WHERE a.id = $1"
        );
        sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("reading an approval"))?
            .as_ref()
            .map(approval_row)
            .transpose()
    }
}

impl ApprovalStore for PostgresStore {
    fn request_approval<'a>(
        &'a self,
        request: &'a NewApproval,
    ) -> BoxFuture<'a, Result<ApprovalRecord, StoreError>> {
        Box::pin(async move {
            validate_request(request)?;
            let id = request.id();
            sqlx::query(
                "INSERT INTO pocket_approvals (id, task_id, agent, call_id, tool, risk, \
                 arguments, requested_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&id)
            .bind(&request.task_id.0)
            .bind(&request.agent)
            .bind(&request.call_id)
            .bind(&request.tool)
            .bind(&request.risk)
            .bind(to_json(&request.arguments)?)
            .bind(self.now())
            .execute(&self.inner.pool)
            .await
            .map_err(db("recording an approval request"))?;
            // Rows are never deleted: the row is there, ours or an earlier ask's.
            let record = self.approval_by_id(&id).await?.ok_or_else(|| {
                corrupt("an approval request vanished after its insert".into(), None)
            })?;
            check_same(record, request)
        })
    }

    fn decide_approval<'a>(
        &'a self,
        id: &'a str,
        decision: &'a Approval,
    ) -> BoxFuture<'a, Result<Decided, StoreError>> {
        Box::pin(async move {
            let sql = concat!(
                "UPDATE pocket_approvals a SET decision = $1, decided_at = $2 \
                 WHERE a.id = $3 AND a.decision IS NULL RETURNING ",
                approval_columns!()
            );
            let updated = sqlx::query(sql)
                .bind(to_json(decision)?)
                .bind(self.now())
                .bind(id)
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(db("recording an approval decision"))?;
            if let Some(updated) = updated {
                return Ok(Decided::Recorded(approval_row(&updated)?));
            }
            Ok(match self.approval_by_id(id).await? {
                Some(record) => Decided::AlreadyDecided(record),
                None => Decided::NotFound,
            })
        })
    }

    fn get_approval<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ApprovalRecord>, StoreError>> {
        Box::pin(self.approval_by_id(id))
    }

    fn pending_approvals(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ApprovalRecord>, StoreError>> {
        Box::pin(async move {
            let limit = i64::try_from(pending_limit(limit)).unwrap_or(i64::MAX);
            let sql = concat!(
                "SELECT ",
                approval_columns!(),
                " FROM pocket_approvals a \
                 LEFT JOIN pocket_tasks t ON t.id = a.task_id \
                 WHERE a.decision IS NULL AND (t.status IS NULL OR t.status NOT IN \
                 ('succeeded', 'failed', 'cancelled')) ORDER BY a.seq LIMIT $1"
            );
            sqlx::query(sql)
                .bind(limit)
                .fetch_all(&self.inner.pool)
                .await
                .map_err(db("listing pending approvals"))?
                .iter()
                .map(approval_row)
                .collect()
        })
    }
}
