"""A validated event as a plain mapping, with its idempotency key.

The HTTP client sends this shape to the ingest route, and the spool and the outbox
keep it until their sink has placed the event; each gives every event a key here,
so that a batch sent or drained twice is stored once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import orjson

from auditledger.errors import ValidationError
from auditledger.model import EventInput, format_date, format_micros, invalid_text_field


def new_key() -> str:
    """A random UUID (version 4) as text, for an idempotency key.

    The same value ``str(uuid.uuid4())`` gives, formatted from the random bytes directly:
    a third of its cost, paid once per event on the application's request path.
    """
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


# The variant bits (10xx) over the random nibble's two low bits, as uuid.UUID(version=4) sets them.
_VARIANT = {f"{n:x}": "89ab"[n & 3] for n in range(16)}


def event_mapping(event: EventInput) -> dict[str, Any]:
    """``event`` in the ingest route's shape, keyed (its own key, else a new one)."""
    out: dict[str, Any] = {
        "resource_type": event.resource_type,
        "action": event.action,
        "actor": event.actor.to_dict(),
        "outcome": event.outcome.value,
        "idempotency_key": event.idempotency_key or new_key(),
    }
    if event.details:
        out["details"] = dict(event.details)
    if event.before is not None:
        out["before"] = event.before
    if event.after is not None:
        out["after"] = event.after
    if event.occurred_at is not None:
        out["occurred_at"] = format_date(event.occurred_at)
    if event.source is not None:
        out["source"] = dict(event.source)
    return out


def refuse_source(event: EventInput, field: str = "source") -> None:
    """An event bound for a server carries no ``source``: the server sets it (token and source IP)."""
    if event.source is not None:
        raise ValidationError(field, "is set by the server (token and source IP)")


def dated_mappings(drafts: Sequence[EventInput]) -> list[dict[str, Any]]:
    """Validated events as mappings, keyed, each with an ``occurred_at`` (now, where it has none).

    For events placed later than they are recorded (the spool, the outbox): their ``date``
    in the ledger is the placement, ``occurred_at`` says when they happened.
    """
    now = format_micros(time.time_ns() // 1000)
    batch = [event_mapping(d) for d in drafts]
    for event in batch:
        event.setdefault("occurred_at", now)
    return batch


def encode_batch(batch: list[dict[str, Any]], drafts: Sequence[EventInput]) -> bytes:
    """A validated batch as JSON (a spool's or an outbox's row).

    Text that is not valid UTF-8 (an unpaired surrogate) is refused as the ledger refuses it, naming the event.
    """
    try:
        return orjson.dumps(batch)
    except orjson.JSONEncodeError:
        for i, event in enumerate(batch):
            try:
                orjson.dumps(event)
            except orjson.JSONEncodeError:
                field = invalid_text_field(drafts[i])
                raise ValidationError(f"events[{i}].{field}", "is not valid UTF-8 (unpaired surrogate)") from None
        raise
