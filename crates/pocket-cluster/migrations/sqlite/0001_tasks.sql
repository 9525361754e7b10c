-- Pocket Agent task store, SQLite. Times are integer milliseconds since the Unix epoch, from
-- the store's clock. `seq` (the rowid) orders tasks: FIFO within a priority, newest first in
-- listings. A task's latest checkpoint lives in its row (last column, so that claim scans do
-- not read it); tool-call journal entries written since live in pocket_journal.
CREATE TABLE pocket_tasks (
    seq              INTEGER PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    agent            TEXT    NOT NULL,
    task             TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    capabilities     TEXT    NOT NULL,            -- JSON array of strings
    idempotency_key  TEXT    UNIQUE,
    status           TEXT    NOT NULL CHECK (status IN
        ('queued', 'running', 'waiting_approval', 'succeeded', 'failed', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    result           TEXT,                        -- JSON
    error            TEXT,
    metadata         TEXT    NOT NULL,            -- JSON
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    run_after        INTEGER NOT NULL,
    lease_owner      TEXT,                        -- set exactly while running or waiting
    lease_expires_at INTEGER,
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
    seq     INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    entry   TEXT NOT NULL                         -- JSON of a JournalEntry
);
CREATE INDEX pocket_journal_task ON pocket_journal (task_id, seq);

-- A checkpoint covers the journal written before it; a finished task (whose update sets
-- checkpoint to NULL) needs none. Every write of `checkpoint` clears the task's journal.
CREATE TRIGGER pocket_tasks_checkpoint AFTER UPDATE OF checkpoint ON pocket_tasks
BEGIN
    DELETE FROM pocket_journal WHERE task_id = NEW.id;
END;
