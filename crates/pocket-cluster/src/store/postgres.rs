//! The PostgreSQL store: several machines on one database, claims with `SKIP LOCKED`.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use pocket_agent::{Checkpoint, CheckpointRef, JournalEntry};
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row};

use super::sql::{Db, backend, corrupt, from_json, retryable, to_json};
use super::{
    Claimed, Enqueued, FailOutcome, NewTask, QueueStats, StoreError, StoreOptions, TaskFilter,
    TaskId, TaskRecord, TaskStatus, TaskStore, duration_ms, from_ms, lease_expired_error,
    list_limit, log_reclaimed, new_id, validate, validate_worker,
};
use tokio::sync::{Semaphore, mpsc, oneshot};

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

/// The advisory lock that makes [`StoreOptions::max_queued`] exact across machines.
const ENQUEUE_LOCK: i64 = 0x706f_636b_6574_7131; // "pocketq1"

/// A [`TaskStore`] on PostgreSQL, for several machines sharing one queue.
///
/// Claims take rows with `FOR UPDATE SKIP LOCKED` in one `UPDATE … RETURNING` statement, so
/// concurrent claimers on any number of machines skip each other's rows instead of waiting
/// or double-claiming. Times come from the store's clock, passed as parameters, never from
/// the server's `now()`. Tables (`pocket_tasks`, `pocket_journal`) go in the first schema of
/// the connection's `search_path`: to use another schema, add
/// `?options[search_path]=my_schema` to the URL. The schema is migrated on connect. Clones
/// share one pool ([`StoreOptions::max_connections`], default 10).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    options: StoreOptions,
    /// Checkpoints and completions, for the batcher task.
    held: mpsc::Sender<HeldReq>,
}

fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| backend(Db::Postgres, what, e)
}

mod approvals;

/// The embedded migrations (sqlx's `Migrator` without its `macros` feature: the SQL is
/// compiled in with `include_str!`, applied in order in a transaction each under an advisory
/// lock, and recorded with checksums in `pocket_cluster_migrations`).
fn migrator() -> Migrator {
    let mut migrator = Migrator::with_migrations(vec![
        Migration::new(
            1,
            "tasks".into(),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(include_str!(
                "../../migrations/postgres/0001_tasks.sql"
            )),
            false,
        ),
        approvals::migration(),
    ]);
    migrator.dangerous_set_table_name("pocket_cluster_migrations");
    migrator
}

impl PostgresStore {
    /// Connects to `postgres://user:password@host:port/database` (TLS with `?sslmode=…`)
    /// and creates or migrates the tables.
    ///
    /// # Errors
    /// [`StoreError::BadUrl`] for a malformed URL; [`StoreError::Backend`] when the server
    /// cannot be reached (retryable) or the schema cannot be migrated.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(format!("not a PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.unwrap_or(10))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect)
            .await
            .map_err(db("connecting to PostgreSQL"))?;
        migrator()
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend {
                message: "migrating the PostgreSQL task store failed".into(),
                retryable: false,
                source: Some(Box::new(e)),
            })?;
        let (held, rx) = mpsc::channel(MAX_BATCH * BATCHES_IN_FLIGHT);
        tokio::spawn(batcher(pool.clone(), rx));
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                options,
                held,
            }),
        })
    }

    /// Closes the connections, waiting for running statements.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    fn now(&self) -> i64 {
        self.inner.options.now_ms()
    }

    /// Why a worker's write changed nothing: the task is unknown, or not held by it.
    async fn not_held(&self, id: &TaskId, worker: &str) -> StoreError {
        not_held(&self.inner.pool, id, worker).await
    }

    /// A checkpoint or completion, merged by the batcher with the others sent meanwhile.
    async fn held_op(
        &self,
        kind: Held,
        id: &TaskId,
        worker: &str,
        value: String,
    ) -> Result<(), StoreError> {
        let (reply, result) = oneshot::channel();
        let req = HeldReq {
            kind,
            id: id.clone(),
            worker: worker.to_owned(),
            value,
            now: self.now(),
            reply,
        };
        let gone = || StoreError::Backend {
            message: "the PostgreSQL store's batcher stopped".into(),
            retryable: false,
            source: None,
        };
        self.inner.held.send(req).await.map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }

    async fn enqueue_inner(&self, task: NewTask) -> Result<Enqueued, StoreError> {
        validate(&task)?;
        let options = &self.inner.options;
        let now = self.now();
        let id = new_id();
        let metadata = to_json(&task.metadata)?;
        let insert = sqlx::query(
            "INSERT INTO pocket_tasks (id, agent, task, priority, capabilities, idempotency_key, \
             status, max_attempts, metadata, created_at, updated_at, run_after) \
             VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9, $9, $9) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&id.0)
        .bind(&task.agent)
        .bind(&task.task)
        .bind(task.priority)
        .bind(&task.capabilities)
        .bind(task.idempotency_key.as_deref())
        .bind(i64::from(task.max_attempts))
        .bind(&metadata)
        .bind(now);
        let by_key = "SELECT id FROM pocket_tasks WHERE idempotency_key = $1";
        let Some(limit) = options.max_queued else {
            let done = insert
                .execute(&self.inner.pool)
                .await
                .map_err(db("enqueueing a task"))?;
            if done.rows_affected() == 1 {
                return Ok(Enqueued { id, created: true });
            }
            let existing: String = sqlx::query_scalar(by_key)
                .bind(task.idempotency_key.as_deref())
                .fetch_one(&self.inner.pool)
                .await
                .map_err(db("looking up an idempotency key"))?;
            return Ok(Enqueued {
                id: TaskId(existing),
                created: false,
            });
        };
        // Count and insert under an advisory lock, so the limit holds exactly.
        let mut tx = self
            .inner
            .pool
            .begin()
            .await
            .map_err(db("enqueueing a task"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ENQUEUE_LOCK)
            .execute(&mut *tx)
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
            "SELECT count(*) FROM (SELECT 1 FROM pocket_tasks WHERE status = 'queued' LIMIT $1) AS queued",
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
        let rows = sqlx::query(concat!(
            "UPDATE pocket_tasks SET status = 'running', attempts = attempts + 1, \
             lease_owner = $1, lease_expires_at = $2, updated_at = $3 \
             WHERE seq IN (SELECT seq FROM pocket_tasks \
                 WHERE status = 'queued' AND run_after <= $3 \
                 AND (cardinality($4::text[]) = 0 OR agent = ANY($4::text[])) \
                 AND capabilities <@ $5::text[] \
                 ORDER BY priority DESC, seq LIMIT $6 \
                 FOR UPDATE SKIP LOCKED) \
             RETURNING seq, checkpoint, ",
            columns!()
        ))
        .bind(worker)
        .bind(now.saturating_add(duration_ms(lease)))
        .bind(now)
        .bind(agents)
        .bind(capabilities)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
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
            sqlx::query_scalar("SELECT entry FROM pocket_journal WHERE task_id = $1 ORDER BY seq")
                .bind(&id.0)
                .fetch_all(&self.inner.pool)
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
            "UPDATE pocket_tasks SET lease_expires_at = $1 \
             WHERE lease_owner = $2 AND ",
            leased!(),
            " AND id = ANY($3::text[]) RETURNING id"
        ))
        .bind(expires)
        .bind(worker)
        .bind(ids.iter().map(|id| id.0.as_str()).collect::<Vec<_>>())
        .fetch_all(&self.inner.pool)
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
        query: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<(), StoreError> {
        let done = query.execute(&self.inner.pool).await.map_err(db(what))?;
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
                "UPDATE pocket_tasks SET status = 'queued', run_after = $4, error = $3, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = $5 \
                 WHERE id = $1 AND lease_owner = $2 AND ",
                leased!(),
                " AND attempts < max_attempts"
            ))
            .bind(&id.0)
            .bind(worker)
            .bind(error)
            .bind(at)
            .bind(now)
            .execute(&self.inner.pool)
            .await
            .map_err(db("failing a task"))?;
            if done.rows_affected() == 1 {
                return Ok(FailOutcome::Retrying { at: from_ms(at) });
            }
        }
        let query = sqlx::query(concat!(
            "UPDATE pocket_tasks SET status = 'failed', error = $3, checkpoint = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $4 \
             WHERE id = $1 AND lease_owner = $2 AND ",
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
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $2 \
             WHERE id = $1 AND status IN ('queued', 'running', 'waiting_approval')",
        )
        .bind(&id.0)
        .bind(self.now())
        .execute(&self.inner.pool)
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
            "UPDATE pocket_tasks SET status = 'failed', error = $2, checkpoint = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
             WHERE lease_owner IS NOT NULL AND lease_expires_at <= $1 \
             AND attempts >= max_attempts",
        )
        .bind(now)
        .bind(lease_expired_error(true))
        .execute(&self.inner.pool)
        .await
        .map_err(db("reclaiming expired leases"))?;
        let requeued = sqlx::query(
            "UPDATE pocket_tasks SET status = 'queued', run_after = $1, error = $2, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
             WHERE lease_owner IS NOT NULL AND lease_expires_at <= $1",
        )
        .bind(now)
        .bind(lease_expired_error(false))
        .execute(&self.inner.pool)
        .await
        .map_err(db("reclaiming expired leases"))?;
        log_reclaimed(dead.rows_affected(), requeued.rows_affected());
        Ok(dead.rows_affected() + requeued.rows_affected())
    }

    async fn get_inner(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM pocket_tasks WHERE id = $1"
        ))
        .bind(&id.0)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(db("reading a task"))?;
        row.as_ref().map(record).transpose()
    }

    async fn list_inner(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
        let statuses = if filter.statuses.is_empty() {
            None
        } else {
            Some(
                filter
                    .statuses
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>(),
            )
        };
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM pocket_tasks \
             WHERE ($1::text[] IS NULL OR status = ANY($1::text[])) \
             AND ($2::text IS NULL OR agent = $2) \
             ORDER BY seq DESC LIMIT $3"
        ))
        .bind(statuses)
        .bind(filter.agent.as_deref())
        .bind(i64::try_from(list_limit(filter)).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db("listing tasks"))?;
        rows.iter().map(record).collect()
    }

    async fn stats_inner(&self) -> Result<QueueStats, StoreError> {
        let by_status: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM pocket_tasks GROUP BY status")
                .fetch_all(&self.inner.pool)
                .await
                .map_err(db("counting tasks"))?;
        let by_priority: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT priority, count(*) FROM pocket_tasks WHERE status = 'queued' \
             GROUP BY priority ORDER BY priority DESC",
        )
        .fetch_all(&self.inner.pool)
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
fn record(row: &PgRow) -> Result<TaskRecord, StoreError> {
    fn col<'r, T>(row: &'r PgRow, name: &str) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
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
        capabilities: col(row, "capabilities")?,
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

/// At most this many checkpoints or completions share one statement.
const MAX_BATCH: usize = 512;

/// At most this many merged statements run at once (PostgreSQL commits them together).
const BATCHES_IN_FLIGHT: usize = 4;

/// What a [`HeldReq`] writes on a task its worker holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Checkpoint,
    Complete,
}

/// A checkpoint or completion waiting for the batcher.
struct HeldReq {
    kind: Held,
    id: TaskId,
    worker: String,
    /// The checkpoint's or result's JSON.
    value: String,
    now: i64,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// Takes the checkpoints and completions queued so far and writes each kind with one
/// `UPDATE … FROM UNNEST(…)` (one commit, one disk flush for the lot), up to
/// [`BATCHES_IN_FLIGHT`] batches at once. Ends when the store is dropped.
async fn batcher(pool: PgPool, mut rx: mpsc::Receiver<HeldReq>) {
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        // Gather what queued while we waited for a slot.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let (checkpoints, completions): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|r| r.kind == Held::Checkpoint);
            // Checkpoints first: a run's checkpoint and completion sent together land in order.
            write_held(&pool, Held::Checkpoint, checkpoints).await;
            write_held(&pool, Held::Complete, completions).await;
            drop(slot);
        });
    }
}

/// Writes one kind of a batch: a round per statement (a task named twice goes in a later
/// round, so each write lands in order), rows in id order (concurrent batches lock in the
/// same order).
async fn write_held(pool: &PgPool, kind: Held, mut reqs: Vec<HeldReq>) {
    reqs.sort_by(|a, b| a.id.cmp(&b.id));
    while !reqs.is_empty() {
        let mut round = Vec::with_capacity(reqs.len());
        let mut later = Vec::new();
        for req in reqs {
            if round.last().is_some_and(|r: &HeldReq| r.id == req.id) {
                later.push(req);
            } else {
                round.push(req);
            }
        }
        reqs = later;
        let results = held_round(pool, kind, &round).await;
        for (req, result) in round.into_iter().zip(results) {
            let _ = req.reply.send(result);
        }
    }
}

async fn held_round(pool: &PgPool, kind: Held, reqs: &[HeldReq]) -> Vec<Result<(), StoreError>> {
    let (sql, what) = match kind {
        // The trigger on `checkpoint` clears each task's journal in the same statement.
        Held::Checkpoint => (
            concat!(
                "UPDATE pocket_tasks AS t SET checkpoint = b.v, updated_at = b.now \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[]) AS b(id, w, v, now) \
                 WHERE t.id = b.id AND t.lease_owner = b.w AND t.",
                leased!(),
                " RETURNING t.id"
            ),
            "saving checkpoints",
        ),
        Held::Complete => (
            concat!(
                "UPDATE pocket_tasks AS t SET status = 'succeeded', result = b.v, \
                 checkpoint = NULL, lease_owner = NULL, lease_expires_at = NULL, \
                 updated_at = b.now \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[]) AS b(id, w, v, now) \
                 WHERE t.id = b.id AND t.lease_owner = b.w AND t.",
                leased!(),
                " RETURNING t.id"
            ),
            "completing tasks",
        ),
    };
    let done: Result<Vec<String>, _> = sqlx::query_scalar(sql)
        .bind(reqs.iter().map(|r| r.id.0.as_str()).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| r.worker.as_str()).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| r.value.as_str()).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| r.now).collect::<Vec<_>>())
        .fetch_all(pool)
        .await;
    let done: HashSet<String> = match done {
        Ok(done) => done.into_iter().collect(),
        Err(e) => {
            let e = Arc::new(e);
            return reqs
                .iter()
                .map(|_| {
                    Err(StoreError::Backend {
                        message: format!("{what} failed"),
                        retryable: retryable(Db::Postgres, &e),
                        source: Some(Box::new(Arc::clone(&e))),
                    })
                })
                .collect();
        }
    };
    let mut results = Vec::with_capacity(reqs.len());
    for req in reqs {
        if done.contains(&req.id.0) {
            results.push(Ok(()));
        } else {
            results.push(Err(not_held(pool, &req.id, &req.worker).await));
        }
    }
    results
}

/// Why a worker's write changed nothing: the task is unknown, or not held by it.
async fn not_held(pool: &PgPool, id: &TaskId, worker: &str) -> StoreError {
    match sqlx::query("SELECT 1 FROM pocket_tasks WHERE id = $1")
        .bind(&id.0)
        .fetch_optional(pool)
        .await
    {
        Ok(Some(_)) => StoreError::LeaseLost {
            id: id.clone(),
            worker: worker.to_owned(),
        },
        Ok(None) => StoreError::NotFound(id.clone()),
        Err(e) => backend(Db::Postgres, "looking up a task", e),
    }
}

impl TaskStore for PostgresStore {
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
            let state = to_json(&state)?;
            self.held_op(Held::Checkpoint, id, worker, state).await
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
                "INSERT INTO pocket_journal (task_id, entry) SELECT id, $3 FROM pocket_tasks \
                 WHERE id = $1 AND lease_owner = $2 AND ",
                leased!(),
                // Waits for a concurrent cancel, then sees it: no entry for a cancelled task.
                " FOR SHARE"
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
                "UPDATE pocket_tasks SET status = $3, updated_at = $4 \
                 WHERE id = $1 AND lease_owner = $2 AND ",
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
            let result = to_json(&result)?;
            self.held_op(Held::Complete, id, worker, result).await
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
                "UPDATE pocket_tasks SET status = 'queued', run_after = $2, lease_owner = NULL, \
                 lease_expires_at = NULL, updated_at = $2 WHERE lease_owner = $1 AND ",
                leased!()
            ))
            .bind(worker)
            .bind(self.now())
            .execute(&self.inner.pool)
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

    fn approvals(&self) -> Option<&dyn super::ApprovalStore> {
        Some(self)
    }
}
