"""The stored tree, checkpoints and verify --against on PostgreSQL, through the same portable code."""

from __future__ import annotations

import pytest

from auditledger import AuditLog, merkle, tree
from auditledger import checkpoint as ck
from tests.proofs.conftest import fill
from tests.store.pg import pg_schema

pytestmark = pytest.mark.postgres


def test_tree_proofs_and_checkpoints_on_postgres() -> None:
    """Appends keep the tree; its root, proofs and checkpoints match the pure maths on PostgreSQL."""
    signer = tree.Signer(ck.generate_key())
    with pg_schema() as url, AuditLog.open(url) as log:
        fill(log, 150)
        old = tree.make_checkpoint(log.store, "main", signer)
        fill(log, 170)
        rows = log.store.query("SELECT hash FROM leaves WHERE tenant = ? ORDER BY seq", ["main"])
        leaves = [bytes(h) for (h,) in rows]
        t = tree.Tree.current(log.store, "main")
        assert t.size == 320 and t.root() == merkle.root(leaves)
        for index in (0, 149, 319):
            merkle.verify_inclusion(leaves[index], index, 320, t.inclusion(index, 320), t.root())
        assert merkle.root(leaves[:150]) == old.root
        report = tree.verify_against(log, old.note, [signer.vkey])
        assert (report.checkpoint_size, report.size) == (150, 320)
        assert tree.latest_checkpoint(log.store, "main") == old


def test_tree_nodes_and_checkpoints_refuse_changes_on_postgres() -> None:
    """PostgreSQL triggers refuse UPDATE and DELETE of stored tree nodes and checkpoints."""
    from auditledger.errors import StoreError

    with pg_schema() as url, AuditLog.open(url) as log:
        fill(log, 40)
        tree.make_checkpoint(log.store, "main", tree.Signer(ck.generate_key()))
        for sql in (
            "UPDATE tree_nodes SET hash = hash",
            "DELETE FROM tree_nodes",
            "UPDATE checkpoints SET note = 'x'",
            "DELETE FROM checkpoints",
        ):
            with pytest.raises(StoreError, match="immutable"), log.store.write() as txn:
                txn.execute(sql)
