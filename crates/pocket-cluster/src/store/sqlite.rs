//! The SQLite store: one file in WAL mode, written by one task that commits in groups.

use std::collections::{HashMap, HashSet};
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
    Op(Box<Op>),
    Close(oneshot::Sender<()>),
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Job(_) => "Job",
            Msg::Op(_) => "Op",
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
/// `BEGIN IMMEDIATE` transaction (merging enqueues, claims, checkpoints and completions into
/// a statement per kind), commits once and answers each.
async fn writer(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Msg>, options: StoreOptions) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut ops = Ops::default();
    let mut closing = None;
    while closing.is_none() {
        match rx.recv().await {
            None => break,
            Some(Msg::Close(done)) => closing = Some(done),
            Some(Msg::Job(job)) => batch.push(job),
            Some(Msg::Op(op)) => ops.push(*op),
        }
        while closing.is_none() && batch.len() + ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Op(op)) => ops.push(*op),
                Ok(Msg::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() || ops.len() > 0 {
            run_batch(&mut conn, &mut batch, &mut ops, &options).await;
        }
    }
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Job(job) => job.fail(closed()),
            Msg::Op(op) => op.fail(closed()),
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

async fn run_batch(
    conn: &mut SqliteConnection,
    batch: &mut Vec<Box<dyn Job>>,
    ops: &mut Ops,
    options: &StoreOptions,
) {
    // A batch of one statement commits by itself: BEGIN and COMMIT would be two more round
    // trips to SQLite's thread. (Each statement guards itself, so a job's statements need
    // no shared transaction; only other processes could come between them.)
    let alone = batch.len() + ops.statements() == 1;
    if !alone && let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
        let e = Arc::new(e);
        for job in batch.drain(..) {
            job.fail(shared("starting a write transaction", &e));
        }
        ops.fail_all(|| shared("starting a write transaction", &e));
        return;
    }
    let mut replies = Vec::with_capacity(batch.len() + ops.len());
    let mut broke = false;
    if !ops.enqueues.is_empty() {
        let enqueues = std::mem::take(&mut ops.enqueues);
        broke = enqueue_batch(conn, enqueues, options, &mut replies).await;
    }
    if !broke && !ops.claims.is_empty() {
        broke = claim_batch(conn, std::mem::take(&mut ops.claims), &mut replies).await;
    }
    if !broke && !ops.checkpoints.is_empty() {
        let checkpoints = std::mem::take(&mut ops.checkpoints);
        broke = held_batch(conn, Held::Checkpoint, checkpoints, &mut replies).await;
    }
    if !broke && !ops.completions.is_empty() {
        let completions = std::mem::take(&mut ops.completions);
        broke = held_batch(conn, Held::Complete, completions, &mut replies).await;
    }
    let mut jobs = batch.drain(..);
    if !broke {
        for job in jobs.by_ref() {
            let (reply, failed) = job.run(&mut *conn).await;
            replies.push(reply);
            if failed {
                break;
            }
        }
    }
    for job in jobs {
        job.fail(not_written());
    }
    ops.fail_all(not_written);
    if alone {
        for reply in replies {
            reply(None);
        }
        return;
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

/// At most this many claim slots go into one merged claim statement; a claim asking for
/// more runs alone.
const MAX_MERGED_SLOTS: i64 = 1024;

/// A write that the writer merges with the others of its kind in its batch into one
/// statement (sqlx hands each statement to SQLite's thread: fewer statements, more tasks per
/// second).
enum Op {
    Enqueue(EnqueueOp),
    Claim(ClaimOp),
    Held(HeldOp),
}

impl Op {
    fn fail(self, error: StoreError) {
        match self {
            Op::Enqueue(op) => drop(op.reply.send(Err(error))),
            Op::Claim(op) => drop(op.reply.send(Err(error))),
            Op::Held(op) => drop(op.reply.send(Err(error))),
        }
    }
}

struct EnqueueOp {
    id: TaskId,
    task: NewTask,
    capabilities: String,
    metadata: String,
    now: i64,
    reply: oneshot::Sender<Result<Enqueued, StoreError>>,
}

struct ClaimOp {
    worker: String,
    agents: Option<String>,
    capabilities: String,
    limit: i64,
    expires: i64,
    now: i64,
    reply: oneshot::Sender<Result<Vec<Claimed>, StoreError>>,
}

/// What a [`HeldOp`] writes on a task its worker holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Checkpoint,
    Complete,
}

struct HeldOp {
    kind: Held,
    id: TaskId,
    worker: String,
    /// The checkpoint's or the result's JSON.
    value: String,
    now: i64,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// A batch's merged writes, by kind.
#[derive(Default)]
struct Ops {
    enqueues: Vec<EnqueueOp>,
    claims: Vec<ClaimOp>,
    checkpoints: Vec<HeldOp>,
    completions: Vec<HeldOp>,
}

impl Ops {
    fn push(&mut self, op: Op) {
        match op {
            Op::Enqueue(op) => self.enqueues.push(op),
            Op::Claim(op) => self.claims.push(op),
            Op::Held(op) if op.kind == Held::Checkpoint => self.checkpoints.push(op),
            Op::Held(op) => self.completions.push(op),
        }
    }

    fn len(&self) -> usize {
        self.enqueues.len() + self.claims.len() + self.checkpoints.len() + self.completions.len()
    }

    /// How many statements (at least) the batch runs: more than one needs a transaction.
    fn statements(&self) -> usize {
        [
            self.enqueues.len(),
            self.checkpoints.len(),
            self.completions.len(),
        ]
        .iter()
        .filter(|n| **n > 0)
        .count()
            + self.claims.len()
    }

    fn fail_all(&mut self, error: impl Fn() -> StoreError) {
        for op in self.enqueues.drain(..) {
            let _ = op.reply.send(Err(error()));
        }
        for op in self.claims.drain(..) {
            let _ = op.reply.send(Err(error()));
        }
        for op in self.checkpoints.drain(..).chain(self.completions.drain(..)) {
            let _ = op.reply.send(Err(error()));
        }
    }
}

/// One store error reported to every write of a merged statement.
fn shared_store(what: &'static str, err: &Arc<StoreError>) -> StoreError {
    StoreError::Backend {
        message: format!("{what} failed"),
        retryable: err.is_retryable(),
        source: Some(Box::new(Arc::clone(err))),
    }
}

fn not_written() -> StoreError {
    StoreError::Backend {
        message: "not written: an earlier write in its transaction failed".into(),
        retryable: true,
        source: None,
    }
}

/// Delivers `result` once the commit is known.
fn answer<T: Send + 'static>(
    reply: oneshot::Sender<Result<T, StoreError>>,
    result: Result<T, StoreError>,
) -> Reply {
    Box::new(move |commit| {
        let _ = reply.send(match (commit, result) {
            (Some(err), Ok(_)) => Err(shared("committing writes", err)),
            (_, result) => result,
        });
    })
}

/// Whether an error is the database's (after which the transaction may be gone).
fn is_db_error<T>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Backend { .. }))
}

/// Enqueues a batch: one lookup of the idempotency keys it names (if any), one count of the
/// queue (with [`StoreOptions::max_queued`]), one `INSERT … SELECT FROM json_each`.
async fn enqueue_batch(
    conn: &mut SqliteConnection,
    ops: Vec<EnqueueOp>,
    options: &StoreOptions,
    replies: &mut Vec<Reply>,
) -> bool {
    match enqueue_rows(conn, &ops, options).await {
        Ok(results) => {
            for (op, result) in ops.into_iter().zip(results) {
                replies.push(answer(op.reply, result));
            }
            false
        }
        Err(e) => {
            let e = Arc::new(e);
            for op in ops {
                replies.push(answer(op.reply, Err(shared("enqueueing tasks", &e))));
            }
            true
        }
    }
}

async fn enqueue_rows(
    conn: &mut SqliteConnection,
    ops: &[EnqueueOp],
    options: &StoreOptions,
) -> Result<Vec<Result<Enqueued, StoreError>>, sqlx::Error> {
    let keys: Vec<&str> = ops
        .iter()
        .filter_map(|op| op.task.idempotency_key.as_deref())
        .collect();
    let mut known: HashMap<String, String> = HashMap::new();
    if !keys.is_empty() {
        let list = serde_json::to_string(&keys).unwrap_or_default();
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT idempotency_key, id FROM pocket_tasks \
             WHERE idempotency_key IN (SELECT value FROM json_each(?1))",
        )
        .bind(list)
        .fetch_all(&mut *conn)
        .await?;
        known.extend(rows);
    }
    let mut room = match options.max_queued {
        Some(limit) => {
            let queued: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM \
                 (SELECT 1 FROM pocket_tasks WHERE status = 'queued' LIMIT ?1) AS queued",
            )
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_one(&mut *conn)
            .await?;
            limit.saturating_sub(u64::try_from(queued).unwrap_or(0))
        }
        None => u64::MAX,
    };
    let mut results = Vec::with_capacity(ops.len());
    let mut rows = Vec::new();
    for op in ops {
        let key = op.task.idempotency_key.as_deref();
        if let Some(existing) = key.and_then(|k| known.get(k)) {
            results.push(Ok(Enqueued {
                id: TaskId(existing.clone()),
                created: false,
            }));
            continue;
        }
        if room == 0 {
            let limit = options.max_queued.unwrap_or(0);
            results.push(Err(options.queue_full(limit)));
            continue;
        }
        room -= 1;
        if let Some(key) = key {
            known.insert(key.to_owned(), op.id.0.clone());
        }
        rows.push(serde_json::json!({
            "id": op.id.0,
            "agent": op.task.agent,
            "task": op.task.task,
            "priority": op.task.priority,
            "capabilities": op.capabilities,
            "key": key,
            "max_attempts": op.task.max_attempts,
            "metadata": op.metadata,
            "now": op.now,
        }));
        results.push(Ok(Enqueued {
            id: op.id.clone(),
            created: true,
        }));
    }
    if rows.is_empty() {
        return Ok(results);
    }
    let wanted = rows.len();
    let rows = serde_json::Value::Array(rows).to_string();
    // `WHERE true` keeps SQLite from reading ON CONFLICT as a join constraint; `ORDER BY
    // key` inserts in the batch's order, so `seq` stays FIFO.
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO pocket_tasks (id, agent, task, priority, capabilities, idempotency_key, \
         status, max_attempts, metadata, created_at, updated_at, run_after) \
         SELECT r.value ->> 'id', r.value ->> 'agent', r.value ->> 'task', \
         r.value ->> 'priority', r.value ->> 'capabilities', r.value ->> 'key', 'queued', \
         r.value ->> 'max_attempts', r.value ->> 'metadata', r.value ->> 'now', \
         r.value ->> 'now', r.value ->> 'now' FROM json_each(?1) AS r WHERE true \
         ORDER BY r.key ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
    )
    .bind(rows)
    .fetch_all(&mut *conn)
    .await?;
    if inserted.len() < wanted {
        // Another process inserted a key between our lookup and insert: return its task.
        for (op, result) in ops.iter().zip(results.iter_mut()) {
            let Ok(Enqueued { id, created: true }) = result else {
                continue;
            };
            if inserted.contains(&id.0) {
                continue;
            }
            let existing: String =
                sqlx::query_scalar("SELECT id FROM pocket_tasks WHERE idempotency_key = ?1")
                    .bind(op.task.idempotency_key.as_deref())
                    .fetch_one(&mut *conn)
                    .await?;
            *result = Ok(Enqueued {
                id: TaskId(existing),
                created: false,
            });
        }
    }
    Ok(results)
}

/// Claims a batch: claims with the same filters share one statement that hands out
/// consecutive slots (the first claimer gets the best tasks); others run one each.
async fn claim_batch(
    conn: &mut SqliteConnection,
    ops: Vec<ClaimOp>,
    replies: &mut Vec<Reply>,
) -> bool {
    let mut groups: Vec<Vec<ClaimOp>> = Vec::new();
    for op in ops {
        let group = groups.iter_mut().find(|g| {
            op.limit <= MAX_MERGED_SLOTS
                && g[0].limit <= MAX_MERGED_SLOTS
                && g[0].agents == op.agents
                && g[0].capabilities == op.capabilities
                && g.iter().all(|o| o.worker != op.worker)
                && g.iter().map(|o| o.limit).sum::<i64>() + op.limit <= MAX_MERGED_SLOTS
        });
        match group {
            Some(group) => group.push(op),
            None => groups.push(vec![op]),
        }
    }
    let mut groups = groups.into_iter();
    for group in groups.by_ref() {
        let result = claim_group(conn, &group).await;
        let failed = result.is_err();
        match result {
            Ok(mut claimed) => {
                for op in group.into_iter().rev() {
                    let mine = claimed.pop().unwrap_or_default();
                    replies.push(answer(op.reply, Ok(mine)));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for op in group {
                    replies.push(answer(op.reply, Err(shared_store("claiming tasks", &e))));
                }
            }
        }
        if failed {
            for op in groups.flatten() {
                let _ = op.reply.send(Err(not_written()));
            }
            return true;
        }
    }
    false
}

/// The tasks each claim of a group gets, in the group's order.
async fn claim_group(
    conn: &mut SqliteConnection,
    group: &[ClaimOp],
) -> Result<Vec<Vec<Claimed>>, StoreError> {
    let first = &group[0];
    let now = group.iter().map(|o| o.now).min().unwrap_or(first.now);
    // INDEXED BY: without statistics the planner would take the status index and sort every
    // queued task on each claim.
    let rows = if group.len() == 1 {
        sqlx::query(concat!(
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
        .bind(&first.worker)
        .bind(first.expires)
        .bind(now)
        .bind(&first.agents)
        .bind(&first.capabilities)
        .bind(first.limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(db("claiming tasks"))?
    } else {
        let slots: Vec<(&str, i64)> = group
            .iter()
            .flat_map(|o| (0..o.limit).map(move |_| (o.worker.as_str(), o.expires)))
            .collect();
        let total = i64::try_from(slots.len()).unwrap_or(i64::MAX);
        sqlx::query(concat!(
            "WITH slots AS (SELECT key AS n, value ->> '$[0]' AS owner, \
                 value ->> '$[1]' AS expires FROM json_each(?1)), \
             picked AS (SELECT seq AS picked_seq, \
                 row_number() OVER (ORDER BY priority DESC, seq) - 1 AS n \
                 FROM pocket_tasks INDEXED BY pocket_tasks_queue \
                 WHERE status = 'queued' AND run_after <= ?2 \
                 AND (?3 IS NULL OR agent IN (SELECT value FROM json_each(?3))) \
                 AND (capabilities = '[]' OR NOT EXISTS (\
                     SELECT 1 FROM json_each(capabilities) AS need \
                     WHERE need.value NOT IN (SELECT value FROM json_each(?4)))) \
                 ORDER BY priority DESC, seq LIMIT ?5) \
             UPDATE pocket_tasks SET status = 'running', attempts = attempts + 1, \
             lease_owner = slots.owner, lease_expires_at = slots.expires, updated_at = ?2 \
             FROM picked JOIN slots ON slots.n = picked.n \
             WHERE pocket_tasks.seq = picked.picked_seq \
             RETURNING seq, checkpoint, ",
            columns!()
        ))
        .bind(serde_json::to_string(&slots).unwrap_or_default())
        .bind(now)
        .bind(&first.agents)
        .bind(&first.capabilities)
        .bind(total)
        .fetch_all(&mut *conn)
        .await
        .map_err(db("claiming tasks"))?
    };
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        let seq: i64 = row.try_get("seq").map_err(db("reading a task row"))?;
        let checkpoint: Option<String> = row
            .try_get("checkpoint")
            .map_err(db("reading a task row"))?;
        let record = record(row)?;
        claimed.push((seq, record, checkpoint));
    }
    // RETURNING has no order: claim order is priority, then FIFO.
    claimed.sort_by_key(|(seq, record, _)| (std::cmp::Reverse(record.priority), *seq));
    let mut out: Vec<Vec<Claimed>> = group.iter().map(|_| Vec::new()).collect();
    for (_, record, checkpoint) in claimed {
        let resume = match checkpoint {
            Some(text) => Some(resume(conn, &record.id, &text).await?),
            None => None,
        };
        let owner = record.lease_owner.as_deref();
        let at = group
            .iter()
            .position(|o| Some(o.worker.as_str()) == owner)
            .unwrap_or(0);
        out[at].push(Claimed { record, resume });
    }
    Ok(out)
}

/// Checkpoints or completions of a batch: one `UPDATE … FROM json_each` per round (a task
/// named twice in a batch goes in a later round, so each write lands in order). The unary
/// `+` keeps the planner off the status and owner indexes: it must look each task up by id
/// from the batch, not scan every running task for each row of the batch.
async fn held_batch(
    conn: &mut SqliteConnection,
    kind: Held,
    mut ops: Vec<HeldOp>,
    replies: &mut Vec<Reply>,
) -> bool {
    while !ops.is_empty() {
        let mut round = Vec::with_capacity(ops.len());
        let mut later = Vec::new();
        let mut seen = HashSet::new();
        for op in ops {
            if seen.insert(op.id.0.clone()) {
                round.push(op);
            } else {
                later.push(op);
            }
        }
        ops = later;
        let results = held_round(conn, kind, &round).await;
        let failed = results.iter().any(is_db_error);
        for (op, result) in round.into_iter().zip(results) {
            replies.push(answer(op.reply, result));
        }
        if failed {
            for op in ops {
                let _ = op.reply.send(Err(not_written()));
            }
            return true;
        }
    }
    false
}

async fn held_round(
    conn: &mut SqliteConnection,
    kind: Held,
    ops: &[HeldOp],
) -> Vec<Result<(), StoreError>> {
    let (sql, what) = match kind {
        // The trigger on `checkpoint` clears each task's journal in the same statement.
        Held::Checkpoint => (
            "UPDATE pocket_tasks SET checkpoint = b.value ->> 'v', \
             updated_at = b.value ->> 'now' FROM json_each(?1) AS b \
             WHERE pocket_tasks.id = b.value ->> 'id' \
             AND +pocket_tasks.lease_owner = b.value ->> 'w' \
             AND +pocket_tasks.status IN ('running', 'waiting_approval') \
             RETURNING pocket_tasks.id",
            "saving checkpoints",
        ),
        Held::Complete => (
            "UPDATE pocket_tasks SET status = 'succeeded', result = b.value ->> 'v', \
             checkpoint = NULL, lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = b.value ->> 'now' FROM json_each(?1) AS b \
             WHERE pocket_tasks.id = b.value ->> 'id' \
             AND +pocket_tasks.lease_owner = b.value ->> 'w' \
             AND +pocket_tasks.status IN ('running', 'waiting_approval') \
             RETURNING pocket_tasks.id",
            "completing tasks",
        ),
    };
    let rows: Vec<serde_json::Value> = ops
        .iter()
        .map(|op| serde_json::json!({"id": op.id.0, "w": op.worker, "v": op.value, "now": op.now}))
        .collect();
    let done: Result<Vec<String>, _> = sqlx::query_scalar(sql)
        .bind(serde_json::Value::Array(rows).to_string())
        .fetch_all(&mut *conn)
        .await;
    let done: HashSet<String> = match done {
        Ok(done) => done.into_iter().collect(),
        Err(e) => {
            let e = Arc::new(e);
            return ops.iter().map(|_| Err(shared(what, &e))).collect();
        }
    };
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        if done.contains(&op.id.0) {
            results.push(Ok(()));
        } else {
            results.push(Err(not_held(conn, &op.id, &op.worker).await));
        }
    }
    results
}

impl SqliteStore {
    /// Opens (creating if missing) the store in a file: a path, a `sqlite://path` URL, or
    /// `sqlite::memory:` for a private in-memory database (tests). Must run inside a Tokio
    /// runtime: it spawns the writer task.
    ///
    /// # Errors
    /// [`StoreError::BadUrl`] for a malformed URL; [`StoreError::Backend`] when the file
    /// cannot be opened or migrated.
    pub async fn open(path_or_url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let memory = path_or_url.contains(":memory:") || path_or_url.contains("mode=memory");
        let connect = if path_or_url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(path_or_url).map_err(|e| {
                StoreError::BadUrl(format!("`{path_or_url}` is not a SQLite URL: {e}"))
            })?
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
        let writer = tokio::spawn(writer(conn, rx, options.clone()));
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

    /// Queues a write that the writer merges with the others of its kind.
    async fn op<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        let (reply, result) = oneshot::channel();
        self.inner
            .jobs
            .send(Msg::Op(Box::new(make(reply))))
            .await
            .map_err(|_| closed())?;
        result.await.map_err(|_| closed())?
    }

    async fn enqueue_inner(&self, task: NewTask) -> Result<Enqueued, StoreError> {
        validate(&task)?;
        let now = self.now();
        let capabilities = to_json(&task.capabilities)?;
        let metadata = to_json(&task.metadata)?;
        self.op(|reply| {
            Op::Enqueue(EnqueueOp {
                id: new_id(),
                task,
                capabilities,
                metadata,
                now,
                reply,
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
        self.op(|reply| {
            Op::Claim(ClaimOp {
                worker: worker.to_owned(),
                agents,
                capabilities,
                limit: i64::try_from(limit).unwrap_or(i64::MAX),
                expires: now.saturating_add(duration_ms(lease)),
                now,
                reply,
            })
        })
        .await
    }

    /// A checkpoint or completion, merged with the others of its kind in the writer's batch.
    async fn held_op(
        &self,
        kind: Held,
        id: &TaskId,
        worker: &str,
        value: String,
    ) -> Result<(), StoreError> {
        let now = self.now();
        self.op(|reply| {
            Op::Held(HeldOp {
                kind,
                id: id.clone(),
                worker: worker.to_owned(),
                value,
                now,
                reply,
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
