-- The PostgreSQL schema: the same tables, columns and meaning as the SQLite one
-- (store/migrations/sqlite/0001_init.sql), so that portable SQL from features
-- (purge, jobs, shippers) runs on both. Text columns use the "C" collation:
-- prefix searches are byte ranges, as on SQLite, whatever the database's locale.

-- The ledger: one row per position, per tenant. Never removed, even by purge.
CREATE TABLE leaves (
    tenant TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    purged SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, seq)
);

-- Each tenant's size and the date of its last entry (microseconds, UTC). An append
-- locks its tenant's row FOR UPDATE: that lock is the per-tenant sequencer shared
-- by every server process.
CREATE TABLE heads (
    tenant TEXT COLLATE "C" PRIMARY KEY,
    size BIGINT NOT NULL,
    last_date BIGINT NOT NULL
);

-- The events, partitioned by month of `date` (microseconds since the epoch, UTC).
-- The store creates the monthly partitions ahead of time; rows dated before the
-- first partition (backfills, migrated history) land in events_default.
CREATE TABLE events (
    id TEXT COLLATE "C" NOT NULL,
    tenant TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    date BIGINT NOT NULL,
    resource_type TEXT COLLATE "C" NOT NULL,
    action TEXT COLLATE "C" NOT NULL,
    actor_type TEXT COLLATE "C" NOT NULL,
    actor_id TEXT COLLATE "C" NOT NULL,
    actor_name TEXT COLLATE "C",
    outcome TEXT COLLATE "C" NOT NULL,
    idempotency_key TEXT COLLATE "C",
    body BYTEA NOT NULL
) PARTITION BY RANGE (date);
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- A unique index on a partitioned table must contain the partition key, so the
-- uniqueness of (tenant, seq) is held by leaves' primary key and the head lock.
-- Within a tenant, date grows with seq, so listings order by date: partitions are
-- then read newest first and a page stops in the first one that fills it.
CREATE INDEX events_tenant_seq ON events (tenant, seq);
CREATE INDEX events_tenant_date ON events (tenant, date);
CREATE INDEX events_date ON events (date, tenant, seq);
CREATE INDEX events_id ON events (id);
CREATE INDEX events_resource_action ON events (tenant, resource_type, action, date);
CREATE INDEX events_action ON events (tenant, action, date);
CREATE INDEX events_actor ON events (tenant, actor_id, date);
CREATE INDEX events_actor_type ON events (tenant, actor_type, date);
CREATE INDEX events_outcome ON events (tenant, outcome, date);
CREATE INDEX events_idempotency ON events (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- key:value lookups: the primary key is the index; (tenant, seq) serves verify and purge.
CREATE TABLE details (
    tenant TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    value TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (tenant, key, value, seq)
);
CREATE INDEX details_tenant_seq ON details (tenant, seq);

-- Purge deletes through its own path: it sets open = 1 inside its transaction
-- (other transactions never see it open: MVCC), deletes, and sets it back.
CREATE TABLE purge_gate (open INTEGER NOT NULL);
INSERT INTO purge_gate VALUES (0);

CREATE FUNCTION auditledger_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- TG_ARGV[0]: 'gated' lets a DELETE through while purge_gate is open.
    IF TG_OP = 'DELETE' AND TG_ARGV[0] = 'gated' AND (SELECT max(open) FROM purge_gate) = 1 THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '%', TG_ARGV[1] USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE FUNCTION auditledger_leaves_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Purge may only flip `purged`; the hash, the position and the tenant never change.
    IF TG_OP = 'UPDATE' AND (SELECT max(open) FROM purge_gate) = 1
        AND NEW.hash = OLD.hash AND NEW.seq = OLD.seq AND NEW.tenant = OLD.tenant THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'the ledger is append-only' USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
FOR EACH ROW EXECUTE FUNCTION auditledger_refuse('never', 'audit events are immutable');
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
FOR EACH ROW EXECUTE FUNCTION auditledger_refuse('gated', 'audit events can only be removed by purge');
CREATE TRIGGER details_no_update BEFORE UPDATE ON details
FOR EACH ROW EXECUTE FUNCTION auditledger_refuse('never', 'audit events are immutable');
CREATE TRIGGER details_no_delete BEFORE DELETE ON details
FOR EACH ROW EXECUTE FUNCTION auditledger_refuse('gated', 'audit events can only be removed by purge');
CREATE TRIGGER leaves_no_delete BEFORE DELETE ON leaves
FOR EACH ROW EXECUTE FUNCTION auditledger_refuse('never', 'the ledger is append-only');
CREATE TRIGGER leaves_no_update BEFORE UPDATE ON leaves
FOR EACH ROW EXECUTE FUNCTION auditledger_leaves_guard();
-- Row triggers do not fire on TRUNCATE; refuse it on the parents too.
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
FOR EACH STATEMENT EXECUTE FUNCTION auditledger_refuse('never', 'audit events are immutable');
CREATE TRIGGER leaves_no_truncate BEFORE TRUNCATE ON leaves
FOR EACH STATEMENT EXECUTE FUNCTION auditledger_refuse('never', 'the ledger is append-only');
CREATE TRIGGER details_no_truncate BEFORE TRUNCATE ON details
FOR EACH STATEMENT EXECUTE FUNCTION auditledger_refuse('never', 'audit events are immutable');
