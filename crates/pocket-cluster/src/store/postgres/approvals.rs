//! [`ApprovalStore`] for PostgreSQL: table `pocket_approvals` (migration 2).

use futures_util::future::BoxFuture;
use pocket_agent::Approval;
use sqlx::Row;
use sqlx::migrate::{Migration, MigrationType};
use sqlx::postgres::PgRow;

use super::super::approvals::{
    ApprovalRecord, ApprovalStore, Decided, NewApproval, check_same, pending_limit,
    validate_request,
};
use super::super::sql::{corrupt, from_json, to_json};
use super::super::{StoreError, TaskId, from_ms};
use super::{PostgresStore, db};

/// The columns of an [`ApprovalRecord`] (table alias `a`).
macro_rules! approval_columns {
    () => {
        "a.id, a.task_id, a.agent, a.call_id, a.tool, a.risk, a.arguments, a.requested_at, \
         a.decision, a.decided_at"
    };
}

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

fn row(row: &PgRow) -> Result<ApprovalRecord, StoreError> {
    fn col<'r, T>(row: &'r PgRow, name: &str) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        row.try_get(name).map_err(|e| {
            corrupt(
                format!("column `{name}` of pocket_approvals does not decode"),
                Some(Box::new(e)),
            )
        })
    }
    let decision: Option<String> = col(row, "decision")?;
    let decided_at: Option<i64> = col(row, "decided_at")?;
    Ok(ApprovalRecord {
        id: col(row, "id")?,
        task_id: TaskId(col(row, "task_id")?),
        agent: col(row, "agent")?,
        call_id: col(row, "call_id")?,
        tool: col(row, "tool")?,
        risk: col(row, "risk")?,
        arguments: from_json("arguments", &col::<String>(row, "arguments")?)?,
        requested_at: from_ms(col(row, "requested_at")?),
        decision: decision
            .map(|d| from_json::<Approval>("decision", &d))
            .transpose()?,
        decided_at: decided_at.map(from_ms),
    })
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
            .map(row)
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
                return Ok(Decided::Recorded(row(&updated)?));
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
                .map(row)
                .collect()
        })
    }
}
