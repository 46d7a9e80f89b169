"""The stored tree: the same roots and proofs as the pure maths, on any batching, after catch-up and purge."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditledger import AuditLog, merkle, tree
from auditledger import checkpoint as ck
from auditledger.errors import ConfigError, ValidationError
from tests.proofs.conftest import fill


def leaves_of(log: AuditLog, tenant: str = "main") -> list[bytes]:
    return [bytes(h) for (h,) in log.store.query("SELECT hash FROM leaves WHERE tenant = ? ORDER BY seq", [tenant])]


def assert_matches_naive(log: AuditLog, tenant: str = "main") -> None:
    leaves = leaves_of(log, tenant)
    t = tree.Tree.current(log.store, tenant)
    n = len(leaves)
    assert t.size == n and t.root() == merkle.root(leaves)
    for size in {1, n // 3 + 1, n}:
        root = merkle.root(leaves[:size])
        assert t.root_at(size) == root
        for index in {0, size // 2, size - 1}:
            merkle.verify_inclusion(leaves[index], index, size, t.inclusion(index, size), root)
        merkle.verify_consistency(size, n, root, t.root(), t.consistency(size, n))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(1, 300), min_size=1, max_size=6))
def test_any_batching_gives_the_naive_root_and_valid_proofs(batches: list[int]) -> None:
    """However appends are batched, the stored tree equals merkle.root and its proofs verify."""
    with AuditLog.open("memory://") as log:
        for n in batches:
            fill(log, n)
        assert_matches_naive(log)


def test_only_tile_roots_are_stored() -> None:
    """Only tile roots are stored: 1,000 leaves make 62 level-4 rows and 3 level-8 rows, nothing else."""
    with AuditLog.open("memory://") as log:
        for _ in range(10):
            fill(log, 100)
        rows = log.store.query("SELECT level, count(*) FROM tree_nodes GROUP BY level", [])
    assert rows == [(4, 62), (8, 3)]


def test_tenants_have_separate_trees() -> None:
    """Two tenants appended in one batch each get their own tree."""
    with AuditLog.open("memory://") as log:
        fill(log, 40, tenant="a")
        fill(log, 70, tenant="b")
        fill(log, 5, tenant="a")
        assert_matches_naive(log, "a")
        assert_matches_naive(log, "b")


def test_a_ledger_from_before_the_tree_is_caught_up(tmp_path: Path) -> None:
    """Leaves without tree rows (an older database) are folded in on the next append or proof."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with AuditLog.open(url) as log:
        fill(log, 700)
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    conn.execute("DROP TRIGGER tree_nodes_no_delete")
    conn.execute("DELETE FROM tree_nodes")
    conn.execute("DELETE FROM tree_heads")
    conn.close()
    with AuditLog.open(url) as log:
        fill(log, 30)
        assert_matches_naive(log)
        assert log.store.query("SELECT count(*) FROM tree_nodes", []) == [(730 // 16 + 730 // 256,)]


def test_old_checkpoints_stay_provable_after_a_purge(tmp_path: Path) -> None:
    """A real retention purge keeps the leaves: an old checkpoint is still provably extended, proofs still work."""
    from datetime import UTC, datetime, timedelta

    from auditledger.retention import Retention, purge_filter

    signer = tree.Signer(ck.generate_key())
    with AuditLog.open(f"sqlite:///{tmp_path / 'p.db'}") as log:
        fill(log, 300)  # dated over the last day, one second apart
        old = tree.make_checkpoint(log.store, "main", signer)
        result = Retention(log).purge(purge_filter(datetime.now(UTC) - timedelta(hours=2)), force=True)
        assert result.count > 0
        assert log.verify().purged["main"] == result.count
        report = tree.verify_against(log, old.note, [signer.vkey])
        assert report.checkpoint_size == 300 and report.size > 300  # the purge recorded itself
        assert_matches_naive(log)


def test_checkpoints_only_when_new_events_exist() -> None:
    """make_checkpoint reuses the latest one when nothing was appended; checkpoint_due skips such tenants."""
    signer = tree.Signer(ck.generate_key(), "log.example")
    with AuditLog.open("memory://") as log:
        fill(log, 10)
        first = tree.make_checkpoint(log.store, "main", signer)
        assert tree.make_checkpoint(log.store, "main", signer) == first
        assert tree.checkpoint_due(log.store, signer) == []
        fill(log, 1)
        (made,) = tree.checkpoint_due(log.store, signer)
        cp = ck.verify_checkpoint(made.note, [signer.vkey])
        assert (cp.origin, cp.size) == ("log.example/main", 11)
        assert tree.latest_checkpoint(log.store, "main") == made


def test_directory_witness_writes_each_checkpoint(tmp_path: Path) -> None:
    """The witness directory gets every checkpoint under its size and as latest."""
    signer = tree.Signer(ck.generate_key())
    witness = tree.directory_witness(tmp_path / "w")
    with AuditLog.open("memory://") as log:
        fill(log, 3)
        a = tree.make_checkpoint(log.store, "main", signer, witness=witness)
        fill(log, 2)
        b = tree.make_checkpoint(log.store, "main", signer, witness=witness)
    assert (tmp_path / "w" / "main" / f"{a.size:016d}.checkpoint").read_text() == a.note
    assert (tmp_path / "w" / "main" / "latest.checkpoint").read_text() == b.note


def test_signer_loading_errors_are_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No key, or a key file others can read, is a ConfigError saying what to do."""
    monkeypatch.delenv(ck.SIGNING_KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match="keys create"):
        tree.load_signer(None)
    path = tmp_path / "k.pem"
    ck.save_private_key(ck.generate_key(), path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        tree.load_signer(path)


def test_proof_sizes_outside_the_tree_are_validation_errors() -> None:
    """Asking for a proof beyond the tree names the parameter."""
    with AuditLog.open("memory://") as log:
        fill(log, 5)
        t = tree.Tree.current(log.store, "main")
        with pytest.raises(ValidationError, match="checkpoint_size"):
            t.inclusion(2, 9)
        with pytest.raises(ValidationError, match="from"):
            t.consistency(4, 3)


@pytest.mark.parametrize("cut", [64, 100, 300])
def test_verify_against_in_full_blocks(monkeypatch: pytest.MonkeyPatch, cut: int) -> None:
    """The block-wise recomputation (blocks of 64 here) proves aligned and unaligned checkpoints and finds rewrites."""
    monkeypatch.setattr(tree, "_BLOCK_LEVEL", 6)
    monkeypatch.setattr(tree, "_BLOCK", 64)
    signer = tree.Signer(ck.generate_key())
    with AuditLog.open("memory://") as log:
        fill(log, cut)
        note = tree.make_checkpoint(log.store, "main", signer).note
        fill(log, 330 - cut)
        report = tree.verify_against(log, note, [signer.vkey])
        assert (report.checkpoint_size, report.size) == (cut, 330)
        assert report.root == merkle.root(leaves_of(log))


def test_tree_nodes_and_checkpoints_refuse_changes_on_sqlite() -> None:
    """SQLite triggers refuse UPDATE and DELETE of stored tree nodes and checkpoints."""
    from auditledger.errors import StoreError

    with AuditLog.open("memory://") as log:
        fill(log, 40)
        tree.make_checkpoint(log.store, "main", tree.Signer(ck.generate_key()))
        for sql in ("UPDATE tree_nodes SET hash = hash", "DELETE FROM tree_nodes", "DELETE FROM checkpoints"):
            with pytest.raises(StoreError, match="immutable"), log.store.write() as txn:
                txn.execute(sql)
