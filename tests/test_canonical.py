"""The canonical encoding against the published test vectors of docs/spec.md."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

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
