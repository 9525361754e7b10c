//! The SQLite store: one file in WAL mode, written by one task that commits in groups.

use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use pocket_agent::{Checkpoint, CheckpointRef, JournalEntry};
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row, Sqlite};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::sql::{Db, backend, corrupt, from_json, retryable, to_json};
use super::{
    Claimed, Enqueued, FailOutcome, NewTask, QueueStats, StoreError, StoreOptions, TaskFilter,
    TaskId, TaskRecord, TaskStatus, TaskStore, duration_ms, from_ms, lease_expired_error,
    list_limit, log_reclaimed, new_id, validate, validate_worker,
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

/// At most this many queued writes share one transaction.
const MAX_BATCH: usize = 256;

/// Writes waiting for the writer beyond this make writers wait (back-pressure).
const QUEUE_DEPTH: usize = 1024;

/// A [`TaskStore`] in one SQLite file: the embedded default.
///
/// The file is in WAL mode with `synchronous=NORMAL` (a commit survives a crash of the
/// process; a power cut may lose the last commits, never corrupt the file) and a 5 s busy
/// timeout. One task owns the only writing connection and commits in groups: the writes
/// that queue up while a transaction runs go into the next one, so many workers share one
/// commit instead of paying one each, and this process never contends with itself for
/// SQLite's lock. Reads (`get`, `list`, `stats`) use a small pool of their own
/// ([`StoreOptions::max_connections`], default 4). Several processes may share the file; they
/// then contend on SQLite's lock (a busy database is a retryable [`StoreError::Backend`]).
/// The schema is created and migrated on open. Clones share one store; call
/// [`close`](Self::close) to stop the writer and wait for it.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    jobs: mpsc::Sender<Msg>,
    /// `None` for an in-memory database: it lives in the writer's connection alone.
    reader: Option<SqlitePool>,
    writer: Mutex<Option<JoinHandle<()>>>,
    options: StoreOptions,
}

fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| backend(Db::Sqlite, what, e)
}

/// One database error reported to every write of a failed transaction.
fn shared(what: &'static str, err: &Arc<sqlx::Error>) -> StoreError {
    StoreError::Backend {
        message: format!("{what} failed"),
        retryable: retryable(Db::Sqlite, err),
        source: Some(Box::new(Arc::clone(err))),
    }
}

fn closed() -> StoreError {
    StoreError::Backend {
        message: "the SQLite store is closed".into(),
        retryable: false,
        source: None,
    }
}

mod approvals;

/// The embedded migrations (sqlx's `Migrator` without its `macros` feature: the SQL is
/// compiled in with `include_str!`, applied in order in a transaction each, and recorded
/// with checksums in `pocket_cluster_migrations`).
fn migrator() -> Migrator {
    let mut migrator = Migrator::with_migrations(vec![
        Migration::new(
            1,
            "tasks".into(),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(include_str!("../../migrations/sqlite/0001_tasks.sql")),
            false,
        ),
        approvals::migration(),
    ]);
    migrator.dangerous_set_table_name("pocket_cluster_migrations");
    migrator
}

/// What the writer task receives.
enum Msg {
    Job(Box<dyn Job>),
    Close(oneshot::Sender<()>),
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Job(_) => "Job",
            Msg::Close(_) => "Close",
        })
    }
}

/// Delivers a write's result once its transaction's commit is known (`Some`: it failed).
type Reply = Box<dyn FnOnce(Option<&Arc<sqlx::Error>>) + Send>;

/// A write queued for the writer task.
trait Job: Send {
    /// Runs the statements; `true` with the reply when they hit a database error, after
    /// which the rest of the batch does not run (the transaction may be gone).
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, (Reply, bool)>;

    /// Answers without running.
    fn fail(self: Box<Self>, error: StoreError);
}

struct Typed<T, F> {
    work: F,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Typed<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
        + Send
        + 'static,
{
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, (Reply, bool)> {
        let Typed { work, reply } = *self;
        Box::pin(async move {
            let result = work(conn).await;
            let broke = matches!(result, Err(StoreError::Backend { .. }));
            let reply: Reply = Box::new(move |commit| {
                let _ = reply.send(match (commit, result) {
                    (Some(err), Ok(_)) => Err(shared("committing writes", err)),
                    (_, result) => result,
                });
            });
            (reply, broke)
        })
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

/// The writer task: takes every write queued so far (up to [`MAX_BATCH`]), runs them in one
/// `BEGIN IMMEDIATE` transaction, commits once and answers each.
async fn writer(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Msg>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut closing = None;
    while closing.is_none() {
        match rx.recv().await {
            None => break,
            Some(Msg::Close(done)) => closing = Some(done),
            Some(Msg::Job(job)) => batch.push(job),
        }
        while closing.is_none() && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            run_batch(&mut conn, &mut batch).await;
        }
    }
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Job(job) => job.fail(closed()),
            Msg::Close(done) => {
                let _ = done.send(());
            }
        }
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(cause = %e, "closing the SQLite task store's connection failed");
    }
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

async fn run_batch(conn: &mut SqliteConnection, batch: &mut Vec<Box<dyn Job>>) {
    // A write alone commits by itself: BEGIN and COMMIT would be two more round trips to
    // SQLite's thread. (Each statement of a job guards itself, so a job's statements need
    // no shared transaction; only other processes could come between them.)
    if batch.len() == 1
        && let Some(job) = batch.pop()
    {
        let (reply, _) = job.run(&mut *conn).await;
        reply(None);
        return;
    }
    if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
        let e = Arc::new(e);
        for job in batch.drain(..) {
            job.fail(shared("starting a write transaction", &e));
        }
        return;
    }
    let mut replies = Vec::with_capacity(batch.len());
    let mut jobs = batch.drain(..);
    for job in jobs.by_ref() {
        let (reply, broke) = job.run(&mut *conn).await;
        replies.push(reply);
        if broke {
            break;
        }
    }
    for job in jobs {
        job.fail(StoreError::Backend {
            message: "not written: an earlier write in its transaction failed".into(),
            retryable: true,
            source: None,
        });
    }
    let commit = sqlx::query("COMMIT")
        .execute(&mut *conn)
        .await
        .err()
        .map(Arc::new);
    if commit.is_some() {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    for reply in replies {
        reply(commit.as_ref());
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the store in a file: a path, a `sqlite://path` URL, or
    /// `sqlite::memory:` for a private in-memory database (tests). Must run inside a Tokio
    /// runtime: it spawns the writer task.
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
        // Migrate through a one-connection pool (`Migrator::run` on a bare connection makes
        // this future not `Send`), then keep that connection as the writer's.
        let setup = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect.clone())
            .await
            .map_err(db("opening the SQLite database"))?;
        migrator()
            .run(&setup)
            .await
            .map_err(|e| StoreError::Backend {
                message: "migrating the SQLite task store failed".into(),
                retryable: false,
                source: Some(Box::new(e)),
            })?;
        let conn = setup
            .acquire()
            .await
            .map_err(db("opening the SQLite database"))?
            .detach();
        setup.close().await;
        let reader = if memory {
            None
        } else {
            Some(
                SqlitePoolOptions::new()
                    .max_connections(options.max_connections.unwrap_or(4))
                    // A local file has no connection to lose: no ping before each use.
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(connect)
                    .await
                    .map_err(db("opening the SQLite database"))?,
            )
        };
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer = tokio::spawn(writer(conn, rx));
        Ok(Self {
            inner: Arc::new(Inner {
                jobs,
                reader,
                writer: Mutex::new(Some(writer)),
                options,
            }),
        })
    }

    /// Stops the writer after the writes queued so far and closes the connections; later
    /// calls fail. Waits for the writer to finish.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.inner.jobs.send(Msg::Close(done)).await.is_ok() {
            let _ = wait.await;
        }
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle
            && let Err(e) = handle.await
        {
            tracing::warn!(cause = %e, "the SQLite task store's writer ended abnormally");
        }
        if let Some(reader) = &self.inner.reader {
            reader.close().await;
        }
    }

    fn now(&self) -> i64 {
        self.inner.options.now_ms()
    }

    /// Runs `work` on the writer's connection, in its next transaction.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let (reply, result) = oneshot::channel();
        self.inner
            .jobs
            .send(Msg::Job(Box::new(Typed { work, reply })))
            .await
            .map_err(|_| closed())?;
        result.await.map_err(|_| closed())?
    }

    /// Runs `work` on a reading connection (the writer's, for an in-memory database).
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        match &self.inner.reader {
            Some(pool) => {
                let mut conn = pool.acquire().await.map_err(db("reading tasks"))?;
                work(&mut conn).await
            }
            None => self.write(work).await,
        }
    }

    async fn enqueue_inner(&self, task: NewTask) -> Result<Enqueued, StoreError> {
        validate(&task)?;
        let now = self.now();
        let capabilities = to_json(&task.capabilities)?;
        let metadata = to_json(&task.metadata)?;
        let max_queued = self.inner.options.max_queued;
        let full = max_queued.map(|limit| self.inner.options.queue_full(limit));
        self.write(move |conn| {
            Box::pin(async move {
                let by_key = "SELECT id FROM pocket_tasks WHERE idempotency_key = ?1";
                if let Some(limit) = max_queued {
                    // The writer runs one job at a time: count-then-insert is exact.
                    if let Some(key) = &task.idempotency_key {
                        let existing: Option<String> = sqlx::query_scalar(by_key)
                            .bind(key)
                            .fetch_optional(&mut *conn)
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
                        "SELECT count(*) FROM \
                         (SELECT 1 FROM pocket_tasks WHERE status = 'queued' LIMIT ?1) AS queued",
                    )
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db("counting queued tasks"))?;
                    if u64::try_from(queued).unwrap_or(0) >= limit {
                        return Err(full.unwrap_or_else(closed));
                    }
                }
                let id = new_id();
                let done = sqlx::query(
                    "INSERT INTO pocket_tasks (id, agent, task, priority, capabilities, \
                     idempotency_key, status, max_attempts, metadata, created_at, updated_at, \
                     run_after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8, ?9, ?9, ?9) \
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
                .bind(now)
                .execute(&mut *conn)
                .await
                .map_err(db("enqueueing a task"))?;
                if done.rows_affected() == 1 {
                    return Ok(Enqueued { id, created: true });
                }
                let existing: String = sqlx::query_scalar(by_key)
                    .bind(task.idempotency_key.as_deref())
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db("looking up an idempotency key"))?;
                Ok(Enqueued {
                    id: TaskId(existing),
                    created: false,
                })
            })
        })
        .await
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
        let capabilities = to_json(capabilities)?;
        let worker = worker.to_owned();
        let expires = now.saturating_add(duration_ms(lease));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |conn| {
            Box::pin(async move {
                // INDEXED BY: without statistics the planner would take the status index and
                // sort every queued task on each claim.
                let rows = sqlx::query(concat!(
                    "UPDATE pocket_tasks SET status = 'running', attempts = attempts + 1, \
                     lease_owner = ?1, lease_expires_at = ?2, updated_at = ?3 \
                     WHERE seq IN (SELECT seq FROM pocket_tasks INDEXED BY pocket_tasks_queue \
                         WHERE status = 'queued' AND run_after <= ?3 \
                         AND (?4 IS NULL OR agent IN (SELECT value FROM json_each(?4))) \
                         AND (capabilities = '[]' OR NOT EXISTS (\
                             SELECT 1 FROM json_each(capabilities) AS need \
                             WHERE need.value NOT IN (SELECT value FROM json_each(?5)))) \
                         ORDER BY priority DESC, seq LIMIT ?6) \
                     RETURNING seq, checkpoint, ",
                    columns!()
                ))
                .bind(&worker)
                .bind(expires)
                .bind(now)
                .bind(agents)
                .bind(capabilities)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await
                .map_err(db("claiming tasks"))?;
                let mut claimed = Vec::with_capacity(rows.len());
                for row in &rows {
                    let seq: i64 = row.try_get("seq").map_err(db("reading a task row"))?;
                    let checkpoint: Option<String> = row
                        .try_get("checkpoint")
                        .map_err(db("reading a task row"))?;
                    claimed.push((seq, record(row)?, checkpoint));
                }
                // RETURNING has no order: claim order is priority, then FIFO.
                claimed.sort_by_key(|(seq, record, _)| (std::cmp::Reverse(record.priority), *seq));
                let mut out = Vec::with_capacity(claimed.len());
                for (_, record, checkpoint) in claimed {
                    let resume = match checkpoint {
                        Some(text) => Some(resume(conn, &record.id, &text).await?),
                        None => None,
                    };
                    out.push(Claimed { record, resume });
                }
                Ok(out)
            })
        })
        .await
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
        let worker = worker.to_owned();
        let list = to_json(ids)?;
        let held: Vec<String> = self
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query_scalar(concat!(
                        "UPDATE pocket_tasks SET lease_expires_at = ?1 \
                         WHERE lease_owner = ?2 AND ",
                        leased!(),
                        " AND id IN (SELECT value FROM json_each(?3)) RETURNING id"
                    ))
                    .bind(expires)
                    .bind(&worker)
                    .bind(&list)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db("heartbeating"))
                })
            })
            .await?;
        Ok(ids
            .iter()
            .filter(|id| held.contains(&id.0))
            .cloned()
            .collect())
    }

    /// A worker's write on a task it must hold: one statement, then why it changed nothing.
    async fn held_write(
        &self,
        id: &TaskId,
        worker: &str,
        what: &'static str,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<(), StoreError> {
        let id = id.clone();
        let worker = worker.to_owned();
        self.write(move |conn| {
            Box::pin(async move {
                let query = sqlx::query(sql).bind(&id.0).bind(&worker);
                let done = args
                    .into_iter()
                    .fold(query, |query, arg| arg.bind_to(query))
                    .execute(&mut *conn)
                    .await
                    .map_err(db(what))?;
                if done.rows_affected() == 0 {
                    return Err(not_held(conn, &id, &worker).await);
                }
                Ok(())
            })
        })
        .await
    }

    async fn fail_inner(
        &self,
        id: &TaskId,
        worker: &str,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<FailOutcome, StoreError> {
        let now = self.now();
        let retry_at = retry_in.map(|delay| now.saturating_add(duration_ms(delay)));
        let (id, worker, error) = (id.clone(), worker.to_owned(), error.to_owned());
        self.write(move |conn| {
            Box::pin(async move {
                if let Some(at) = retry_at {
                    let done = sqlx::query(concat!(
                        "UPDATE pocket_tasks SET status = 'queued', run_after = ?4, error = ?3, \
                         lease_owner = NULL, lease_expires_at = NULL, updated_at = ?5 \
                         WHERE id = ?1 AND lease_owner = ?2 AND ",
                        leased!(),
                        " AND attempts < max_attempts"
                    ))
                    .bind(&id.0)
                    .bind(&worker)
                    .bind(&error)
                    .bind(at)
                    .bind(now)
                    .execute(&mut *conn)
                    .await
                    .map_err(db("failing a task"))?;
                    if done.rows_affected() == 1 {
                        return Ok(FailOutcome::Retrying { at: from_ms(at) });
                    }
                }
                let done = sqlx::query(concat!(
                    "UPDATE pocket_tasks SET status = 'failed', error = ?3, checkpoint = NULL, \
                     lease_owner = NULL, lease_expires_at = NULL, updated_at = ?4 \
                     WHERE id = ?1 AND lease_owner = ?2 AND ",
                    leased!()
                ))
                .bind(&id.0)
                .bind(&worker)
                .bind(&error)
                .bind(now)
                .execute(&mut *conn)
                .await
                .map_err(db("failing a task"))?;
                if done.rows_affected() == 0 {
                    return Err(not_held(conn, &id, &worker).await);
                }
                Ok(FailOutcome::DeadLetter)
            })
        })
        .await
    }

    async fn cancel_inner(&self, id: &TaskId) -> Result<bool, StoreError> {
        let now = self.now();
        let id = id.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE pocket_tasks SET status = 'cancelled', checkpoint = NULL, \
                     lease_owner = NULL, lease_expires_at = NULL, updated_at = ?2 \
                     WHERE id = ?1 AND status IN ('queued', 'running', 'waiting_approval')",
                )
                .bind(&id.0)
                .bind(now)
                .execute(&mut *conn)
                .await
                .map_err(db("cancelling a task"))?;
                if done.rows_affected() == 1 {
                    return Ok(true);
                }
                if exists(conn, &id).await? {
                    Ok(false)
                } else {
                    Err(StoreError::NotFound(id))
                }
            })
        })
        .await
    }

    async fn release_inner(&self, worker: &str) -> Result<u64, StoreError> {
        let now = self.now();
        let worker = worker.to_owned();
        self.write(move |conn| {
            Box::pin(async move {
                let done = sqlx::query(concat!(
                    "UPDATE pocket_tasks SET status = 'queued', run_after = ?2, \
                     lease_owner = NULL, lease_expires_at = NULL, updated_at = ?2 \
                     WHERE lease_owner = ?1 AND ",
                    leased!()
                ))
                .bind(&worker)
                .bind(now)
                .execute(&mut *conn)
                .await
                .map_err(db("releasing leases"))?;
                Ok(done.rows_affected())
            })
        })
        .await
    }

    async fn reclaim_inner(&self) -> Result<u64, StoreError> {
        let now = self.now();
        let (dead, requeued) = self
            .write(move |conn| {
                Box::pin(async move {
                    let dead = sqlx::query(
                        "UPDATE pocket_tasks SET status = 'failed', error = ?2, checkpoint = NULL, \
                         lease_owner = NULL, lease_expires_at = NULL, updated_at = ?1 \
                         WHERE lease_owner IS NOT NULL AND lease_expires_at <= ?1 \
                         AND attempts >= max_attempts",
                    )
                    .bind(now)
                    .bind(lease_expired_error(true))
                    .execute(&mut *conn)
                    .await
                    .map_err(db("reclaiming expired leases"))?;
                    let requeued = sqlx::query(
                        "UPDATE pocket_tasks SET status = 'queued', run_after = ?1, error = ?2, \
                         lease_owner = NULL, lease_expires_at = NULL, updated_at = ?1 \
                         WHERE lease_owner IS NOT NULL AND lease_expires_at <= ?1",
                    )
                    .bind(now)
                    .bind(lease_expired_error(false))
                    .execute(&mut *conn)
                    .await
                    .map_err(db("reclaiming expired leases"))?;
                    Ok((dead.rows_affected(), requeued.rows_affected()))
                })
            })
            .await?;
        log_reclaimed(dead, requeued);
        Ok(dead + requeued)
    }

    async fn get_inner(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let id = id.clone();
        self.read(move |conn| {
            Box::pin(async move {
                let row = sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM pocket_tasks WHERE id = ?1"
                ))
                .bind(&id.0)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db("reading a task"))?;
                row.as_ref().map(record).transpose()
            })
        })
        .await
    }

    async fn list_inner(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
        let statuses = if filter.statuses.is_empty() {
            None
        } else {
            let names: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
            Some(to_json(&names)?)
        };
        let agent = filter.agent.clone();
        let limit = i64::try_from(list_limit(filter)).unwrap_or(i64::MAX);
        self.read(move |conn| {
            Box::pin(async move {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM pocket_tasks \
                     WHERE (?1 IS NULL OR status IN (SELECT value FROM json_each(?1))) \
                     AND (?2 IS NULL OR agent = ?2) \
                     ORDER BY seq DESC LIMIT ?3"
                ))
                .bind(statuses)
                .bind(agent)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await
                .map_err(db("listing tasks"))?;
                rows.iter().map(record).collect()
            })
        })
        .await
    }

    async fn stats_inner(&self) -> Result<QueueStats, StoreError> {
        let (by_status, by_priority) = self
            .read(move |conn| {
                Box::pin(async move {
                    let by_status: Vec<(String, i64)> =
                        sqlx::query_as("SELECT status, count(*) FROM pocket_tasks GROUP BY status")
                            .fetch_all(&mut *conn)
                            .await
                            .map_err(db("counting tasks"))?;
                    let by_priority: Vec<(i32, i64)> = sqlx::query_as(
                        "SELECT priority, count(*) FROM pocket_tasks WHERE status = 'queued' \
                         GROUP BY priority ORDER BY priority DESC",
                    )
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db("counting queued tasks"))?;
                    Ok((by_status, by_priority))
                })
            })
            .await?;
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

/// A value [`SqliteStore::held_write`] binds after the id (`?1`) and worker (`?2`).
enum Arg {
    Text(String),
    Int(i64),
}

impl Arg {
    fn bind_to<'q>(
        self,
        query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
        match self {
            Arg::Text(text) => query.bind(text),
            Arg::Int(n) => query.bind(n),
        }
    }
}

async fn exists(conn: &mut SqliteConnection, id: &TaskId) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT 1 FROM pocket_tasks WHERE id = ?1")
        .bind(&id.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db("looking up a task"))?;
    Ok(row.is_some())
}

/// Why a worker's write changed nothing: the task is unknown, or not held by it.
async fn not_held(conn: &mut SqliteConnection, id: &TaskId, worker: &str) -> StoreError {
    match exists(conn, id).await {
        Ok(true) => StoreError::LeaseLost {
            id: id.clone(),
            worker: worker.to_owned(),
        },
        Ok(false) => StoreError::NotFound(id.clone()),
        Err(e) => e,
    }
}

/// The checkpoint with the journal written since.
async fn resume(
    conn: &mut SqliteConnection,
    id: &TaskId,
    checkpoint: &str,
) -> Result<Checkpoint, StoreError> {
    let mut checkpoint: Checkpoint = from_json("checkpoint", checkpoint)?;
    let entries: Vec<String> =
        sqlx::query_scalar("SELECT entry FROM pocket_journal WHERE task_id = ?1 ORDER BY seq")
            .bind(&id.0)
            .fetch_all(&mut *conn)
            .await
            .map_err(db("reading the journal"))?;
    checkpoint.journal = entries
        .iter()
        .map(|e| from_json("entry", e))
        .collect::<Result<_, _>>()?;
    Ok(checkpoint)
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
            let sql = concat!(
                "UPDATE pocket_tasks SET checkpoint = ?3, updated_at = ?4 \
                 WHERE id = ?1 AND lease_owner = ?2 AND ",
                leased!()
            );
            let args = vec![Arg::Text(to_json(&state)?), Arg::Int(self.now())];
            self.held_write(id, worker, "saving a checkpoint", sql, args)
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
            let sql = concat!(
                "INSERT INTO pocket_journal (task_id, entry) SELECT id, ?3 FROM pocket_tasks \
                 WHERE id = ?1 AND lease_owner = ?2 AND ",
                leased!()
            );
            let args = vec![Arg::Text(to_json(entry)?)];
            self.held_write(id, worker, "journaling a tool call", sql, args)
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
            let sql = concat!(
                "UPDATE pocket_tasks SET status = ?3, updated_at = ?4 \
                 WHERE id = ?1 AND lease_owner = ?2 AND ",
                leased!()
            );
            let args = vec![Arg::Text(status.as_str().to_owned()), Arg::Int(self.now())];
            self.held_write(id, worker, "marking a task waiting", sql, args)
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
            let sql = concat!(
                "UPDATE pocket_tasks SET status = 'succeeded', result = ?3, checkpoint = NULL, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = ?4 \
                 WHERE id = ?1 AND lease_owner = ?2 AND ",
                leased!()
            );
            let args = vec![Arg::Text(to_json(&result)?), Arg::Int(self.now())];
            self.held_write(id, worker, "completing a task", sql, args)
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
        Box::pin(self.release_inner(worker))
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
