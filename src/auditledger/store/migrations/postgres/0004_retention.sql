-- Legal holds: a saved search whose events no purge may touch until released.
-- Dates are microseconds since the epoch, UTC; released_at NULL means active.
CREATE TABLE holds (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    query TEXT COLLATE "C" NOT NULL,
    reason TEXT COLLATE "C" NOT NULL,
    created_by TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    released_at BIGINT,
    released_by TEXT
);
CREATE INDEX holds_tenant ON holds (tenant, released_at);

-- Jobs as code: the YAML source as applied, one row per (tenant, namespace, id).
CREATE TABLE jobs (
    tenant TEXT COLLATE "C" NOT NULL,
    namespace TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    source TEXT COLLATE "C" NOT NULL,
    revision INTEGER NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, namespace, id)
);

-- Each schedule trigger's next due date; the scheduler advances it when it claims runs.
CREATE TABLE job_triggers (
    tenant TEXT COLLATE "C" NOT NULL,
    namespace TEXT COLLATE "C" NOT NULL,
    job_id TEXT COLLATE "C" NOT NULL,
    trigger_id TEXT COLLATE "C" NOT NULL,
    next_date BIGINT NOT NULL,
    PRIMARY KEY (tenant, namespace, job_id, trigger_id)
);

-- Run history. A scheduled run is unique per (job, trigger, scheduled date): even two
-- schedulers that both believe they lead cannot start the same run twice.
CREATE TABLE job_runs (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    namespace TEXT COLLATE "C" NOT NULL,
    job_id TEXT COLLATE "C" NOT NULL,
    trigger_id TEXT COLLATE "C" NOT NULL,
    scheduled_for BIGINT,
    status TEXT COLLATE "C" NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    outputs TEXT,
    error TEXT,
    holder TEXT NOT NULL
);
CREATE UNIQUE INDEX job_runs_once ON job_runs (tenant, namespace, job_id, trigger_id, scheduled_for);
CREATE INDEX job_runs_job ON job_runs (tenant, namespace, job_id, started_at);

-- Leases: the scheduler that holds the row until expires_at (microseconds) is the one that ticks.
CREATE TABLE leases (
    name TEXT COLLATE "C" PRIMARY KEY,
    holder TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL
);
