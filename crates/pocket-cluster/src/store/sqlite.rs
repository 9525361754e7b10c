//! The SQLite store: one file in WAL mode, written through one connection.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use pocket_agent::{Checkpoint, CheckpointRef, JournalEntry};
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite};

use super::sql::{Db, backend, corrupt, from_json, to_json};
use super::{
    Claimed, Enqueued, FailOutcome, NewTask, QueueStats, StoreError, StoreOptions, TaskFilter,
    TaskId, TaskRecord, TaskStatus, TaskStore, duration_ms, from_ms, lease_expired_error,
    list_limit, new_id, validate, validate_worker,
};

/// The columns of a [`TaskRecord`], in [`record`]'s order.
macro_rules! columns {
    () => {
        "id, agent, task, priority, capabilities, idempotency_key, status, attempts, \
         max_attempts, result, error, metadata, created_at, updated_at, run_after, lease_owner, \
         lease_expires_at"
    };
}

/// The statuses under a lease, as SQL.
macro_rules! leased {
    () => {
        "status IN ('running', 'waiting_approval')"
    };
}

/// A [`TaskStore`] in one SQLite file: the embedded default.
///
/// The file is in WAL mode with `synchronous=NORMAL` (a commit survives a crash of the
/// process; a power cut may lose the last commits, never corrupt the file) and a 5 s busy
/// timeout. Writes go through one connection, so this process's writers queue in the pool
/// instead of spinning on SQLite's lock; reads use a small pool of their own
/// ([`StoreOptions::max_connections`], default 4). Several processes may share the file; they
/// then contend on SQLite's lock (a busy database is a retryable [`StoreError::Backend`]).
/// The schema is created and migrated on open. Clones share one store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: SqlitePool,
    reader: SqlitePool,
    options: StoreOptions,
}

fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| backend(Db::Sqlite, what, e)
}

/// The embedded migrations (sqlx's `Migrator` without its `macros` feature: the SQL is
/// compiled in with `include_str!`, applied in order in a transaction each, and recorded
/// with checksums in `pocket_cluster_migrations`).
fn migrator() -> Migrator {
    let mut migrator = Migrator::with_migrations(vec![Migration::new(
        1,
        "tasks".into(),
        MigrationType::Simple,
        sqlx::SqlSafeStr::into_sql_str(include_str!("../../migrations/sqlite/0001_tasks.sql")),
        false,
    )]);
    migrator.dangerous_set_table_name("pocket_cluster_migrations");
    migrator
}

impl SqliteStore {
    /// Opens (creating if missing) the store in a file: a path, a `sqlite://path` URL, or
    /// `sqlite::memory:` for a private in-memory database (tests).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed URL; [`StoreError::Backend`] when the file
    /// cannot be opened or migrated.
    pub async fn open(path_or_url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let memory = path_or_url.contains(":memory:") || path_or_url.contains("mode=memory");
        let connect = if path_or_url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(path_or_url)
                .map_err(|e| StoreError::Invalid(format!("bad SQLite URL `{path_or_url}`: {e}")))?
        } else {
            SqliteConnectOptions::new().filename(path_or_url)
        };
        let connect = connect
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        // One writer connection, kept for good: an in-memory database lives as long as it.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect.clone())
            .await
            .map_err(db("opening the SQLite database"))?;
        migrator()
            .run(&writer)
            .await
            .map_err(|e| StoreError::Backend {
                message: "migrating the SQLite task store failed".into(),
                retryable: false,
                source: Some(Box::new(e)),
            })?;
        let reader = if memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(options.max_connections.unwrap_or(4))
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(connect)
                .await
                .map_err(db("opening the SQLite database"))?
        };
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                reader,
                options,
            }),
        })
    }

    /// Closes the connections, waiting for running statements.
    pub async fn close(&self) {
        self.inner.writer.close().await;
        self.inner.reader.close().await;
    }

    fn now(&self) -> i64 {
        self.inner.options.now_ms()
    }

    /// Why a worker's write changed nothing: the task is unknown, or not held by it.
    async fn not_held(&self, id: &TaskId, worker: &str) -> StoreError {
        match sqlx::query("SELECT 1 FROM pocket_tasks WHERE id = ?1")
            .bind(&id.0)
            .fetch_optional(&self.inner.writer)
            .await
        {
            Ok(Some(_)) => StoreError::LeaseLost {
                id: id.clone(),
                worker: worker.to_owned(),
            },
            Ok(None) => StoreError::NotFound(id.clone()),
            Err(e) => backend(Db::Sqlite, "looking up a task", e),
        }
    }

    async fn enqueue_inner(&self, task: NewTask) -> Result<Enqueued, StoreError> {
        validate(&task)?;
        let options = &self.inner.options;
        let now = self.now();
        let id = new_id();
        let capabilities = to_json(&task.capabilities)?;
        let metadata = to_json(&task.metadata)?;
        let insert = sqlx::query(
            "INSERT INTO pocket_tasks (id, agent, task, priority, capabilities, idempotency_key, \
             status, max_attempts, metadata, created_at, updated_at, run_after) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8, ?9, ?9, ?9) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&id.0)
        .bind(&task.agent)
        .bind(&task.task)
        .bind(task.priority)
        .bind(&capabilities)
        .bind(task.idempotency_key.as_deref())
        .bind(i64::from(task.max_attempts))
        .bind(&metadata)
        .bind(now);
        let by_key = "SELECT id FROM pocket_tasks WHERE idempotency_key = ?1";
        let Some(limit) = options.max_queued else {
            let done = insert
                .execute(&self.inner.writer)
                .await
                .map_err(db("enqueueing a task"))?;
            if done.rows_affected() == 1 {
                return Ok(Enqueued { id, created: true });
            }
            let existing: String = sqlx::query_scalar(by_key)
                .bind(task.idempotency_key.as_deref())
                .fetch_one(&self.inner.writer)
                .await
                .map_err(db("looking up an idempotency key"))?;
            return Ok(Enqueued {
                id: TaskId(existing),
                created: false,
            });
        };
        // Count and insert under SQLite's write lock, so the limit holds exactly.
        let mut tx = self
            .inner
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db("enqueueing a task"))?;
        if let Some(key) = &task.idempotency_key {
            let existing: Option<String> = sqlx::query_scalar(by_key)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("looking up an idempotency key"))?;
            if let Some(existing) = existing {
                return Ok(Enqueued {
                    id: TaskId(existing),
                    created: false,
                });
            }
        }
        let queued: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT 1 FROM pocket_tasks WHERE status = 'queued' LIMIT ?1) AS queued",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_one(&mut *tx)
        .await
        .map_err(db("counting queued tasks"))?;
        if u64::try_from(queued).unwrap_or(0) >= limit {
            return Err(options.queue_full(limit));
        }
        insert
            .execute(&mut *tx)
            .await
            .map_err(db("enqueueing a task"))?;
        tx.commit().await.map_err(db("enqueueing a task"))?;
        Ok(Enqueued { id, created: true })
    }

    async fn claim_inner(
        &self,
        worker: &str,
        agents: &[String],
        capabilities: &[String],
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        validate_worker(worker)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = self.now();
        let agents = if agents.is_empty() {
            None
        } else {
            Some(to_json(agents)?)
        };
        let rows = sqlx::query(concat!(
            "UPDATE pocket_tasks SET status = 'running', attempts = attempts + 1, \
             lease_owner = ?1, lease_expires_at = ?2, updated_at = ?3 \
             WHERE seq IN (SELECT seq FROM pocket_tasks \
                 WHERE status = 'queued' AND run_after <= ?3 \
                 AND (?4 IS NULL OR agent IN (SELECT value FROM json_each(?4))) \
                 AND (capabilities = '[]' OR NOT EXISTS (\
                     SELECT 1 FROM json_each(capabilities) AS need \
                     WHERE need.value NOT IN (SELECT value FROM json_each(?5)))) \
                 ORDER BY priority DESC, seq LIMIT ?6) \
             RETURNING seq, checkpoint, ",
            columns!()
        ))
        .bind(worker)
        .bind(now.saturating_add(duration_ms(lease)))
        .bind(now)
        .bind(agents)
        .bind(to_json(capabilities)?)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.writer)
        .await
        .map_err(db("claiming tasks"))?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.try_get("seq").map_err(db("reading a task row"))?;
            let record = record(row)?;
            let checkpoint: Option<String> = row
                .try_get("checkpoint")
                .map_err(db("reading a task row"))?;
            claimed.push((seq, record, checkpoint));
        }
        // RETURNING has no order: claim order is priority, then FIFO.
        claimed.sort_by_key(|(seq, record, _)| (std::cmp::Reverse(record.priority), *seq));
        let mut out = Vec::with_capacity(claimed.len());
        for (_, record, checkpoint) in claimed {
            let resume = match checkpoint {
                Some(text) => Some(self.resume(&record.id, &text).await?),
                None => None,
            };
            out.push(Claimed { record, resume });
        }
        Ok(out)
    }

    /// The checkpoint with the journal written since.
    async fn resume(&self, id: &TaskId, checkpoint: &str) -> Result<Checkpoint, StoreError> {
        let mut checkpoint: Checkpoint = from_json("checkpoint", checkpoint)?;
        let entries: Vec<String> =
            sqlx::query_scalar("SELECT entry FROM pocket_journal WHERE task_id = ?1 ORDER BY seq")
                .bind(&id.0)
                .fetch_all(&self.inner.writer)
                .await
                .map_err(db("reading the journal"))?;
        checkpoint.journal = entries
            .iter()
            .map(|e| from_json("entry", e))
            .collect::<Result<_, _>>()?;
        Ok(checkpoint)
    }

    async fn heartbeat_inner(
        &self,
        worker: &str,
        ids: &[TaskId],
        lease: Duration,
    ) -> Result<Vec<TaskId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let expires = self.now().saturating_add(duration_ms(lease));
        let held: Vec<String> = sqlx::query_scalar(concat!(
            "UPDATE pocket_tasks SET lease_expires_at = ?1 \
             WHERE lease_owner = ?2 AND ",
            leased!(),
            " AND id IN (SELECT value FROM json_each(?3)) RETURNING id"
        ))
        .bind(expires)
        .bind(worker)
        .bind(to_json(ids)?)
        .fetch_all(&self.inner.writer)
        .await
        .map_err(db("heartbeating"))?;
        Ok(ids
            .iter()
            .filter(|id| held.contains(&id.0))
            .cloned()
            .collect())
    }

    /// Runs a worker's write on a task it must hold.
    async fn held_write(
        &self,
        id: &TaskId,
        worker: &str,
        what: &'static str,
        query: sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<(), StoreError> {
        let done = query.execute(&self.inner.writer).await.map_err(db(what))?;
        if done.rows_affected() == 0 {
            return Err(self.not_held(id, worker).await);
        }
        Ok(())
    }

    async fn fail_inner(
        &self,
        id: &TaskId,
        worker: &str,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<FailOutcome, StoreError> {
        let now = self.now();
        if let Some(delay) = retry_in {
            let at = now.saturating_add(duration_ms(delay));
            let done = sqlx::query(concat!(
                "UPDATE pocket_tasks SET status = 'queued', run_after = ?4, error = ?3, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = ?5 \
                 WHERE id = ?1 AND lease_owner = ?2 AND ",
                leased!(),
                " AND attempts < max_attempts"
            ))
            .bind(&id.0)
            .bind(worker)
            .bind(error)
            .bind(at)
            .bind(now)
            .execute(&self.inner.writer)
            .await
            .map_err(db("failing a task"))?;
            if done.rows_affected() == 1 {
                return Ok(FailOutcome::Retrying { at: from_ms(at) });
            }
        }
        let query = sqlx::query(concat!(
            "UPDATE pocket_tasks SET status = 'failed', error = ?3, checkpoint = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = ?4 \
             WHERE id = ?1 AND lease_owner = ?2 AND ",
            leased!()
        ))
        .bind(&id.0)
        .bind(worker)
        .bind(error)
        .bind(now);
        self.held_write(id, worker, "failing a task", query).await?;
        Ok(FailOutcome::DeadLetter)
    }

    async fn cancel_inner(&self, id: &TaskId) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE pocket_tasks SET status = 'cancelled', checkpoint = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = ?2 \
             WHERE id = ?1 AND status IN ('queued', 'running', 'waiting_approval')",
        )
        .bind(&id.0)
        .bind(self.now())
        .execute(&self.inner.writer)
        .await
        .map_err(db("cancelling a task"))?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        match self.get_inner(id).await? {
            Some(_) => Ok(false),
            None => Err(StoreError::NotFound(id.clone())),
        }
    }

    async fn reclaim_inner(&self) -> Result<u64, StoreError> {
        let now = self.now();
        let dead = sqlx::query(
            "UPDATE pocket_tasks SET status = 'failed', error = ?2, checkpoint = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = ?1 \
             WHERE lease_owner IS NOT NULL AND lease_expires_at <= ?1 \
             AND attempts >= max_attempts",
        )
        .bind(now)
        .bind(lease_expired_error(true))
        .execute(&self.inner.writer)
        .await
        .map_err(db("reclaiming expired leases"))?;
        let requeued = sqlx::query(
            "UPDATE pocket_tasks SET status = 'queued', run_after = ?1, error = ?2, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = ?1 \
             WHERE lease_owner IS NOT NULL AND lease_expires_at <= ?1",
        )
        .bind(now)
        .bind(lease_expired_error(false))
        .execute(&self.inner.writer)
        .await
        .map_err(db("reclaiming expired leases"))?;
        Ok(dead.rows_affected() + requeued.rows_affected())
    }

    async fn get_inner(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM pocket_tasks WHERE id = ?1"
        ))
        .bind(&id.0)
        .fetch_optional(&self.inner.reader)
        .await
        .map_err(db("reading a task"))?;
        row.as_ref().map(record).transpose()
    }

    async fn list_inner(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
        let statuses = if filter.statuses.is_empty() {
            None
        } else {
            let names: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
            Some(to_json(&names)?)
        };
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM pocket_tasks \
             WHERE (?1 IS NULL OR status IN (SELECT value FROM json_each(?1))) \
             AND (?2 IS NULL OR agent = ?2) \
             ORDER BY seq DESC LIMIT ?3"
        ))
        .bind(statuses)
        .bind(filter.agent.as_deref())
        .bind(i64::try_from(list_limit(filter)).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.reader)
        .await
        .map_err(db("listing tasks"))?;
        rows.iter().map(record).collect()
    }

    async fn stats_inner(&self) -> Result<QueueStats, StoreError> {
        let by_status: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM pocket_tasks GROUP BY status")
                .fetch_all(&self.inner.reader)
                .await
                .map_err(db("counting tasks"))?;
        let by_priority: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT priority, count(*) FROM pocket_tasks WHERE status = 'queued' \
             GROUP BY priority ORDER BY priority DESC",
        )
        .fetch_all(&self.inner.reader)
        .await
        .map_err(db("counting queued tasks"))?;
        Ok(QueueStats {
            by_status: TaskStatus::ALL
                .into_iter()
                .map(|s| {
                    let n = by_status
                        .iter()
                        .find(|(name, _)| name == s.as_str())
                        .map_or(0, |(_, n)| *n);
                    (s, u64::try_from(n).unwrap_or(0))
                })
                .collect(),
            queued_by_priority: by_priority
                .into_iter()
                .map(|(p, n)| (p, u64::try_from(n).unwrap_or(0)))
                .collect(),
        })
    }
}

/// Decodes the [`columns!`] of a row.
fn record(row: &SqliteRow) -> Result<TaskRecord, StoreError> {
    fn col<'r, T>(row: &'r SqliteRow, name: &str) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
    {
        row.try_get(name).map_err(db("reading a task row"))
    }
    let status: String = col(row, "status")?;
    let status = TaskStatus::parse(&status)
        .ok_or_else(|| corrupt(format!("unknown task status `{status}`"), None))?;
    let result: Option<String> = col(row, "result")?;
    Ok(TaskRecord {
        id: TaskId(col(row, "id")?),
        agent: col(row, "agent")?,
        task: col(row, "task")?,
        priority: col(row, "priority")?,
        capabilities: from_json("capabilities", &col::<String>(row, "capabilities")?)?,
        idempotency_key: col(row, "idempotency_key")?,
        status,
        attempts: u32::try_from(col::<i64>(row, "attempts")?).unwrap_or(u32::MAX),
        max_attempts: u32::try_from(col::<i64>(row, "max_attempts")?).unwrap_or(u32::MAX),
        result: result
            .as_deref()
            .map(|r| from_json::<Value>("result", r))
            .transpose()?,
        error: col(row, "error")?,
        metadata: from_json("metadata", &col::<String>(row, "metadata")?)?,
        created_at: from_ms(col(row, "created_at")?),
        updated_at: from_ms(col(row, "updated_at")?),
        run_after: from_ms(col(row, "run_after")?),
        lease_owner: col(row, "lease_owner")?,
        lease_expires_at: col::<Option<i64>>(row, "lease_expires_at")?.map(from_ms),
    })
}

impl TaskStore for SqliteStore {
    fn enqueue(&self, task: NewTask) -> BoxFuture<'_, Result<Enqueued, StoreError>> {
        Box::pin(self.enqueue_inner(task))
    }

    fn claim<'a>(
        &'a self,
        worker: &'a str,
        agents: &'a [String],
        capabilities: &'a [String],
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>> {
        Box::pin(self.claim_inner(worker, agents, capabilities, limit, lease))
    }

    fn heartbeat<'a>(
        &'a self,
        worker: &'a str,
        ids: &'a [TaskId],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<TaskId>, StoreError>> {
        Box::pin(self.heartbeat_inner(worker, ids, lease))
    }

    fn checkpoint<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        state: CheckpointRef<'a>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            // The trigger on `checkpoint` clears the journal in the same statement.
            let query = sqlx::query(concat!(
                "UPDATE pocket_tasks SET checkpoint = ?3, updated_at = ?4 \
                 WHERE id = ?1 AND lease_owner = ?2 AND ",
                leased!()
            ))
            .bind(&id.0)
            .bind(worker)
            .bind(to_json(&state)?)
            .bind(self.now());
            self.held_write(id, worker, "saving a checkpoint", query)
                .await
        })
    }

    fn journal<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        entry: &'a JournalEntry,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let query = sqlx::query(concat!(
                "INSERT INTO pocket_journal (task_id, entry) SELECT id, ?3 FROM pocket_tasks \
                 WHERE id = ?1 AND lease_owner = ?2 AND ",
                leased!()
            ))
            .bind(&id.0)
            .bind(worker)
            .bind(to_json(entry)?);
            self.held_write(id, worker, "journaling a tool call", query)
                .await
        })
    }

    fn set_waiting<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        waiting: bool,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let status = if waiting {
                TaskStatus::WaitingApproval
            } else {
                TaskStatus::Running
            };
            let query = sqlx::query(concat!(
                "UPDATE pocket_tasks SET status = ?3, updated_at = ?4 \
                 WHERE id = ?1 AND lease_owner = ?2 AND ",
                leased!()
            ))
            .bind(&id.0)
            .bind(worker)
            .bind(status.as_str())
            .bind(self.now());
            self.held_write(id, worker, "marking a task waiting", query)
                .await
        })
    }

    fn complete<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        result: Value,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let query = sqlx::query(concat!(
                "UPDATE pocket_tasks SET status = 'succeeded', result = ?3, checkpoint = NULL, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = ?4 \
                 WHERE id = ?1 AND lease_owner = ?2 AND ",
                leased!()
            ))
            .bind(&id.0)
            .bind(worker)
            .bind(to_json(&result)?)
            .bind(self.now());
            self.held_write(id, worker, "completing a task", query)
                .await
        })
    }

    fn fail<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        error: &'a str,
        retry_in: Option<Duration>,
    ) -> BoxFuture<'a, Result<FailOutcome, StoreError>> {
        Box::pin(self.fail_inner(id, worker, error, retry_in))
    }

    fn cancel<'a>(&'a self, id: &'a TaskId) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.cancel_inner(id))
    }

    fn release<'a>(&'a self, worker: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let done = sqlx::query(concat!(
                "UPDATE pocket_tasks SET status = 'queued', run_after = ?2, lease_owner = NULL, \
                 lease_expires_at = NULL, updated_at = ?2 WHERE lease_owner = ?1 AND ",
                leased!()
            ))
            .bind(worker)
            .bind(self.now())
            .execute(&self.inner.writer)
            .await
            .map_err(db("releasing leases"))?;
            Ok(done.rows_affected())
        })
    }

    fn reclaim_expired(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.reclaim_inner())
    }

    fn get<'a>(&'a self, id: &'a TaskId) -> BoxFuture<'a, Result<Option<TaskRecord>, StoreError>> {
        Box::pin(self.get_inner(id))
    }

    fn list<'a>(
        &'a self,
        filter: &'a TaskFilter,
    ) -> BoxFuture<'a, Result<Vec<TaskRecord>, StoreError>> {
        Box::pin(self.list_inner(filter))
    }

    fn stats(&self) -> BoxFuture<'_, Result<QueueStats, StoreError>> {
        Box::pin(self.stats_inner())
    }
}
