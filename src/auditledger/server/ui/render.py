"""Pure helpers the pages use: dates, actors, resource links and filter editing.

Nothing here touches a request or a database, so each rule (which URLs are
safe to link, how a clicked tag joins the filter) is tested on its own.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlsplit

from auditledger.errors import ConfigError
from auditledger.model import NAME_RE, Event
from auditledger.query import Field, Match, Query, Term, parse, to_text

# ---------------------------------------------------------------- dates


def relative(moment: datetime, now: datetime) -> str:
    """``moment`` as a short age from ``now``: ``just now``, ``5 min ago``, ``3 h ago``, ``12 d ago``."""
    seconds = (now - moment).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 45:
        return "just now"
    for size, unit in ((365 * 86400, "y"), (30 * 86400, "mo"), (86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            amount = int(seconds // size)
            return f"in {amount} {unit}" if future else f"{amount} {unit} ago"
    return "just now"


# ---------------------------------------------------------------- actors


@dataclass(frozen=True, slots=True)
class ActorKind:
    css: str
    label: str
    glyph: str  # a letter in a shape; the shape and colour differ per kind (see app.css)


ACTOR_KINDS: Mapping[str, ActorKind] = {
    "USER": ActorKind("actor-user", "User", "U"),
    "SERVICE_ACCOUNT": ActorKind("actor-sa", "Service account", "SA"),
    "SYSTEM": ActorKind("actor-system", "System", "S"),
}


# ---------------------------------------------------------------- resource links


@dataclass(frozen=True, slots=True)
class ResourceLinks:
    """``resource type -> URL template`` whose ``{placeholders}`` name details keys (or ``tenant``, ``id``).

    A template must start with a literal ``http://`` or ``https://`` origin, so an
    event's data can fill in paths and queries but never choose the scheme or host
    (no ``javascript:`` links); every filled-in value is percent-encoded.
    """

    templates: Mapping[str, str]

    @classmethod
    def from_settings(cls, raw: Mapping[str, str]) -> ResourceLinks:
        for resource, template in raw.items():
            check_template(resource, template)
        return cls(dict(raw))

    def href(self, event: Event) -> str | None:
        template = self.templates.get(event.resource_type)
        if template is None:
            return None
        values = {**event.details, "tenant": event.tenant, "eventId": event.id}
        values.setdefault("id", event.details.get("id", ""))
        out: list[str] = []
        for literal, name, _, _ in string.Formatter().parse(template):
            out.append(literal)
            if name is None:
                continue
            value = values.get(name)
            if not value:
                return None  # the event lacks what the link needs: no link rather than a wrong one
            out.append(quote(value, safe=""))
        url = "".join(out)
        return url if urlsplit(url).scheme in ("http", "https") else None


_ORIGIN_RE = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/|$)")


def check_template(resource: str, template: str) -> None:
    """ConfigError unless ``template`` is a usable link template for ``resource``."""
    where = f"ui_resource_urls[{resource!r}]"
    if not NAME_RE.fullmatch(resource):
        raise ConfigError(f"{where}: {resource[:40]!r} is not a resource type like FLOW")
    if not isinstance(template, str) or not _ORIGIN_RE.match(template):
        raise ConfigError(f"{where}: must start with http:// or https:// and a literal host, got {template[:80]!r}")
    try:
        fields = [name for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
        bad = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None and (spec or conv)]
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if bad or any(not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", f) for f in fields):
        raise ConfigError(f"{where}: placeholders are {{detailsKey}} names only, got {template[:80]!r}")


# ---------------------------------------------------------------- filter editing


def safe_parse(text: str, now: datetime) -> tuple[Query, str | None]:
    """The query of ``text``, or the empty query and the parser's message."""
    from auditledger.errors import ValidationError

    try:
        return parse(text, now=now), None
    except ValidationError as exc:
        return Query(), exc.message


def tag_term(key: str, value: str) -> Term:
    """The term a click on the Details tag ``key:value`` adds (namespaces include their children)."""
    match = Match.NAMESPACE if key == "namespace" else Match.EXACT
    return Term(Field.DETAIL, (value,), key, match)


def term_text(term: Term) -> str:
    return to_text(Query((term,)))


def add_term(q: str, term: Term) -> str:
    """``q`` with ``term`` appended, unless ``q`` already says it."""
    piece = term_text(term)
    words = q.split()
    if piece in words:
        return q.strip()
    return f"{q.strip()} {piece}".strip()


def without_term(query: Query, index: int) -> str:
    terms = query.terms[:index] + query.terms[index + 1 :]
    return to_text(Query(terms, query.after, query.before))


def with_range(query: Query, after: str | None, before: str | None) -> str:
    """``query``'s terms with the date range replaced by ``after``/``before`` (texts of the language)."""
    parts = [to_text(Query(query.terms))]
    if after:
        parts.append(f"after:{after}")
    if before:
        parts.append(f"before:{before}")
    return " ".join(p for p in parts if p)


PRESETS: tuple[tuple[str, str], ...] = (("1h", "Last hour"), ("24h", "24 h"), ("7d", "7 d"), ("30d", "30 d"))


# ---------------------------------------------------------------- exports


def csv_cell(value: str) -> str:
    """A CSV cell that spreadsheets will not run as a formula (OWASP CSV injection)."""
    if value and value[0] in "=+-@\t\r":
        return "'" + value
    return value
