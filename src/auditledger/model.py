"""Events, actors, and the limits every input path enforces.

The rules come from DESIGN.md: Kestra's resource types and actions plus custom
ones of the form ``^[A-Z][A-Z0-9_]{0,63}$``; at most 64 details whose keys
match ``^[A-Za-z][A-Za-z0-9_.-]{0,63}$`` and whose values are at most 1,024
characters; ``before``/``after`` at most 1 MiB each once encoded. A breach
raises :class:`~auditledger.errors.ValidationError` naming the field.
"""

from __future__ import annotations

import enum
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from auditledger.errors import ValidationError

KESTRA_RESOURCE_TYPES: frozenset[str] = frozenset(
    [
        "FLOW",
        "EXECUTION",
        "NAMESPACE",
        "NAMESPACE_FILE",
        "TRIGGER",
        "TEMPLATE",
        "KV_STORE",
        "KVSTORE",
        "SECRET",
        "USER",
        "CREDENTIAL",
        "GROUP",
        "ROLE",
        "BINDING",
        "INVITATION",
        "TENANT",
        "TENANT_ACCESS",
        "SETTING",
        "SYSTEM_SETTINGS",
        "TENANT_SETTINGS",
        "SECURITY_INTEGRATION",
        "WORKER_GROUP",
        "WORKER_QUEUE",
        "APP",
        "APP_EXECUTION",
        "ASSET",
        "BLUEPRINT",
        "DASHBOARD",
        "TESTSUITE",
        "TESTSUITE_RUN",
        "VERSIONED_PLUGIN",
        "KILL_SWITCH",
        "INSTANCE",
        "AUDITLOG",
        "SERVICE_ACCOUNT",
        "REUSABLE_INPUTS",
        "COPILOT",
        "MCP_SERVER",
        "SUPPORT",
        "POLICY",
        "CASE",
        "PROMOTION_TARGET",
        "CASE_TEMPLATE",
        "BANNER",
        "UNKNOWN",
    ]
)
KESTRA_ACTIONS: frozenset[str] = frozenset(
    [
        "CREATE",
        "READ",
        "UPDATE",
        "DELETE",
        "LOGIN",
        "LOGOUT",
        "IMPERSONATE",
        "LOGIN_FAILURE",
        "ACCOUNT_LOCKED",
        "PROMOTE",
        "UNKNOWN",
    ]
)

NAME_RE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
DETAIL_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
TENANT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

MAX_DETAILS = 64
MAX_DETAIL_VALUE = 1024
MAX_STATE_BYTES = 1 << 20
MAX_ACTOR_FIELD = 256
MAX_JSON_DEPTH = 32
MAX_SAFE_INT = (1 << 53) - 1


class ActorType(enum.StrEnum):
    USER = "USER"
    SERVICE_ACCOUNT = "SERVICE_ACCOUNT"
    SYSTEM = "SYSTEM"


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class Limits:
    """The configurable part of the contract."""

    max_state_bytes: int = MAX_STATE_BYTES


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: a human user, a service account or the system itself."""

    type: ActorType
    id: str
    name: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    impersonated_by: str | None = None

    def to_dict(self) -> dict[str, str]:
        out = {"type": self.type.value, "id": self.id}
        if self.name is not None:
            out["name"] = self.name
        if self.ip is not None:
            out["ip"] = self.ip
        if self.user_agent is not None:
            out["user_agent"] = self.user_agent
        if self.impersonated_by is not None:
            out["impersonated_by"] = self.impersonated_by
        return out

    @staticmethod
    def user(id: str, name: str | None = None, **extra: str) -> Actor:
        return Actor(ActorType.USER, id, name, **extra)

    @staticmethod
    def service_account(id: str, name: str | None = None, **extra: str) -> Actor:
        return Actor(ActorType.SERVICE_ACCOUNT, id, name, **extra)

    @staticmethod
    def system(id: str = "auditledger") -> Actor:
        return Actor(ActorType.SYSTEM, id)


@dataclass(frozen=True, slots=True)
class EventInput:
    """What a caller records; the ledger adds id, tenant, seq, date and leaf hash."""

    resource_type: str
    action: str
    actor: Actor
    details: Mapping[str, str] = field(default_factory=dict)
    before: Any = None
    after: Any = None
    outcome: Outcome = Outcome.SUCCESS
    occurred_at: datetime | None = None
    source: Mapping[str, str] | None = None  # who sent it: ingesting token id, source ip
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One stored entry of the ledger."""

    id: str
    tenant: str
    seq: int
    date: datetime
    resource_type: str
    action: str
    actor: Actor
    details: Mapping[str, str]
    before: Any
    after: Any
    outcome: Outcome
    occurred_at: datetime | None
    source: Mapping[str, str] | None
    leaf_hash: bytes

    def to_dict(self) -> dict[str, Any]:
        """Our full JSON shape (API, CLI ``--json``, exports)."""
        out: dict[str, Any] = {
            "id": self.id,
            "tenant": self.tenant,
            "seq": self.seq,
            "date": format_date(self.date),
            "resource_type": self.resource_type,
            "action": self.action,
            "actor": self.actor.to_dict(),
            "details": dict(self.details),
            "before": self.before,
            "after": self.after,
            "outcome": str(self.outcome),
            "occurred_at": None if self.occurred_at is None else format_date(self.occurred_at),
            "source": None if self.source is None else dict(self.source),
            "leaf_hash": self.leaf_hash.hex(),
        }
        return out


# ---------------------------------------------------------------- dates


def format_date(value: datetime) -> str:
    """UTC, microseconds, ``Z``: ``2026-11-24T10:15:30.123456Z``."""
    return format_micros(to_micros(value))


def format_micros(value: int) -> str:
    """``format_date`` of microseconds since the epoch; the seconds part is cached (hot path)."""
    seconds, micros = divmod(value, 1_000_000)
    prefix = _SECOND_TEXT.get(seconds)
    if prefix is None:
        if len(_SECOND_TEXT) > 4096:
            _SECOND_TEXT.clear()
        prefix = _SECOND_TEXT[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{prefix}.{micros:06d}Z"


_SECOND_TEXT: dict[int, str] = {}


def to_micros(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(0, 0, value)  # positional: a third cheaper than microseconds= (once per receipt)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_utc(value: object, field_name: str) -> datetime:
    """A UTC date-time from an ISO 8601 text or an aware ``datetime``; refuses other zones."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(field_name, f"not an ISO 8601 date-time: {value[:64]!r}") from None
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise ValidationError(field_name, f"expected an ISO 8601 date-time text, got {_kind(value)}")
    offset = parsed.utcoffset()
    if offset is None:
        raise ValidationError(field_name, "date-time has no time zone; give it in UTC (suffix Z)")
    if offset != timedelta(0):
        raise ValidationError(field_name, f"date-time must be in UTC (Z or +00:00), got offset {offset}")
    return parsed.astimezone(UTC)


# ---------------------------------------------------------------- validation


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a text",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def check_name(value: object, field_name: str, known: frozenset[str]) -> str:
    """A resource type or action: Kestra's or a custom one of the same form."""
    if not isinstance(value, str):
        raise ValidationError(field_name, f"expected a text, got {_kind(value)}")
    if value in known:
        return value
    if NAME_RE.fullmatch(value) is None:
        raise ValidationError(
            field_name, f"{value[:80]!r} is not a known value nor of the form ^[A-Z][A-Z0-9_]{{0,63}}$"
        )
    return value


def check_tenant(value: object) -> str:
    if not isinstance(value, str) or TENANT_RE.fullmatch(value) is None:
        raise ValidationError("tenant", f"{str(value)[:80]!r} is not of the form ^[a-z0-9][a-z0-9_-]{{0,62}}$")
    return value


def _check_text(value: object, field_name: str, limit: int, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise ValidationError(field_name, "is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(field_name, f"expected a text, got {_kind(value)}")
    if required and not value:
        raise ValidationError(field_name, "must not be empty")
    if len(value) > limit:
        raise ValidationError(field_name, f"is {len(value)} characters, the limit is {limit}")
    if "\x00" in value:
        raise ValidationError(field_name, "contains a NUL character")
    return value


_ACTOR_KEYS = frozenset(("type", "id", "name", "ip", "user_agent", "impersonated_by"))
_ACTOR_TYPES = {t.value: t for t in ActorType}
_OUTCOMES = {o.value: o for o in Outcome}


_ACTORS: dict[tuple[object, ...], Actor] = {}


def _plain_text(value: object, limit: int) -> bool:
    return type(value) is str and len(value) <= limit and "\x00" not in value


def check_actor(value: object) -> Actor:
    # Fast path for the common, valid shape; anything unusual takes the precise path below.
    if type(value) is dict and value.keys() <= _ACTOR_KEYS:
        get = value.get
        key = (get("type"), get("id"), get("name"), get("ip"), get("user_agent"), get("impersonated_by"))
        try:
            # A ledger's events name few distinct actors: one seen valid before is the same
            # (immutable) Actor again. Only valid values are remembered, so a hit is valid.
            return _ACTORS[key]
        except (KeyError, TypeError):  # TypeError: an unhashable (so invalid) member
            pass
        kind, ident, name, ip, agent, by = key
        if (
            type(kind) is str
            and kind in _ACTOR_TYPES
            and ident
            and _plain_text(ident, MAX_ACTOR_FIELD)
            and (name is None or _plain_text(name, MAX_ACTOR_FIELD))
            and (ip is None or _plain_text(ip, MAX_ACTOR_FIELD))
            and (agent is None or _plain_text(agent, MAX_ACTOR_FIELD))
            and (by is None or _plain_text(by, MAX_ACTOR_FIELD))
        ):
            actor = Actor(_ACTOR_TYPES[kind], ident, name, ip, agent, by)
            if len(_ACTORS) >= 4096:
                _ACTORS.clear()
            _ACTORS[key] = actor
            return actor
    # An Actor (the integrations pass one per event) is immutable: valid fields, the same object back.
    if (
        type(value) is Actor
        and type(value.type) is ActorType
        and value.id
        and _plain_text(value.id, MAX_ACTOR_FIELD)
        and (value.name is None or _plain_text(value.name, MAX_ACTOR_FIELD))
        and (value.ip is None or _plain_text(value.ip, MAX_ACTOR_FIELD))
        and (value.user_agent is None or _plain_text(value.user_agent, MAX_ACTOR_FIELD))
        and (value.impersonated_by is None or _plain_text(value.impersonated_by, MAX_ACTOR_FIELD))
    ):
        return value
    if isinstance(value, Actor):
        # Not to_dict(): an Actor built by hand may hold its type as a plain text.
        raw: Mapping[str, object] = {key: getattr(value, key) for key in _ACTOR_KEYS}
        raw = {**raw, "type": str(value.type)}
    elif isinstance(value, Mapping):
        raw = value
    else:
        raise ValidationError("actor", f"expected an object, got {_kind(value)}")
    unknown = set(raw) - {"type", "id", "name", "ip", "user_agent", "impersonated_by"}
    if unknown:
        raise ValidationError("actor", f"unknown field {str(sorted(map(str, unknown))[0])[:64]!r}")
    kind = raw.get("type")
    try:
        actor_type = ActorType(str(kind))
    except ValueError:
        raise ValidationError("actor.type", f"{str(kind)[:40]!r} is not one of USER, SERVICE_ACCOUNT, SYSTEM") from None
    texts = {
        key: _check_text(raw.get(key), f"actor.{key}", MAX_ACTOR_FIELD, required=key == "id")
        for key in ("id", "name", "ip", "user_agent", "impersonated_by")
    }
    return Actor(
        actor_type,
        texts["id"] or "",
        texts["name"],
        texts["ip"],
        texts["user_agent"],
        texts["impersonated_by"],
    )


_GOOD_KEYS: set[str] = set()


def check_details(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if type(value) is dict and len(value) <= MAX_DETAILS:
        for key, item in value.items():
            if not _plain_text(item, MAX_DETAIL_VALUE) or key not in _GOOD_KEYS:
                break
        else:
            return dict(value)
    out = _check_details(value)
    if len(_GOOD_KEYS) < 4096:  # remember keys already checked, bounded
        _GOOD_KEYS.update(out)
    return out


def _check_details(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValidationError("details", f"expected an object of texts, got {_kind(value)}")
    if len(value) > MAX_DETAILS:
        raise ValidationError("details", f"has {len(value)} entries, the limit is {MAX_DETAILS}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or DETAIL_KEY_RE.fullmatch(key) is None:
            raise ValidationError(
                "details", f"key {str(key)[:80]!r} is not of the form ^[A-Za-z][A-Za-z0-9_.-]{{0,63}}$"
            )
        if type(item) is int:  # Kestra sends revision as a number; details are texts.
            item = str(item)
        if not isinstance(item, str):
            raise ValidationError(f"details.{key}", f"expected a text, got {_kind(item)}")
        if len(item) > MAX_DETAIL_VALUE:
            raise ValidationError(f"details.{key}", f"is {len(item)} characters, the limit is {MAX_DETAIL_VALUE}")
        if "\x00" in item:
            raise ValidationError(f"details.{key}", "contains a NUL character")
        out[key] = item
    return out


def check_state(value: object, field_name: str, limits: Limits) -> object:
    """A before/after state: JSON (objects, lists, texts, numbers, booleans, null) or a text.

    Integral floats become integers and integers must fit in an IEEE double
    exactly, so that every JSON implementation reads the same value back.
    """
    if value is None:
        return None
    if type(value) is str:
        # Invalid UTF-8 (unpaired surrogates) is caught when the event is encoded.
        if len(value) * 4 > limits.max_state_bytes:
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > limits.max_state_bytes:
                raise ValidationError(field_name, f"is {size} bytes, the limit is {limits.max_state_bytes}")
        return value
    # Fast path: orjson checks types, keys and integer range in C; the byte scans send
    # anything that may hold a float, a NaN (orjson writes null) or deep nesting to the
    # precise walk, which also names the problem.
    try:
        data = orjson.dumps(value, option=orjson.OPT_STRICT_INTEGER)
    except (orjson.JSONEncodeError, TypeError):
        data = b""
    if (
        data
        and len(data) <= limits.max_state_bytes
        and data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH
        and _FLOAT_OR_NULL.search(data) is None
        and type(value) in (dict, list)
    ):
        return value
    clean = _clean_json(value, field_name, 0)
    size = len(orjson.dumps(clean))
    if size > limits.max_state_bytes:
        raise ValidationError(field_name, f"is {size} bytes as JSON, the limit is {limits.max_state_bytes}")
    return clean


def _check_unicode(text: str, field_name: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(field_name, "contains an unpaired surrogate (invalid UTF-8)") from None


# A number token with a fraction or exponent, or a null token; inside strings these
# patterns are rare, and a false alarm only means taking the precise walk.
_FLOAT_OR_NULL = re.compile(rb"[:\[,](?:-?[0-9]+[.eE]|null)")


def invalid_text_field(draft: EventInput) -> str:
    """The first field of ``draft`` holding text that is not valid UTF-8 (for error messages)."""
    for name, item in [
        ("actor", draft.actor.to_dict()),
        ("details", draft.details),
        ("before", draft.before),
        ("after", draft.after),
    ]:
        found = _find_surrogate(item, name)
        if found:
            return found
    return "event"


def _find_surrogate(value: object, path: str) -> str | None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _find_surrogate(key, path) or _find_surrogate(item, f"{path}.{key}")
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _find_surrogate(item, f"{path}[{i}]")
            if found:
                return found
    return None


def _clean_json(value: object, path: str, depth: int) -> object:
    if depth > MAX_JSON_DEPTH:
        raise ValidationError(path, f"nested deeper than {MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        _check_unicode(value, path)
        return value
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INT:
            raise ValidationError(path, "integer outside ±(2**53 - 1); send it as a text")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(path, "NaN and infinities are not JSON")
        if value.is_integer() and abs(value) <= MAX_SAFE_INT:
            return int(value)
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(path, f"object key {key!r} is not a text")
            _check_unicode(key, path)
            out[key] = _clean_json(item, f"{path}.{key}", depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_clean_json(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise ValidationError(path, f"{_kind(value)} is not a JSON value")


def with_source(draft: EventInput, source: Mapping[str, str]) -> EventInput:
    """``draft`` stamped with who sent it; the server's ingest path, per event, where
    ``dataclasses.replace`` (which walks the fields by name) cost as much as validating."""
    return EventInput(
        draft.resource_type,
        draft.action,
        draft.actor,
        draft.details,
        draft.before,
        draft.after,
        draft.outcome,
        draft.occurred_at,
        source,
        draft.idempotency_key,
    )


_INPUT_FIELDS = frozenset(
    [
        "resource_type",
        "action",
        "actor",
        "details",
        "before",
        "after",
        "outcome",
        "occurred_at",
        "source",
        "idempotency_key",
    ]
)


def event_input(
    raw: Mapping[str, Any] | EventInput, limits: Limits = DEFAULT_LIMITS, *, source: Mapping[str, str] | None = None
) -> EventInput:
    """Validate one event from a mapping (API/CLI) or an ``EventInput`` (Python callers).

    ``source``: who sent it, stamped by the server (not the caller's to set, so not checked
    again); replaces any ``source`` of ``raw``, as ``with_source`` would, in one object.
    """
    if isinstance(raw, EventInput):
        data: Mapping[str, Any] = {name: getattr(raw, name) for name in _INPUT_FIELDS}
    elif isinstance(raw, Mapping):
        data = raw
        if not data.keys() <= _INPUT_FIELDS:
            unknown = sorted(str(k) for k in set(data) - _INPUT_FIELDS)[0]
            raise ValidationError("event", f"unknown field {unknown[:64]!r}")
    else:
        raise ValidationError("event", f"expected an object, got {_kind(raw)}")
    raw_outcome = data.get("outcome") or "success"
    outcome = _OUTCOMES.get(raw_outcome) if isinstance(raw_outcome, str) else None
    if outcome is None:
        raise ValidationError("outcome", f"{str(raw_outcome)[:40]!r} is not 'success' or 'failure'")
    occurred = data.get("occurred_at")
    if source is None and (source := data.get("source")) is not None:
        if not isinstance(source, Mapping):
            raise ValidationError("source", f"expected an object of texts, got {_kind(source)}")
        source = {k: _check_text(v, f"source.{k}", MAX_ACTOR_FIELD, required=True) or "" for k, v in source.items()}
    key = _check_text(data.get("idempotency_key"), "idempotency_key", 128, required=False)
    # Positional: a frozen dataclass built from ten keyword arguments costs three times as much
    # (this runs once per ingested event). The order is EventInput's field order.
    return EventInput(
        check_name(data.get("resource_type"), "resource_type", KESTRA_RESOURCE_TYPES),
        check_name(data.get("action"), "action", KESTRA_ACTIONS),
        check_actor(data.get("actor")),
        check_details(data.get("details")),
        check_state(data.get("before"), "before", limits),
        check_state(data.get("after"), "after", limits),
        outcome,
        None if occurred is None else parse_utc(occurred, "occurred_at"),
        source,
        key,
    )
