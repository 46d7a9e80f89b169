"""Kestra's audit-log search parameters, translated into a :class:`~auditledger.query.Query`.

Kestra 2.0 sends ``filters[FIELD][OP]=VALUE`` (``../shared/reference/kestra-api.md``):
lists comma-joined, map values with a third bracket
(``filters[details][EQUALS][namespace]=company.team``), OR-groups
``filters[or][i]...`` and one level of nesting (``filters[and][i][or][j]...``);
Kestra 1.x sent flat parameters (``namespace``, ``resources[]``, ``details=k:v`` ...).
Both are accepted. Every refusal is a :class:`ValidationError` whose ``field``
is the offending parameter name.

Choices where Kestra is silent or where the Query cannot say it:

* ``namespace``/``flowId``/``executionId``/``id`` are details keys; Kestra's
  ``id`` filter is the resource id (``detail.id``), not the event id.
* ``PREFIX`` (a namespace and its children) applies to the namespace only.
* ``REGEX`` is accepted when the pattern is a literal, optionally anchored
  (``^a\\.b``, ``team$``, ``^x$``, ``.*x.*``): it becomes exact, prefix,
  suffix or contains. Anything else is refused as not supported.
* ``IS_NULL``/``IS_NOT_NULL`` on a details key become "no value" / "any
  value" (a negated / plain prefix match on ``""``).
* ``startDate`` and ``endDate`` both compare the event date; ``EQUALS`` means
  that very microsecond. Bounds are intersected.
* ``timeRange`` is an ISO 8601 duration back from ``now`` (``PT24H``, ``P7D``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from auditledger.errors import ValidationError
from auditledger.query import (
    KEY_RE,
    MAX_TERMS,
    MAX_VALUES,
    Field,
    Match,
    Query,
    Term,
    all_of,
    as_utc,
    check_value,
    parse,
    parse_date,
)

__all__ = ["KESTRA_IGNORED", "from_kestra_params"]

KESTRA_IGNORED = frozenset({"page", "size", "sort", "tenant"})

_TICK = timedelta(microseconds=1)
_BRACKETS_RE = re.compile(r"filters((?:\[[^\[\]]*\])+)")
_PART_RE = re.compile(r"\[([^\[\]]*)\]")
_DURATION_RE = re.compile(
    r"P(?!$)(?:(\d{1,6})Y)?(?:(\d{1,6})M)?(?:(\d{1,6})W)?(?:(\d{1,6})D)?"
    r"(?:T(?=\d)(?:(\d{1,9})H)?(?:(\d{1,9})M)?(?:(\d{1,9}(?:[.,]\d{1,9})?)S)?)?"
)
_PLUS_AS_SPACE_RE = re.compile(r"(?<=\d) (\d\d:?\d\d)$")
_LITERAL_RE = re.compile(r"(?:[^\\.^$*+?()\[\]{}|]|\\[\\.^$*+?()\[\]{}|/-])*")

# Kestra field name (lower case) -> (our field, details key)
_FIELDS: dict[str, tuple[Field, str | None]] = {
    "namespace": (Field.DETAIL, "namespace"),
    "flowid": (Field.DETAIL, "flowId"),
    "executionid": (Field.DETAIL, "executionId"),
    "id": (Field.DETAIL, "id"),
    "userid": (Field.ACTOR, None),
    "resources": (Field.RESOURCE, None),
    "resource": (Field.RESOURCE, None),
    "type": (Field.ACTION, None),
    "action": (Field.ACTION, None),
    "details": (Field.DETAIL, None),
}
_DATE_FIELDS = frozenset({"startdate", "enddate"})
_LIST_OPS = frozenset({"IN", "NOT_IN"})
_SIMPLE_OPS: dict[str, tuple[Match, bool]] = {
    "EQUALS": (Match.EXACT, False),
    "NOT_EQUALS": (Match.EXACT, True),
    "IN": (Match.EXACT, False),
    "NOT_IN": (Match.EXACT, True),
    "STARTS_WITH": (Match.PREFIX, False),
    "ENDS_WITH": (Match.SUFFIX, False),
    "CONTAINS": (Match.CONTAINS, False),
    "NOT_CONTAINS": (Match.CONTAINS, True),
    "PREFIX": (Match.NAMESPACE, False),
}
_ALL_OPS = frozenset(_SIMPLE_OPS) | {
    "REGEX",
    "IS_NULL",
    "IS_NOT_NULL",
    "GREATER_THAN",
    "LESS_THAN",
    "GREATER_THAN_OR_EQUAL_TO",
    "LESS_THAN_OR_EQUAL_TO",
}


@dataclass
class _Group:
    """One AND-node of the filter tree: its own leaves, AND-children and one OR-group."""

    leaves: list[Query] = field(default_factory=list)
    ands: dict[int, _Group] = field(default_factory=dict)
    ors: dict[int, _Group] = field(default_factory=dict)

    def query(self) -> Query:
        parts = list(self.leaves) + [self.ands[i].query() for i in sorted(self.ands)]
        members = tuple(self.ors[i].query() for i in sorted(self.ors))
        if len(members) == 1:
            parts.append(members[0])
        elif members:
            parts.append(Query(any_of=members))
        return all_of(*parts)


def _duration(text: str) -> Callable[[datetime], datetime]:
    """The function that steps a date back by the ISO 8601 duration ``text`` (``P1M`` is a calendar month)."""
    m = _DURATION_RE.fullmatch(text.upper())
    if not m:
        raise ValueError(text)
    years, months, weeks, days, hours, minutes = (int(g or 0) for g in m.groups()[:6])
    seconds = float((m.group(7) or "0").replace(",", "."))
    delta = timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)

    def back(now: datetime) -> datetime:
        total = now.year * 12 + now.month - 1 - years * 12 - months
        year, month = divmod(total, 12)
        day = now.day
        while True:  # clamp 31 March - 1 month to 28/29 February
            try:
                shifted = now.replace(year=year, month=month + 1, day=day)
                break
            except ValueError:
                if day <= 28:
                    raise
                day -= 1
        return shifted - delta

    return back


def _regex(pattern: str, param: str) -> tuple[str, Match]:
    """A literal, optionally anchored regular expression as a value and a Match."""
    body, start, end = pattern, False, False
    if body.startswith("^"):
        body, start = body[1:], True
    elif body.startswith(".*"):
        body = body[2:]
    if body.endswith("$") and not body.endswith("\\$"):
        body, end = body[:-1], True
    elif body.endswith(".*") and not body.endswith("\\.*"):
        body = body[:-2]
    if not _LITERAL_RE.fullmatch(body):
        raise ValidationError(
            param,
            f"REGEX {pattern!r} is not supported: only literal patterns, optionally anchored "
            "with ^ and $, are (use STARTS_WITH, ENDS_WITH, CONTAINS or EQUALS)",
        )
    value = re.sub(r"\\(.)", r"\1", body)
    match = {
        (True, True): Match.EXACT,
        (True, False): Match.PREFIX,
        (False, True): Match.SUFFIX,
        (False, False): Match.CONTAINS,
    }[(start, end)]
    return value, match


class _Translator:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self.count = 0

    def leaf(self, param: str, name: str, op: str, key: str | None, value: str) -> Query:
        self.count += 1
        if self.count > MAX_TERMS:
            raise ValidationError(param, f"more than {MAX_TERMS} filters")
        name, op = name.lower(), op.upper()
        if op not in _ALL_OPS:
            raise ValidationError(param, f"unknown operation {op!r}, expected one of {', '.join(sorted(_ALL_OPS))}")
        if name == "q":
            if op not in ("EQUALS", "CONTAINS") or key is not None:
                raise ValidationError(param, "q takes EQUALS (or CONTAINS) and search text")
            try:
                return parse(value, now=self.now)
            except ValidationError as exc:
                raise ValidationError(param, exc.message) from None
        if name in _DATE_FIELDS:
            return self.date(param, op, key, value)
        if name == "timerange":
            if op != "EQUALS" or key is not None:
                raise ValidationError(param, "timeRange takes EQUALS and an ISO 8601 duration such as PT24H or P7D")
            try:
                return Query(after=_duration(value)(self.now))
            except (ValueError, OverflowError):
                raise ValidationError(
                    param, f"bad duration {value!r}, expected ISO 8601 such as PT24H or P7D"
                ) from None
        if name not in _FIELDS:
            raise ValidationError(
                param,
                f"unknown field {name!r}, expected q, namespace, flowId, executionId, userId, id, "
                "resources, details, type, startDate, endDate or timeRange",
            )
        target, dkey = _FIELDS[name]
        if name == "details":
            if key is None:
                key, sep, value = value.partition(":")
                if not sep:
                    raise ValidationError(param, f"details needs a key: filters[details][{op}][KEY]=value or key:value")
            if not KEY_RE.fullmatch(key):
                raise ValidationError(param, f"bad details key {key!r}")
            dkey = key
        elif key is not None:
            raise ValidationError(param, f"{name} takes no [key]")
        return Query((self.term(param, op, target, dkey, value),))

    def term(self, param: str, op: str, target: Field, key: str | None, value: str) -> Term:
        if op in ("IS_NULL", "IS_NOT_NULL"):
            if target is not Field.DETAIL:
                raise ValidationError(param, f"{op} applies to details keys only")
            if value.lower() not in ("", "true", "false"):
                raise ValidationError(param, f"{op} takes true, false or nothing, not {value!r}")
            absent = (op == "IS_NULL") != (value.lower() == "false")
            return Term(Field.DETAIL, ("",), key, Match.PREFIX, negate=absent)
        if op == "REGEX":
            value, match = _regex(value, param)
            negate = False
        elif op in _SIMPLE_OPS:
            match, negate = _SIMPLE_OPS[op]
        else:
            raise ValidationError(param, f"{op} applies to startDate and endDate only")
        if match is Match.NAMESPACE and key != "namespace":
            raise ValidationError(param, "PREFIX (a namespace and its children) applies to the namespace only")
        split = op in _LIST_OPS or target in (Field.RESOURCE, Field.ACTION)
        values = [v.strip() for v in value.split(",")] if split else [value]
        if len(values) > MAX_VALUES:
            raise ValidationError(param, f"more than {MAX_VALUES} values")
        if len(value) > 1024 * MAX_VALUES or any(len(v) > 1024 for v in values):
            raise ValidationError(param, "a value is longer than 1024 characters")
        try:
            out = tuple(check_value(target, v, match, "") for v in values)
        except ValidationError as exc:
            raise ValidationError(param, exc.message) from None
        return Term(target, out, key if target is Field.DETAIL else None, match, negate)

    def date(self, param: str, op: str, key: str | None, value: str) -> Query:
        if key is not None:
            raise ValidationError(param, "dates take no [key]")
        try:
            # An unencoded '+' in "+01:00" arrives as a space.
            value = _PLUS_AS_SPACE_RE.sub(r"+\1", value)
            moment = as_utc(datetime.fromisoformat(value)) if value[:1].isdigit() else parse_date(value, self.now)
        except (ValueError, OverflowError):
            raise ValidationError(param, f"bad date {value!r}, expected an ISO 8601 date-time") from None
        try:
            bounds = {
                "EQUALS": (moment, moment + _TICK),
                "GREATER_THAN": (moment + _TICK, None),
                "GREATER_THAN_OR_EQUAL_TO": (moment, None),
                "LESS_THAN": (None, moment),
                "LESS_THAN_OR_EQUAL_TO": (None, moment + _TICK),
            }[op]
        except KeyError:
            raise ValidationError(
                param, f"{op} does not apply to dates; use GREATER_THAN, LESS_THAN, ... or EQUALS"
            ) from None
        except OverflowError:
            raise ValidationError(param, f"date {value!r} is out of range") from None
        return Query(after=bounds[0], before=bounds[1])


def _flat(tr: _Translator, name: str, value: str, lists: dict[str, list[str]]) -> Query | None:
    """A Kestra 1.x flat parameter as a Query (or None when collected into ``lists``)."""
    lower = name.lower()
    if lower in ("resources", "resources[]", "type", "action"):
        lists.setdefault("resources" if lower.startswith("resources") else "type", []).append(value)
        return None
    if lower == "namespace":
        return tr.leaf(name, name, "PREFIX", None, value)  # 1.x: "a namespace filter prefix"
    if lower == "startdate":
        return tr.leaf(name, name, "GREATER_THAN_OR_EQUAL_TO", None, value)
    if lower == "enddate":
        return tr.leaf(name, name, "LESS_THAN_OR_EQUAL_TO", None, value)
    if lower in ("q", "flowid", "executionid", "userid", "id", "details", "timerange"):
        return tr.leaf(name, name, "EQUALS", None, value)
    raise ValidationError(
        name,
        "unknown parameter; filters are q, namespace, flowId, executionId, userId, id, "
        "resources, details, type, startDate, endDate or filters[FIELD][OP]",
    )


def from_kestra_params(
    params: Iterable[tuple[str, str]],
    *,
    now: datetime | None = None,
    ignore: Collection[str] = KESTRA_IGNORED,
) -> Query:
    """Translate Kestra's search query-string pairs (2.0 brackets and 1.x flat) into one :class:`Query`.

    ``ignore`` names parameters the caller handles itself (paging, sort,
    tenant, ...). ``now`` anchors ``timeRange`` and relative dates.
    """
    tr = _Translator(as_utc(now) if now is not None else datetime.now(UTC))
    root = _Group()
    lists: dict[str, list[str]] = {}
    for name, value in params:
        if name in ignore:
            continue
        if "\x00" in name or "\x00" in value:
            raise ValidationError(name.replace("\x00", "\\0"), "contains a NUL character")
        m = _BRACKETS_RE.fullmatch(name)
        if m is None:
            if name.startswith("filters"):
                raise ValidationError(name, "malformed filter, expected filters[FIELD][OP] or filters[FIELD][OP][KEY]")
            flat = _flat(tr, name, value, lists)
            if flat is not None:
                root.leaves.append(flat)
            continue
        parts = _PART_RE.findall(m.group(1))
        group, depth = root, 0
        while parts and parts[0].lower() in ("or", "and"):
            if len(parts) < 2 or not parts[1].isdigit() or len(parts[1]) > 6:
                raise ValidationError(
                    name, f"filters[{parts[0]}] needs a numeric index: filters[{parts[0]}][0][FIELD][OP]"
                )
            depth += 1
            if depth > 2:
                raise ValidationError(name, "groups nest one level at most")
            children = group.ors if parts[0].lower() == "or" else group.ands
            group = children.setdefault(int(parts[1]), _Group())
            parts = parts[2:]
        if len(parts) not in (2, 3):
            raise ValidationError(name, "expected filters[FIELD][OP] or filters[FIELD][OP][KEY]")
        key = parts[2] if len(parts) == 3 else None
        group.leaves.append(tr.leaf(name, parts[0], parts[1], key, value))
    for kind in sorted(lists):
        joined = ",".join(lists[kind])
        root.leaves.append(tr.leaf(kind, kind, "IN", None, joined))
    return root.query()
