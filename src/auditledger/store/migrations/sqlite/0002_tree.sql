-- Each tenant's Merkle tree head: its size and frontier, the right-edge perfect
-- subtree hashes (largest first, 32 bytes each, concatenated). One row per tenant,
-- rewritten by every append.
CREATE TABLE tree_heads (
    tenant TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    frontier BLOB NOT NULL
) WITHOUT ROWID;

-- Perfect subtree hashes at levels 4, 8, 12 ... (tiles of 16): node (level, idx)
-- covers leaves [idx * 2^level, (idx + 1) * 2^level). Level 0 is the leaves table.
CREATE TABLE tree_nodes (
    tenant TEXT NOT NULL,
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (tenant, level, idx)
) WITHOUT ROWID;

-- Signed checkpoints (C2SP signed notes) as they were made.
CREATE TABLE checkpoints (
    tenant TEXT NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, size)
) WITHOUT ROWID;

CREATE TRIGGER tree_nodes_no_update BEFORE UPDATE ON tree_nodes
BEGIN SELECT RAISE(ABORT, 'tree nodes are immutable'); END;
CREATE TRIGGER tree_nodes_no_delete BEFORE DELETE ON tree_nodes
BEGIN SELECT RAISE(ABORT, 'tree nodes are immutable'); END;
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are immutable'); END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are immutable'); END;
