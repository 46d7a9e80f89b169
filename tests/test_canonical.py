"""The canonical encoding against the published test vectors of docs/spec.md."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditledger import VerificationError, canonical
from auditledger.model import event_input

VECTORS = json.loads((Path(__file__).parent / "vectors" / "canonical-v1.json").read_text("utf-8"))


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vectors_encode_and_hash(vector: dict[str, Any]) -> None:
    """Encoding each vector's input gives exactly its canonical bytes and leaf hash."""
    draft = event_input(vector["input"])
    body = canonical.encode(
        draft, id=vector["id"], tenant=vector["tenant"], seq=vector["seq"], date=datetime.fromisoformat(vector["date"])
    )
    assert body == vector["canonical"].encode("utf-8")
    assert canonical.leaf_hash(body).hex() == vector["leaf_hash"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vectors_follow_the_written_rules(vector: dict[str, Any]) -> None:
    """A second implementation of the rules (stdlib json, sorted keys, no spaces) gives the same bytes."""
    text = vector["canonical"]
    again = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert again == text
    assert hashlib.sha256(b"\x00" + text.encode()).hexdigest() == vector["leaf_hash"]


@given(
    details=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), st.text(max_size=20), max_size=5),
    after=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=10,
    ),
)
def test_decode_inverts_encode(details: dict[str, str], after: Any) -> None:
    """decode(encode(x)) gives back every field for arbitrary details and JSON states."""
    details = {k: v.replace("\x00", "") for k, v in details.items()}
    draft = event_input(
        {
            "resource_type": "FLOW",
            "action": "UPDATE",
            "actor": {"type": "USER", "id": "u"},
            "details": details,
            "after": after,
        }
    )
    date = datetime.fromisoformat("2026-01-02T03:04:05.123456+00:00")
    event = canonical.decode(canonical.encode(draft, id="x", tenant="main", seq=5, date=date))
    assert event.details == details and event.after == draft.after and event.seq == 5 and event.date == date


def test_decode_refuses_garbage() -> None:
    """Bytes that are not a v1 canonical event raise VerificationError."""
    for body in (b"not json", b'{"v": 2}', b'{"v": 1}'):
        with pytest.raises(VerificationError):
            canonical.decode(body)


_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
_STATE = st.none() | _TEXT | st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


@given(
    details=st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,8}", fullmatch=True), _TEXT, max_size=5),
    before=_STATE,
    after=_STATE,
    actor_name=st.none() | _TEXT.filter(bool),
    occurred=st.booleans(),
    source=st.none() | st.fixed_dictionaries({"token": _TEXT.filter(bool), "ip": _TEXT.filter(bool)}),
    tenant=st.from_regex(r"[a-z0-9][a-z0-9_-]{0,10}", fullmatch=True),
    seq=st.integers(0, 2**40),
    id=_TEXT,
)
def test_prepared_parts_give_the_whole_encoding(
    details: dict[str, str], before: Any, after: Any, actor_name: str | None, occurred: bool,
    source: dict[str, str] | None, tenant: str, seq: int, id: str,
) -> None:
    """The bytes placed from prepared parts equal the whole object encoded at once (sorted keys, nulls left out),
    and the leaf hash finished from the prepared hash state equals SHA-256 of 0x00 and those bytes."""
    raw: dict[str, Any] = {
        "resource_type": "FLOW", "action": "UPDATE", "details": details, "before": before, "after": after,
        "actor": {"type": "USER", "id": "u", **({} if actor_name is None else {"name": actor_name})},
        "occurred_at": "2026-01-01T10:00:00.5Z" if occurred else None,
        "source": source,
    }
    draft = event_input({k: v for k, v in raw.items() if k != "source"}, source=source)
    date = 1_767_000_000_123_456
    whole: dict[str, Any] = {
        "v": 1, "id": id, "tenant": tenant, "seq": seq, "date": "2025-12-29T09:20:00.123456Z",
        "resource_type": "FLOW", "action": "UPDATE", "actor": draft.actor.to_dict(), "details": draft.details,
        "outcome": "success", "before": draft.before, "after": draft.after,
        "occurred_at": "2026-01-01T10:00:00.500000Z" if occurred else None, "source": source or None,
    }
    expected = orjson.dumps({k: v for k, v in whole.items() if v is not None}, option=orjson.OPT_SORT_KEYS)
    prepared = canonical.prepare(draft, tenant)
    for _ in range(2):  # placing never changes the prepared parts (the hash state is copied)
        body, leaf = canonical.place(prepared, id=id, seq=seq, date=date)
        assert body == expected
        assert leaf == canonical.leaf_hash(body) == hashlib.sha256(b"\x00" + expected).digest()
    assert canonical.encode(draft, id=id, tenant=tenant, seq=seq, date=date) == expected
