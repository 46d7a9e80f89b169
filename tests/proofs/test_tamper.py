"""The tamper suite: every attack on a signed ledger is caught by the right command, at the right place.

Each attack opens the SQLite file with plain sqlite3 and drops the triggers first,
as an attacker with file access would. ``verify`` catches what breaks an event's
own hash or the ledger's order; ``verify --against`` catches what only a signed
checkpoint can reveal (truncation, consistent rewrites); both exit 1 and name
the first bad position or the bad signature.
"""

from __future__ import annotations

import hashlib
import re

import orjson

from auditledger import checkpoint as ck
from auditledger import tree
from tests.proofs.conftest import SIZE, Signed, attacker, run


def verify(s: Signed) -> tuple[int, str, str]:
    return run("verify", "--db", s.url)


def against(s: Signed) -> tuple[int, str, str]:
    return run("verify", "--db", s.url, "--against", str(s.checkpoint), "--key", str(s.vkey_file))


def leaf(body: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + body).digest()


def body_of(s: Signed, seq: int) -> bytes:
    conn = attacker(s.db)
    (body,) = conn.execute("SELECT body FROM events WHERE tenant = 'main' AND seq = ?", (seq,)).fetchone()
    conn.close()
    return bytes(body)


def rewrite(s: Signed, seq: int, change: dict[str, object], *, fix_leaf: bool) -> None:
    obj = orjson.loads(body_of(s, seq))
    obj.update(change)
    body = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    conn = attacker(s.db)
    conn.execute("UPDATE events SET body = ? WHERE tenant = 'main' AND seq = ?", (body, seq))
    if fix_leaf:
        conn.execute("UPDATE leaves SET hash = ? WHERE tenant = 'main' AND seq = ?", (leaf(body), seq))
    conn.close()


def fails_at(result: tuple[int, str, str], seq: int) -> str:
    code, _, err = result
    assert code == 1, err
    assert "verification FAILED" in err
    assert f"seq {seq}:" in err, err
    assert "Traceback" not in err
    return err


# --- the untouched ledger ---------------------------------------------------------


def test_untouched_ledger_passes_both_checks(signed: Signed) -> None:
    """An untouched ledger verifies, and provably extends its saved checkpoint."""
    code, out, err = verify(signed)
    assert code == 0 and f"OK: {SIZE} positions verified" in out, err
    code, out, err = against(signed)
    assert code == 0, err
    assert f"extends checkpoint {signed.checkpoint} (size {SIZE})" in out


def test_a_grown_ledger_still_extends_the_old_checkpoint(signed: Signed) -> None:
    """Appending after the checkpoint is fine: the consistency proof shows the old tree inside the new."""
    code, _, err = run("record", "FLOW", "UPDATE", "-d", "namespace=a.b", "--db", signed.url)
    assert code == 0, err
    code, out, err = against(signed)
    assert code == 0, err
    assert f"the ledger ({SIZE + 1} entries" in out


# --- caught by verify ----------------------------------------------------------------


def test_payload_edited(signed: Signed) -> None:
    """An edited event body no longer matches its leaf hash: verify names its position."""
    rewrite(signed, 123, {"after": {"forged": True}}, fix_leaf=False)
    assert "does not match its leaf hash" in fails_at(verify(signed), 123)


def test_details_edited(signed: Signed) -> None:
    """An edited details row (what search filters on) differs from the hashed event."""
    conn = attacker(signed.db)
    changed = conn.execute("UPDATE details SET value = 'forged' WHERE tenant = 'main' AND seq = 77").rowcount
    conn.close()
    assert changed
    assert "indexed details" in fails_at(verify(signed), 77)


def test_timestamp_edited(signed: Signed) -> None:
    """An edited date column, or an edited date inside the body, is caught at its position."""
    conn = attacker(signed.db)
    conn.execute("UPDATE events SET date = date - 3600000000 WHERE tenant = 'main' AND seq = 50")
    conn.close()
    assert "indexed date" in fails_at(verify(signed), 50)


def test_timestamp_edited_in_the_body(signed: Signed) -> None:
    """Moving an event's date inside its canonical bytes breaks its leaf hash."""
    rewrite(signed, 51, {"date": "2001-01-01T00:00:00.000000Z"}, fix_leaf=False)
    fails_at(verify(signed), 51)


def test_row_deleted(signed: Signed) -> None:
    """A deleted event (its leaf kept) is 'removed without a purge'; a deleted leaf is a missing position."""
    conn = attacker(signed.db)
    conn.execute("DELETE FROM events WHERE tenant = 'main' AND seq = 70")
    conn.execute("DELETE FROM details WHERE tenant = 'main' AND seq = 70")
    conn.close()
    assert "removed without a purge" in fails_at(verify(signed), 70)
    conn = attacker(signed.db)
    conn.execute("DELETE FROM leaves WHERE tenant = 'main' AND seq = 70")
    conn.close()
    assert "missing" in fails_at(verify(signed), 70)


def test_rows_swapped(signed: Signed) -> None:
    """Two events swapped with their leaves and details: the hashed seq betrays the first of them."""
    conn = attacker(signed.db)
    for table in ("events", "details", "leaves"):
        conn.execute(f"UPDATE {table} SET seq = -1 WHERE tenant = 'main' AND seq = 10")
        conn.execute(f"UPDATE {table} SET seq = 10 WHERE tenant = 'main' AND seq = 11")
        conn.execute(f"UPDATE {table} SET seq = 11 WHERE tenant = 'main' AND seq = -1")
    conn.close()
    assert "indexed seq" in fails_at(verify(signed), 10)


def test_forged_event_inserted(signed: Signed) -> None:
    """An event slipped in without a ledger leaf is found at its position."""
    obj = orjson.loads(body_of(signed, 5))
    obj.update({"id": "01900000-0000-7000-8000-000000000000", "seq": SIZE})
    body = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    conn = attacker(signed.db)
    conn.execute(
        "INSERT INTO events (id, tenant, seq, date, resource_type, action, actor_type, actor_id, actor_name, "
        "outcome, idempotency_key, body) SELECT ?, tenant, ?, date, resource_type, action, actor_type, actor_id, "
        "actor_name, outcome, NULL, ? FROM events WHERE tenant = 'main' AND seq = 5",
        (obj["id"], SIZE, body),
    )
    conn.close()
    assert "no ledger leaf" in fails_at(verify(signed), SIZE)


# --- caught only by verify --against ---------------------------------------------------


def _truncate(s: Signed, keep: int) -> None:
    conn = attacker(s.db)
    for table in ("events", "details", "leaves", "tree_nodes"):
        if table == "tree_nodes":
            conn.execute("DELETE FROM tree_nodes WHERE tenant = 'main' AND ((idx + 1) << level) > ?", (keep,))
        else:
            conn.execute(f"DELETE FROM {table} WHERE tenant = 'main' AND seq >= ?", (keep,))
    conn.execute("UPDATE heads SET size = ? WHERE tenant = 'main'", (keep,))
    conn.execute("DELETE FROM tree_heads WHERE tenant = 'main'")  # rebuilt from the leaves, as an attacker would
    conn.execute("DELETE FROM checkpoints")
    conn.close()


def test_tail_truncated(signed: Signed) -> None:
    """A cleanly cut tail passes the plain verify, but not the saved checkpoint: truncated at the cut."""
    _truncate(signed, SIZE - 40)
    code, _, err = verify(signed)
    assert code == 0, "a hash chain or per-event check cannot see a clean truncation"
    err = fails_at(against(signed), SIZE - 40)
    assert f"truncated at position {SIZE - 40}" in err


def test_leaf_hash_and_payload_rewritten_consistently(signed: Signed) -> None:
    """A rewrite with a matching leaf hash passes verify; --against names the 16-entry tile holding it."""
    rewrite(signed, 300, {"after": {"forged": True}}, fix_leaf=True)
    code, _, err = verify(signed)
    assert code == 0, err
    err = fails_at(against(signed), 288)
    assert "positions [288, 304) were rewritten" in err


def test_consistent_rewrite_with_the_tree_rebuilt_too(signed: Signed) -> None:
    """Rebuilding every stored tree hash as well still fails against the checkpoint's signed root."""
    rewrite(signed, 3, {"after": {"forged": True}}, fix_leaf=True)
    conn = attacker(signed.db)
    conn.execute("DELETE FROM tree_nodes")
    conn.execute("DELETE FROM tree_heads")
    conn.close()
    code, _, err = against(signed)
    assert code == 1 and "no longer hash to the checkpoint's root" in err
    assert f"[0, {SIZE})" in err


def test_checkpoint_file_edited(signed: Signed) -> None:
    """A checkpoint whose size or root was edited fails its signature check, naming the key."""
    text = signed.checkpoint.read_text()
    signed.checkpoint.write_text(text.replace(f"\n{SIZE}\n", f"\n{SIZE - 40}\n", 1))
    code, _, err = against(signed)
    assert code == 1 and re.search(r"bad signature on checkpoint by key auditledger\+[0-9a-f]{8}", err), err


def test_checkpoint_signed_by_another_key(signed: Signed) -> None:
    """A checkpoint signed by a key that is not trusted is refused, even with the same key name."""
    cp, _ = ck.parse_checkpoint(signed.checkpoint.read_text())
    signed.checkpoint.write_text(tree.Signer(ck.generate_key()).sign("main", cp.size, cp.root))
    code, _, err = against(signed)
    assert code == 1 and "signed only by unknown keys" in err, err


def test_against_needs_a_key(signed: Signed) -> None:
    """--against without a trusted key is a clear usage error, not a pass."""
    code, _, err = run("verify", "--db", signed.url, "--against", str(signed.checkpoint))
    assert code == 1 and "--key" in err and "Traceback" not in err


def test_checkpoint_of_another_tenant_is_named(signed: Signed) -> None:
    """Checking tenant b against tenant main's checkpoint says so instead of reporting a rewrite."""
    code, _, err = run(
        "verify", "--db", signed.url, "--tenant", "b", "--against", str(signed.checkpoint), "--key", signed.vkey
    )
    assert code == 1 and "the checkpoint is for tenant 'main'" in err, err
