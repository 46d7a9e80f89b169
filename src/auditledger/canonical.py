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
from typing import Any, NamedTuple

import orjson

from auditledger.errors import VerificationError
from auditledger.model import Actor, ActorType, Event, EventInput, Outcome, format_date, format_micros

FORMAT_VERSION = 1
LEAF_PREFIX = b"\x00"


def encode(draft: EventInput, *, id: str, tenant: str, seq: int, date: datetime | int) -> bytes:
    """Canonical bytes of ``draft`` once the ledger has placed it (``date`` may be microseconds)."""
    return place(prepare(draft, tenant), id=id, seq=seq, date=date)[0]


class Prepared(NamedTuple):
    """An event's canonical bytes around the three members only the ledger can fill in.

    The sorted members are ``action actor after before | date | details | id |
    occurred_at outcome resource_type | seq | source tenant v``: everything but
    ``date``, ``id`` and ``seq`` is encoded (and the bytes before ``date`` hashed)
    ahead of the write transaction, by the thread that validated the event; placing
    it then costs a few concatenations and the hash of the bytes from ``date`` on.
    """

    tenant: str
    draft: EventInput
    head: bytes  # '{"action":...,"before":...,"date":' (every member before date)
    middle: bytes  # ',"details":{...},"id":'
    tail0: bytes  # ',"occurred_at":...,"outcome":...,"resource_type":...,"seq":'
    tail: bytes  # ',"source":{...},"tenant":"...","v":1}'
    hashed: Any  # SHA-256 state after LEAF_PREFIX + head (hashlib object; copied, never updated)
    # The store's searched columns: resource_type, action, actor_type, actor_id, actor_name,
    # outcome, idempotency_key (store.Row's fields between date and body).
    columns: tuple[str, str, str, str, str | None, str, str | None]


def prepare(draft: EventInput, tenant: str) -> Prepared:
    """``draft``'s canonical parts for ``tenant``; raises ``orjson.JSONEncodeError`` on invalid UTF-8."""
    # Member by member in sorted key order, each value encoded by orjson with sorted keys: the
    # same bytes as the whole object encoded at once (a test compares the two), without
    # building the dicts; this runs once per ingested event.
    head = b'{"action":' + _dumps(draft.action) + b',"actor":' + _actor_json(draft.actor)
    if draft.after is not None:
        head += b',"after":' + _dumps(draft.after, option=_SORT)
    if draft.before is not None:
        head += b',"before":' + _dumps(draft.before, option=_SORT)
    head += b',"date":'
    middle = b',"details":' + _dumps(draft.details, option=_SORT) + b',"id":'
    tail0 = b","
    if draft.occurred_at is not None:
        tail0 += b'"occurred_at":' + _dumps(format_date(draft.occurred_at)) + b","
    tail0 += _OUTCOME[draft.outcome] + b',"resource_type":' + _dumps(draft.resource_type) + b',"seq":'
    tail = b","
    if draft.source:
        tail += b'"source":' + _dumps(draft.source, option=_SORT) + b","
    tail += b'"tenant":' + _dumps(tenant) + _VERSION
    actor = draft.actor
    columns = (
        draft.resource_type,
        draft.action,
        actor.type.value,
        actor.id,
        actor.name,
        draft.outcome.value,
        draft.idempotency_key,
    )
    return Prepared(tenant, draft, head, middle, tail0, tail, hashlib.sha256(LEAF_PREFIX + head), columns)


def _actor_json(actor: Actor) -> bytes:
    """The actor's encoding, remembered: a ledger's events name few distinct actors (bounded)."""
    found = _ACTOR_JSON.get(actor)
    if found is None:
        found = _dumps(actor.to_dict(), option=_SORT)
        if len(_ACTOR_JSON) >= 4096:
            _ACTOR_JSON.clear()
        _ACTOR_JSON[actor] = found
    return found


_ACTOR_JSON: dict[Actor, bytes] = {}
_OUTCOME = {o: b'"outcome":' + orjson.dumps(o.value) for o in Outcome}
_VERSION = b',"v":' + str(FORMAT_VERSION).encode() + b"}"


def place(prepared: Prepared, *, id: str, seq: int, date: datetime | int) -> tuple[bytes, bytes]:
    """(canonical bytes, leaf hash) of a prepared event at its id, seq and date."""
    when = format_micros(date) if isinstance(date, int) else format_date(date)
    rest = b"".join(
        (_dumps(when), prepared.middle, _dumps(id), prepared.tail0, b"%d" % seq, prepared.tail)
    )
    hashed = prepared.hashed.copy()
    hashed.update(rest)
    return prepared.head + rest, hashed.digest()


_dumps = orjson.dumps
_SORT = orjson.OPT_SORT_KEYS


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
