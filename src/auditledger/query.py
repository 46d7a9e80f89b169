"""The search language, parsed into a :class:`Query` value.

A ``Query`` is a conjunction of :class:`Term` values plus an optional date
range. Each term tests one field against any of its values (OR within a term,
AND across terms) and may be negated. Stores translate a ``Query`` into their
own SQL; nothing here touches a database.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from auditledger.errors import ValidationError


class Field(enum.StrEnum):
    """What a term looks at."""

    RESOURCE = "resource"
    ACTION = "action"
    ACTOR = "actor"  # actor id
    ACTOR_TYPE = "actor.type"
    OUTCOME = "outcome"
    ID = "id"  # event id
    DETAIL = "detail"  # details[key]; needs Term.key
    TEXT = "text"  # free word: any detail value or the actor's id/name


class Match(enum.StrEnum):
    """How a term's value is compared."""

    EXACT = "exact"
    PREFIX = "prefix"  # value*
    NAMESPACE = "namespace"  # the value itself or a child: ``a`` matches ``a`` and ``a.b``
    CONTAINS = "contains"
    SUFFIX = "suffix"


@dataclass(frozen=True, slots=True)
class Term:
    """``field`` (``key`` for details) matches any of ``values`` by ``match``."""

    field: Field
    values: tuple[str, ...]
    key: str | None = None
    match: Match = Match.EXACT
    negate: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    """Terms ANDed together, ``after <= date < before``; the empty query matches all."""

    terms: tuple[Term, ...] = ()
    after: datetime | None = None
    before: datetime | None = None
    any_of: tuple[Query, ...] = field(default=())  # OR-groups (Kestra's filters[or]); empty = none

    def and_(self, *terms: Term) -> Query:
        return Query(self.terms + terms, self.after, self.before, self.any_of)


# --- the language -----------------------------------------------------------
#
#   query   := term*                       (whitespace between terms; AND)
#   term    := ["-"] (field ":" ["="] items | item)
#   items   := item ("," item)*            (any of)
#   item    := ["*"] (quoted | bare) ["*"] (x* prefix, *x suffix, *x* contains)
#   field   := resource | action | actor | actor.type | outcome | id | after | before
#            | KEY | "details[" KEY "]"    (a details key; the bracket form reaches
#                                           keys that share a reserved name)
#
# A token whose part before ':' is none of these (``12:30``) is a free word.
# ``namespace:a`` matches ``a`` and its children (Match.NAMESPACE);
# ``namespace:=a`` matches ``a`` only. Free words and quoted phrases are TEXT.

MAX_TEXT = 4096
MAX_TERMS = 64
MAX_VALUES = 100
MAX_VALUE_CHARS = 1024

ACTOR_TYPES = ("USER", "SERVICE_ACCOUNT", "SYSTEM")
OUTCOMES = ("success", "failure")
RESERVED = frozenset({"resource", "action", "actor", "actor.type", "outcome", "id", "after", "before"})

KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
NAME_RE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")  # resource types and actions
_NAME_PART_RE = re.compile(r"[A-Z0-9_]{1,64}")  # a suffix or infix of one
_RELATIVE_RE = re.compile(r"-(\d{1,9})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SIMPLE_FIELDS = {
    "resource": Field.RESOURCE,
    "action": Field.ACTION,
    "actor": Field.ACTOR,
    "actor.type": Field.ACTOR_TYPE,
    "outcome": Field.OUTCOME,
    "id": Field.ID,
}
_FIELD_NAMES = {v: k for k, v in _SIMPLE_FIELDS.items()}


def all_of(*queries: Query) -> Query:
    """The conjunction of ``queries``: terms concatenated, date ranges intersected.

    OR-groups on both sides are distributed (``(a|b) & (c|d)`` becomes
    ``a&(c|d) | b&(c|d)``), so the result needs no new structure.
    """
    result = Query()
    for q in queries:
        after = max((d for d in (result.after, q.after) if d is not None), default=None)
        before = min((d for d in (result.before, q.before) if d is not None), default=None)
        if not result.any_of:
            any_of = q.any_of
        elif not q.any_of:
            any_of = result.any_of
        else:
            tail = Query(any_of=q.any_of)
            any_of = tuple(all_of(member, tail) for member in result.any_of)
        result = Query(result.terms + q.terms, after, before, any_of)
    return result


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive date-time is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_date(text: str, now: datetime) -> datetime:
    """An ISO date or date-time (to UTC) or ``-7d``/``-24h``/``-30m``/``-2w``/``-10s`` back from ``now``.

    Raises ``ValueError`` for anything else; callers turn it into a ValidationError
    that says where.
    """
    m = _RELATIVE_RE.fullmatch(text)
    try:
        if m:
            return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        if len(text) < 8 or not text[:4].isdigit():
            raise ValueError(text)
        return as_utc(datetime.fromisoformat(text))
    except OverflowError as exc:
        raise ValueError(text) from exc


@dataclass(frozen=True, slots=True)
class _Item:
    value: str
    match: Match
    wild: bool  # written with a *
    pos: int


def _fail(message: str) -> ValidationError:
    return ValidationError("q", message)


def _show(token: str) -> str:
    return repr(token if len(token) <= 40 else token[:37] + "...")


class _Parser:
    def __init__(self, text: str, now: datetime) -> None:
        self.text = text
        self.now = now
        self.i = 0

    # -- lexing --------------------------------------------------------------

    def quoted(self) -> str:
        text, start = self.text, self.i
        out: list[str] = []
        j = start + 1
        while j < len(text):
            c = text[j]
            if c == "\\" and j + 1 < len(text):
                out.append(text[j + 1])
                j += 2
            elif c == '"':
                self.i = j + 1
                return "".join(out)
            else:
                out.append(c)
                j += 1
        raise _fail(f"unterminated quote at position {start}")

    def item(self, in_list: bool) -> _Item:
        text, start = self.text, self.i
        stops = ',"' if in_list else '"'
        lead = trail = False
        if self.i < len(text) and text[self.i] == "*":
            lead = True
            self.i += 1
        if self.i < len(text) and text[self.i] == '"':
            value = self.quoted()
            if self.i < len(text) and text[self.i] == "*":
                trail = True
                self.i += 1
        else:
            j = self.i
            while j < len(text) and not text[j].isspace() and text[j] not in stops:
                j += 1
            value, self.i = text[self.i : j], j
            if lead and value == "":
                lead, trail = False, True  # a lone * : any value
            elif value.endswith("*"):
                trail, value = True, value[:-1]
            elif not lead and value == "":
                raise _fail(f"missing value at position {start}")
        if self.i < len(text) and not text[self.i].isspace() and not (in_list and text[self.i] == ","):
            what = "quote" if text[self.i] == '"' else _show(text[self.i])
            raise _fail(f"unexpected {what} at position {self.i} in {_show(text[start : self.i + 1])}")
        if len(value) > MAX_VALUE_CHARS:
            raise _fail(f"value at position {start} has {len(value)} characters, at most {MAX_VALUE_CHARS}")
        match = {
            (False, False): Match.EXACT,
            (False, True): Match.PREFIX,
            (True, False): Match.SUFFIX,
            (True, True): Match.CONTAINS,
        }[(lead, trail)]
        return _Item(value, match, lead or trail, start)

    def items(self) -> list[_Item]:
        found = [self.item(in_list=True)]
        while self.i < len(self.text) and self.text[self.i] == ",":
            self.i += 1
            found.append(self.item(in_list=True))
            if len(found) > MAX_VALUES:
                raise _fail(f"more than {MAX_VALUES} values in the term at position {found[0].pos}")
        return found

    def field_name(self) -> str | None:
        """The ``name`` of ``name:`` at the cursor (consumed), or None for a free word."""
        text, j = self.text, self.i
        while j < len(text) and not text[j].isspace() and text[j] not in '":':
            j += 1
        if j >= len(text) or text[j] != ":":
            return None
        name, self.i = text[self.i : j], j + 1
        return name

    # -- terms ---------------------------------------------------------------

    def run(self) -> Query:
        text = self.text
        terms: list[Term] = []
        after: datetime | None = None
        before: datetime | None = None
        count = 0
        while True:
            while self.i < len(text) and text[self.i].isspace():
                self.i += 1
            if self.i >= len(text):
                break
            start = self.i
            count += 1
            if count > MAX_TERMS:
                raise _fail(f"more than {MAX_TERMS} terms (the 65th starts at position {start})")
            negate = text[self.i] == "-"
            if negate:
                self.i += 1
                if self.i >= len(text) or text[self.i].isspace():
                    raise _fail(f"nothing after '-' at position {start}")
            name_pos = self.i
            name = self.field_name()
            if name is not None and name not in RESERVED and _details_key(name) is None:
                # Not a field (``12:30``, ``10.0.0.7:80``): plain text, as in a search box.
                name, self.i = None, name_pos
            if name is None:
                item = self.item(in_list=False)
                if item.value == "" and item.match is Match.EXACT:
                    raise _fail(f"empty phrase at position {item.pos}")
                terms.append(Term(Field.TEXT, (item.value,), match=item.match, negate=negate))
                continue
            if self.i >= len(text) or text[self.i].isspace():
                raise _fail(f"missing value after {_show(name + ':')} at position {name_pos}")
            exact = text[self.i] == "="
            if exact:
                self.i += 1
            values = self.items()
            if name in ("after", "before"):
                moment = self.date(name, start, negate, values)
                if name == "after":
                    after = moment if after is None else max(after, moment)
                else:
                    before = moment if before is None else min(before, moment)
            else:
                terms.append(self.term(name, name_pos, negate, exact, values))
        return Query(tuple(terms), after, before)

    def date(self, name: str, start: int, negate: bool, values: list[_Item]) -> datetime:
        if negate:
            raise _fail(f"{name}: cannot be negated (position {start})")
        if len(values) > 1 or values[0].wild:
            raise _fail(f"{name}: takes one date, no list or * (position {values[0].pos})")
        try:
            return parse_date(values[0].value, self.now)
        except ValueError:
            raise _fail(
                f"bad date {_show(values[0].value)} for {name}: at position {values[0].pos}, "
                "expected YYYY-MM-DD, an ISO 8601 date-time, or -7d, -24h, -30m, -2w, -10s"
            ) from None

    def term(self, name: str, pos: int, negate: bool, exact: bool, values: list[_Item]) -> Term:
        match = values[0].match
        for item in values[1:]:
            if item.match is not match:
                raise _fail(
                    f"values at positions {values[0].pos} and {item.pos} mix * patterns; "
                    f"all values of {name}: must use the same one"
                )
        if exact and match is not Match.EXACT:
            raise _fail(f"'=' means exact and cannot be combined with * (position {values[0].pos})")
        field = _SIMPLE_FIELDS.get(name)
        if field is None:
            key = _details_key(name) or name  # run() made free words of invalid names
            if key == "namespace" and match is Match.EXACT and not exact:
                match = Match.NAMESPACE
            return Term(Field.DETAIL, tuple(i.value for i in values), key, match, negate)
        out: list[str] = []
        for item in values:
            out.append(check_value(field, item.value, match, f" at position {item.pos}"))
        return Term(field, tuple(out), None, match, negate)


def _details_key(name: str) -> str | None:
    """The details key that field name ``name`` (``key`` or ``details[key]``) denotes, if valid."""
    key = name[8:-1] if name.startswith("details[") and name.endswith("]") else name
    return key if KEY_RE.fullmatch(key) and (key != name or key not in RESERVED) else None


def check_value(field: Field, value: str, match: Match, where: str) -> str:
    """``value`` normalised for ``field`` (upper or lower case), or a ValidationError saying why not.

    ``where`` is appended to the offending value in the message (e.g. ``" at position 7"``).
    """
    if field in (Field.RESOURCE, Field.ACTION):
        value = value.upper()
        pattern = NAME_RE if match in (Match.EXACT, Match.PREFIX) else _NAME_PART_RE
        if not pattern.fullmatch(value):
            raise _fail(
                f"bad {field.value} {_show(value)}{where}: expected a letter, then up to 63 "
                "letters, digits or '_' (e.g. FLOW, UPDATE)"
            )
    elif field is Field.ACTOR_TYPE:
        value = value.upper()
        if value not in ACTOR_TYPES or match is not Match.EXACT:
            raise _fail(f"unknown actor type {_show(value)}{where}, expected USER, SERVICE_ACCOUNT or SYSTEM")
    elif field is Field.OUTCOME:
        value = value.lower()
        if value not in OUTCOMES or match is not Match.EXACT:
            raise _fail(f"unknown outcome {_show(value)}{where}, expected success or failure")
    return value


def parse(text: str, *, now: datetime | None = None) -> Query:
    """Parse the search language into a :class:`Query`.

    ``now`` anchors relative dates (``after:-7d``); it defaults to the current
    time. Raises :class:`ValidationError` with ``field="q"`` and a message that
    says where (a 0-based character position) and why.
    """
    if len(text) > MAX_TEXT:
        raise _fail(f"query has {len(text)} characters, at most {MAX_TEXT}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate would only fail later, inside the store's driver
        raise _fail(f"position {exc.start}: not valid UTF-8 (unpaired surrogate)") from None
    return _Parser(text, as_utc(now) if now is not None else datetime.now(UTC)).run()


# --- back to text -----------------------------------------------------------


def _render(value: str, match: Match, free: bool) -> str:
    # Quote what the lexer would read differently: a leading '=' (exact marker)
    # or '-' (negation, free words only), stars, separators and ':' in free words.
    bare = (
        value != ""
        and not value.startswith("=")
        and not (free and value.startswith("-"))
        and not any(c.isspace() or c in '",*' or (free and c == ":") for c in value)
    )
    if match is Match.PREFIX and value == "":
        return "*"
    body = value if bare else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if match is Match.PREFIX:
        return body + "*"
    if match is Match.SUFFIX:
        return "*" + body
    if match is Match.CONTAINS:
        return "*" + body + "*"
    return body


def _unsayable(term: Term, why: str) -> ValidationError:
    return ValidationError("q", f"{term!r} has no text form: {why}")


def _term_text(term: Term) -> str:
    sign = "-" if term.negate else ""
    if not term.values:
        raise _unsayable(term, "no values")
    if term.field is Field.TEXT:
        if len(term.values) != 1 or term.key is not None:
            raise _unsayable(term, "a free word has exactly one value and no key")
        if term.match is Match.NAMESPACE or (term.match is Match.EXACT and term.values[0] == ""):
            raise _unsayable(term, "free words match exactly, by prefix, suffix or infix, never empty")
        return sign + _render(term.values[0], term.match, free=True)
    if term.field is Field.DETAIL:
        if term.key is None or not KEY_RE.fullmatch(term.key):
            raise _unsayable(term, "a details term needs a valid key")
        name = f"details[{term.key}]" if term.key in RESERVED else term.key
        match = term.match
        if term.key == "namespace":
            if match is Match.EXACT:
                name += ":="
            elif match is Match.NAMESPACE:
                match = Match.EXACT
        if match is Match.NAMESPACE:
            raise _unsayable(term, "namespace-and-children matching exists for the namespace key only")
    else:
        if term.key is not None or term.match is Match.NAMESPACE:
            raise _unsayable(term, "only details terms take a key or namespace matching")
        name, match = _FIELD_NAMES[term.field], term.match
    sep = "" if name.endswith("=") else ":"
    return sign + name + sep + ",".join(_render(v, match, free=False) for v in term.values)


def format_date(moment: datetime) -> str:
    """``moment`` as ISO 8601 in UTC with microseconds, e.g. ``2026-01-01T00:00:00.000000Z``."""
    return as_utc(moment).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def to_text(q: Query) -> str:
    """Render ``q`` in the search language so that ``parse(to_text(q)) == q``.

    Raises :class:`ValidationError` for what the language cannot say: OR-groups
    (``any_of``), free-word terms with several values, namespace-style matching
    on keys other than ``namespace``.
    """
    if q.any_of:
        raise ValidationError("q", "OR-groups (any_of) have no text form")
    parts = [_term_text(t) for t in q.terms]
    if q.after is not None:
        parts.append("after:" + format_date(q.after))
    if q.before is not None:
        parts.append("before:" + format_date(q.before))
    return " ".join(parts)
