-- Each tenant's Merkle tree head: its size and frontier, the right-edge perfect
-- subtree hashes (largest first, 32 bytes each, concatenated). One row per tenant,
-- rewritten by every append.
CREATE TABLE tree_heads (
    tenant TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    frontier BYTEA NOT NULL
);

-- Perfect subtree hashes at levels 4, 8, 12 ... (tiles of 16): node (level, idx)
-- covers leaves [idx * 2^level, (idx + 1) * 2^level). Level 0 is the leaves table.
CREATE TABLE tree_nodes (
    tenant TEXT NOT NULL,
    level INTEGER NOT NULL,
    idx BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    PRIMARY KEY (tenant, level, idx)
);

-- Signed checkpoints (C2SP signed notes) as they were made.
CREATE TABLE checkpoints (
    tenant TEXT NOT NULL,
    size BIGINT NOT NULL,
    root BYTEA NOT NULL,
    note TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, size)
);

-- Tree nodes and checkpoints are never changed once written (auditledger_refuse is from 0001).
CREATE TRIGGER tree_nodes_no_update BEFORE UPDATE ON tree_nodes
FOR EACH ROW EXECUTE FUNCTION auditledger_refuse('never', 'tree nodes are immutable');
CREATE TRIGGER tree_nodes_no_delete BEFORE DELETE ON tree_nodes
FOR EACH ROW EXECUTE FUNCTION auditledger_refuse('never', 'tree nodes are immutable');
CREATE TRIGGER tree_nodes_no_truncate BEFORE TRUNCATE ON tree_nodes
FOR EACH STATEMENT EXECUTE FUNCTION auditledger_refuse('never', 'tree nodes are immutable');
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
FOR EACH ROW EXECUTE FUNCTION auditledger_refuse('never', 'checkpoints are immutable');
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
FOR EACH ROW EXECUTE FUNCTION auditledger_refuse('never', 'checkpoints are immutable');
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
FOR EACH STATEMENT EXECUTE FUNCTION auditledger_refuse('never', 'checkpoints are immutable');
