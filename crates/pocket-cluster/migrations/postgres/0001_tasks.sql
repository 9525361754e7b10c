-- Pocket Agent task store, PostgreSQL. Times are integer milliseconds since the Unix epoch,
-- from the store's clock (never now()), so every machine agrees with its own clock source.
-- `seq` orders tasks: FIFO within a priority, newest first in listings. A task's latest
-- checkpoint lives in its row (TOASTed when large); tool-call journal entries written since
-- live in pocket_journal. JSON is kept as TEXT, not JSONB: tool output may hold \u0000, which
-- JSONB refuses, and the store never queries inside it (cast to jsonb to do so by hand).
-- Tables are created in the first schema of the search_path.
CREATE TABLE pocket_tasks (
    seq              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    agent            TEXT    NOT NULL,
    task             TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    capabilities     TEXT[]  NOT NULL,
    idempotency_key  TEXT    UNIQUE,
    status           TEXT    NOT NULL CHECK (status IN
        ('queued', 'running', 'waiting_approval', 'succeeded', 'failed', 'cancelled')),
    attempts         BIGINT  NOT NULL DEFAULT 0,
    max_attempts     BIGINT  NOT NULL,
    result           TEXT,                        -- JSON
    error            TEXT,
    metadata         TEXT    NOT NULL,            -- JSON
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    run_after        BIGINT  NOT NULL,
    lease_owner      TEXT,                        -- set exactly while running or waiting
    lease_expires_at BIGINT,
    checkpoint       TEXT                         -- JSON of the last Checkpoint
);

-- Claim order among queued tasks.
CREATE INDEX pocket_tasks_queue ON pocket_tasks (priority DESC, seq) WHERE status = 'queued';
-- Expired leases, and a worker's leases.
CREATE INDEX pocket_tasks_lease ON pocket_tasks (lease_expires_at) WHERE lease_owner IS NOT NULL;
CREATE INDEX pocket_tasks_owner ON pocket_tasks (lease_owner) WHERE lease_owner IS NOT NULL;
-- Stats and listings by status.
CREATE INDEX pocket_tasks_status ON pocket_tasks (status, seq);

CREATE TABLE pocket_journal (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id TEXT  NOT NULL,
    entry   TEXT  NOT NULL                        -- JSON of a JournalEntry
);
CREATE INDEX pocket_journal_task ON pocket_journal (task_id, seq);

-- A checkpoint covers the journal written before it; a finished task (whose update sets
-- checkpoint to NULL) needs none. Every write of `checkpoint` clears the task's journal.
CREATE FUNCTION pocket_clear_journal() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM pocket_journal WHERE task_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER pocket_tasks_checkpoint AFTER UPDATE OF checkpoint ON pocket_tasks
    FOR EACH ROW EXECUTE FUNCTION pocket_clear_journal();
