"""The canonical encoding of an event and its RFC 9162 leaf hash.

The canonical form is a JSON object, UTF-8, keys sorted at every level, no
insignificant white space, null-valued fields left out, carrying ``"v": 1``.
The leaf hash is ``SHA-256(0x00 || canonical bytes)`` (RFC 9162 §2.1.1).
The stored bytes are what is hashed: a verifier hashes them as they are and
only parses them to read fields, so it never has to re-encode. ``docs/spec.md``
gives the full rules and ``tests/vectors/`` worked examples.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from auditledger.errors import VerificationError
from auditledger.model import Actor, ActorType, Event, EventInput, Outcome, format_date, format_micros

FORMAT_VERSION = 1
LEAF_PREFIX = b"\x00"


def encode(draft: EventInput, *, id: str, tenant: str, seq: int, date: datetime | int) -> bytes:
    """Canonical bytes of ``draft`` once the ledger has placed it (``date`` may be microseconds)."""
    obj: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "id": id,
        "tenant": tenant,
        "seq": seq,
        "date": format_micros(date) if isinstance(date, int) else format_date(date),
        "resource_type": draft.resource_type,
        "action": draft.action,
        "actor": draft.actor.to_dict(),
        "details": draft.details,
        "outcome": draft.outcome.value,
    }
    if draft.before is not None:
        obj["before"] = draft.before
    if draft.after is not None:
        obj["after"] = draft.after
    if draft.occurred_at is not None:
        obj["occurred_at"] = format_date(draft.occurred_at)
    if draft.source:
        obj["source"] = draft.source
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def leaf_hash(body: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + body).digest()


def decode(body: bytes, leaf: bytes | None = None) -> Event:
    """The event in ``body``; raises :class:`VerificationError` if it is not a v1 event."""
    try:
        obj = orjson.loads(body)
        if obj.get("v") != FORMAT_VERSION:
            raise VerificationError(f"unknown canonical format version {obj.get('v')!r}")
        actor: Mapping[str, Any] = obj["actor"]
        occurred = obj.get("occurred_at")
        return Event(
            id=obj["id"],
            tenant=obj["tenant"],
            seq=obj["seq"],
            date=datetime.fromisoformat(obj["date"]),
            resource_type=obj["resource_type"],
            action=obj["action"],
            actor=Actor(
                ActorType(actor["type"]),
                actor["id"],
                actor.get("name"),
                actor.get("ip"),
                actor.get("user_agent"),
                actor.get("impersonated_by"),
            ),
            details=obj["details"],
            before=obj.get("before"),
            after=obj.get("after"),
            outcome=Outcome(obj["outcome"]),
            occurred_at=None if occurred is None else datetime.fromisoformat(occurred),
            source=obj.get("source"),
            leaf_hash=leaf if leaf is not None else leaf_hash(body),
        )
    except VerificationError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise VerificationError(f"stored event is not a valid canonical event: {exc}") from None
