//! [`ApprovalStore`] for SQLite: table `pocket_approvals` (migration 2).

use futures_util::future::BoxFuture;
use pocket_agent::Approval;
use sqlx::migrate::{Migration, MigrationType};
use sqlx::sqlite::SqliteConnection;

use super::super::StoreError;
use super::super::approvals::{
    ApprovalRecord, ApprovalStore, Decided, NewApproval, check_same, pending_limit,
    validate_request,
};
use super::super::sql::{approval_columns, approval_row, corrupt, to_json};
use super::{SqliteStore, db};

/// Migration 2: table `pocket_approvals`.
pub(super) fn migration() -> Migration {
    Migration::new(
        2,
        "approvals".into(),
        MigrationType::Simple,
        sqlx::SqlSafeStr::into_sql_str(include_str!(
            "../../../migrations/sqlite/0002_approvals.sql"
        )),
        false,
    )
}

async fn by_id(
    conn: &mut SqliteConnection,
    id: &str,
) -> Result<Option<ApprovalRecord>, StoreError> {
    let sql = concat!(
        "SELECT ",
        approval_columns!(),
        " FROM pocket_approvals a WHERE a.id = ?1"
    );
    sqlx::query(sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db("reading an approval"))?
        .as_ref()
        .map(approval_row)
        .transpose()
}

impl ApprovalStore for SqliteStore {
    fn request_approval<'a>(
        &'a self,
        request: &'a NewApproval,
    ) -> BoxFuture<'a, Result<ApprovalRecord, StoreError>> {
        Box::pin(async move {
            validate_request(request)?;
            let id = request.id();
            let arguments = to_json(&request.arguments)?;
            let now = self.now();
            let request = request.clone();
            self.write(move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO pocket_approvals (id, task_id, agent, call_id, tool, risk, \
                         arguments, requested_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(&id)
                    .bind(&request.task_id.0)
                    .bind(&request.agent)
                    .bind(&request.call_id)
                    .bind(&request.tool)
                    .bind(&request.risk)
                    .bind(&arguments)
                    .bind(now)
                    .execute(&mut *conn)
                    .await
                    .map_err(db("recording an approval request"))?;
                    let record = by_id(conn, &id).await?.ok_or_else(|| {
                        corrupt("an approval request vanished after its insert".into(), None)
                    })?;
                    check_same(record, &request)
                })
            })
            .await
        })
    }

    fn decide_approval<'a>(
        &'a self,
        id: &'a str,
        decision: &'a Approval,
    ) -> BoxFuture<'a, Result<Decided, StoreError>> {
        Box::pin(async move {
            let text = to_json(decision)?;
            let now = self.now();
            let id = id.to_owned();
            self.write(move |conn| {
                Box::pin(async move {
                    let changed = sqlx::query(
                        "UPDATE pocket_approvals SET decision = ?1, decided_at = ?2 \
                         WHERE id = ?3 AND decision IS NULL",
                    )
                    .bind(&text)
                    .bind(now)
                    .bind(&id)
                    .execute(&mut *conn)
                    .await
                    .map_err(db("recording an approval decision"))?
                    .rows_affected();
                    Ok(match (changed, by_id(conn, &id).await?) {
                        (_, None) => Decided::NotFound,
                        (0, Some(record)) => Decided::AlreadyDecided(record),
                        (_, Some(record)) => Decided::Recorded(record),
                    })
                })
            })
            .await
        })
    }

    fn get_approval<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ApprovalRecord>, StoreError>> {
        Box::pin(async move {
            let id = id.to_owned();
            self.read(move |conn| Box::pin(async move { by_id(conn, &id).await }))
                .await
        })
    }

    fn pending_approvals(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ApprovalRecord>, StoreError>> {
        Box::pin(async move {
            let limit = i64::try_from(pending_limit(limit)).unwrap_or(i64::MAX);
            self.read(move |conn| {
                Box::pin(async move {
                    let sql = concat!(
                        "SELECT ",
                        approval_columns!(),
                        " FROM pocket_approvals a \
                         LEFT JOIN pocket_tasks t ON t.id = a.task_id \
                         WHERE a.decision IS NULL AND (t.status IS NULL OR t.status NOT IN \
                         ('succeeded', 'failed', 'cancelled')) ORDER BY a.seq LIMIT ?1"
                    );
                    sqlx::query(sql)
                        .bind(limit)
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(db("listing pending approvals"))?
                        .iter()
                        .map(approval_row)
                        .collect()
                })
            })
            .await
        })
    }
}
