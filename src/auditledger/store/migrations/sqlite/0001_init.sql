-- The ledger: one row per position, per tenant. Never removed, even by purge.
CREATE TABLE leaves (
    tenant TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    purged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, seq)
) WITHOUT ROWID;

-- Each tenant's size and the date of its last entry (microseconds, UTC).
CREATE TABLE heads (
    tenant TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    last_date INTEGER NOT NULL
) WITHOUT ROWID;

-- The events: canonical bytes plus the columns search filters on.
CREATE TABLE events (
    rid INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    seq INTEGER NOT NULL,
    date INTEGER NOT NULL,
    resource_type TEXT NOT NULL,
    action TEXT NOT NULL,
    actor_type TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    actor_name TEXT,
    outcome TEXT NOT NULL,
    idempotency_key TEXT,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX events_tenant_seq ON events (tenant, seq);
CREATE UNIQUE INDEX events_id ON events (id);
CREATE INDEX events_resource_action ON events (tenant, resource_type, action, seq);
CREATE INDEX events_action ON events (tenant, action, seq);
CREATE INDEX events_actor ON events (tenant, actor_id, seq);
CREATE INDEX events_date ON events (tenant, date);
CREATE UNIQUE INDEX events_idempotency ON events (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- key:value lookups: the primary key is the index.
CREATE TABLE details (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, key, value, seq)
) WITHOUT ROWID;

-- Purge deletes through its own path: it opens the gate inside its transaction.
CREATE TABLE purge_gate (open INTEGER NOT NULL);
INSERT INTO purge_gate VALUES (0);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'audit events are immutable'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
WHEN (SELECT open FROM purge_gate) = 0
BEGIN SELECT RAISE(ABORT, 'audit events can only be removed by purge'); END;
CREATE TRIGGER details_no_update BEFORE UPDATE ON details
BEGIN SELECT RAISE(ABORT, 'audit events are immutable'); END;
CREATE TRIGGER details_no_delete BEFORE DELETE ON details
WHEN (SELECT open FROM purge_gate) = 0
BEGIN SELECT RAISE(ABORT, 'audit events can only be removed by purge'); END;
CREATE TRIGGER leaves_no_delete BEFORE DELETE ON leaves
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER leaves_no_update BEFORE UPDATE ON leaves
WHEN (SELECT open FROM purge_gate) = 0 OR NEW.hash IS NOT OLD.hash OR NEW.seq IS NOT OLD.seq OR NEW.tenant IS NOT OLD.tenant
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
