-- Legal holds: a saved search whose events no purge may touch until released.
-- Dates are microseconds since the epoch, UTC; released_at NULL means active.
CREATE TABLE holds (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    query TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    released_at INTEGER,
    released_by TEXT
);
CREATE INDEX holds_tenant ON holds (tenant, released_at);

-- Jobs as code: the YAML source as applied, one row per (tenant, namespace, id).
CREATE TABLE jobs (
    tenant TEXT NOT NULL,
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    source TEXT NOT NULL,
    revision INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, namespace, id)
);

-- Each schedule trigger's next due date; the scheduler advances it when it claims runs.
CREATE TABLE job_triggers (
    tenant TEXT NOT NULL,
    namespace TEXT NOT NULL,
    job_id TEXT NOT NULL,
    trigger_id TEXT NOT NULL,
    next_date INTEGER NOT NULL,
    PRIMARY KEY (tenant, namespace, job_id, trigger_id)
);

-- Run history. A scheduled run is unique per (job, trigger, scheduled date): even two
-- schedulers that both believe they lead cannot start the same run twice.
CREATE TABLE job_runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    namespace TEXT NOT NULL,
    job_id TEXT NOT NULL,
    trigger_id TEXT NOT NULL,
    scheduled_for INTEGER,
    status TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    outputs TEXT,
    error TEXT,
    holder TEXT NOT NULL
);
CREATE UNIQUE INDEX job_runs_once ON job_runs (tenant, namespace, job_id, trigger_id, scheduled_for);
CREATE INDEX job_runs_job ON job_runs (tenant, namespace, job_id, started_at);

-- Leases: the scheduler that holds the row until expires_at (microseconds) is the one that ticks.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
