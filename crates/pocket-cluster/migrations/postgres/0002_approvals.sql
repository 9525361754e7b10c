-- Approval requests of runs waiting for a person, and their answers. `id` is derived from
-- the task and the tool call, so a resumed run that asks again finds its row. `decision` is
-- the JSON of pocket_agent::Approval (TEXT, as the other JSON columns), NULL while pending.
-- Rows outlive their tasks (an audit trail); listings of pending requests skip finished tasks.
CREATE TABLE pocket_approvals (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           TEXT   NOT NULL UNIQUE,
    task_id      TEXT   NOT NULL,
    agent        TEXT   NOT NULL,
    call_id      TEXT   NOT NULL,
    tool         TEXT   NOT NULL,
    risk         TEXT   NOT NULL,
    arguments    TEXT   NOT NULL,                 -- JSON
    requested_at BIGINT NOT NULL,
    decision     TEXT,                            -- JSON of an Approval; NULL while pending
    decided_at   BIGINT
);

CREATE INDEX pocket_approvals_pending ON pocket_approvals (seq) WHERE decision IS NULL;
CREATE INDEX pocket_approvals_task ON pocket_approvals (task_id);
