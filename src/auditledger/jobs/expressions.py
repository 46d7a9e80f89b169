"""Kestra's expression language for job properties, rendered in a Jinja2 sandbox.

Kestra renders properties with Pebble; the syntax we need (``{{ expr }}``,
filters with arguments, ``now()``) is shared with Jinja2, so a
``SandboxedEnvironment`` (no attribute access to internals, no I/O) with
Pebble's date functions gives the same results. Semantics follow Kestra's core
(``/work/shared/reference/kestra-api.md``, "Expressions used in jobs"):

- ``now()`` is the current time in the default zone;
- ``dateAdd(amount, unit, format?, timeZone?, existingFormat?, locale?)`` with
  units NANOS … MILLENNIA; months and years clamp to the month's last day
  (as ``java.time`` ``plusMonths`` does);
- ``date(format?, timeZone?, existingFormat?, locale?)`` formats a date;
- without a format dates render as ``iso``
  (``yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX``); named formats ``iso``, ``iso_sec``,
  ``sql``, ``sql_seconds``, ``iso_date_time``, ``iso_date``, ``iso_instant`` …;
  anything else is a Java ``DateTimeFormatter`` pattern;
- string inputs are parsed as ISO date-times, then local date-times, then
  dates; integers are epoch seconds;
- an undefined variable is an error (Kestra runs Pebble in strict mode).

Python keeps microseconds, so NANOS are rounded down to whole microseconds.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from auditledger.errors import ValidationError


class ExpressionError(ValidationError):
    """An expression that does not parse or render; ``field`` is the property path."""


class PebbleDate(datetime):
    """A date that prints as Kestra's ``iso`` format, as Pebble prints its dates."""

    def __str__(self) -> str:
        return format_date(self, "iso")


def _pebble(moment: datetime) -> PebbleDate:
    return PebbleDate(
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second,
        moment.microsecond, moment.tzinfo, fold=moment.fold,
    )


# ---------------------------------------------------------------- zones and parsing


def zone(name: str | None, default: tzinfo) -> tzinfo:
    if name is None:
        return default
    if name in ("Z", "UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError("timeZone", f"unknown time zone {name!r}") from None


def to_date(value: object, default_zone: tzinfo, existing_format: str | None = None) -> datetime:
    """A date from a datetime, an ISO text (date-time, local date-time, date) or epoch seconds."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=default_zone)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=default_zone)
    if isinstance(value, bool):
        raise ValidationError("date", "a boolean is not a date")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, default_zone)
    if isinstance(value, str):
        text = value.strip()
        if existing_format is not None and existing_format not in _NAMED:
            return _strptime(text, existing_format, default_zone)
        try:
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise ValidationError("date", f"cannot read {text[:64]!r} as a date") from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=default_zone)
    raise ValidationError("date", f"cannot read a {type(value).__name__} as a date")


# ---------------------------------------------------------------- arithmetic

_FIXED_UNITS = {
    "NANOS": timedelta(microseconds=0.001),
    "MICROS": timedelta(microseconds=1),
    "MILLIS": timedelta(milliseconds=1),
    "SECONDS": timedelta(seconds=1),
    "MINUTES": timedelta(minutes=1),
    "HOURS": timedelta(hours=1),
    "HALF_DAYS": timedelta(hours=12),
}
_CALENDAR_UNITS = {
    "DAYS": 0, "WEEKS": 0, "MONTHS": 1, "YEARS": 12, "DECADES": 120, "CENTURIES": 1200, "MILLENNIA": 12000,
}
UNITS = (*_FIXED_UNITS, *_CALENDAR_UNITS)


def add(moment: datetime, amount: int, unit: str) -> datetime:
    """``moment`` plus ``amount`` ``unit``s: days keep the wall-clock time (ZonedDateTime.plusDays)."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValidationError("dateAdd", f"amount must be an integer, got {amount!r}")
    unit = str(unit).upper()
    try:
        if unit == "NANOS":
            return moment + timedelta(microseconds=amount // 1000)
        if unit in _FIXED_UNITS:
            # Exact durations are added on the time line, as java.time does for time-based units.
            return (moment.astimezone(UTC) + _FIXED_UNITS[unit] * amount).astimezone(moment.tzinfo)
        if unit == "DAYS":
            return moment + timedelta(days=amount)
        if unit == "WEEKS":
            return moment + timedelta(weeks=amount)
        if unit in _CALENDAR_UNITS:
            months = moment.year * 12 + (moment.month - 1) + amount * _CALENDAR_UNITS[unit]
            year, month = divmod(months, 12)
            day = min(moment.day, calendar.monthrange(year, month + 1)[1])
            return moment.replace(year=year, month=month + 1, day=day)
    except (OverflowError, ValueError):
        raise ValidationError("dateAdd", f"{amount} {unit} takes the date out of range") from None
    raise ValidationError("dateAdd", f"unknown unit {unit!r}, expected one of {', '.join(UNITS)}")


# ---------------------------------------------------------------- formatting

_NAMED = {
    "iso": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX",
    "iso8601": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX",
    "iso_sec": "yyyy-MM-dd'T'HH:mm:ssXXX",
    "sql": "yyyy-MM-dd HH:mm:ss.SSSSSS",
    "sql_seconds": "yyyy-MM-dd HH:mm:ss",
    "sql_milli": "yyyy-MM-dd HH:mm:ss.SSS",
    "iso_local_date": "yyyy-MM-dd",
    "iso_local_time": "HH:mm:ss.SSSSSS",
    "iso_local_date_time": "yyyy-MM-dd'T'HH:mm:ss.SSSSSS",
}
_TOKEN = re.compile(r"'(?:[^']|'')*'|([A-Za-z])\1*|.", re.S)
_MONTHS = [calendar.month_name[i] for i in range(13)]
_DAYS = list(calendar.day_name)


def _fraction(moment: datetime) -> str:
    """Java's ISO fraction: as few digits as needed, none when zero."""
    return ("." + f"{moment.microsecond:06d}".rstrip("0")) if moment.microsecond else ""


def _offset(moment: datetime, colon: bool, z: bool) -> str:
    delta = moment.utcoffset() or timedelta(0)
    if z and not delta:
        return "Z"
    total = int(delta.total_seconds())
    sign = "+" if total >= 0 else "-"
    hours, minutes = divmod(abs(total) // 60, 60)
    return f"{sign}{hours:02d}{':' if colon else ''}{minutes:02d}"


def _iso_named(moment: datetime, name: str) -> str | None:
    local = f"{moment:%Y-%m-%dT%H:%M:%S}{_fraction(moment)}"
    if name == "iso_instant":
        utc = moment.astimezone(UTC)
        micros = utc.microsecond
        frac = "" if not micros else (f".{micros // 1000:03d}" if micros % 1000 == 0 else f".{micros:06d}")
        return f"{utc:%Y-%m-%dT%H:%M:%S}{frac}Z"
    if name in ("iso_date_time", "iso_zoned_date_time"):
        key = getattr(moment.tzinfo, "key", None)
        return local + _offset(moment, True, True) + (f"[{key}]" if key else "")
    if name == "iso_offset_date_time":
        return local + _offset(moment, True, True)
    if name == "iso_date":
        return f"{moment:%Y-%m-%d}" + _offset(moment, True, True)
    if name == "iso_time":
        return f"{moment:%H:%M:%S}{_fraction(moment)}" + _offset(moment, True, True)
    return None


def format_date(moment: datetime, fmt: str | None = None) -> str:
    """``moment`` in a named format or a Java ``DateTimeFormatter`` pattern."""
    name = "iso" if fmt is None else fmt
    special = _iso_named(moment, name)
    if special is not None:
        return special
    pattern = _NAMED.get(name, name)
    out: list[str] = []
    for match in _TOKEN.finditer(pattern):
        piece = match.group(0)
        if piece.startswith("'"):
            out.append("'" if piece == "''" else piece[1:-1].replace("''", "'"))
        elif match.group(1):
            out.append(_field(moment, piece[0], len(piece), pattern))
        else:
            out.append(piece)
    return "".join(out)


def _field(m: datetime, letter: str, n: int, pattern: str) -> str:
    if letter in "yu":
        return f"{m.year % 100:02d}" if n == 2 else f"{m.year:0{n}d}"
    if letter in "ML":
        return _MONTHS[m.month][:3] if n == 3 else _MONTHS[m.month] if n >= 4 else f"{m.month:0{n}d}"
    if letter == "d":
        return f"{m.day:0{n}d}"
    if letter == "D":
        return f"{m.timetuple().tm_yday:0{n}d}"
    if letter == "H":
        return f"{m.hour:0{n}d}"
    if letter == "h":
        return f"{(m.hour % 12) or 12:0{n}d}"
    if letter == "k":
        return f"{m.hour or 24:0{n}d}"
    if letter == "K":
        return f"{m.hour % 12:0{n}d}"
    if letter == "m":
        return f"{m.minute:0{n}d}"
    if letter == "s":
        return f"{m.second:0{n}d}"
    if letter == "S":
        return f"{m.microsecond:06d}{'0' * max(0, n - 6)}"[:n]
    if letter == "n":
        return str(m.microsecond * 1000)
    if letter == "a":
        return "AM" if m.hour < 12 else "PM"
    if letter == "E":
        return _DAYS[m.weekday()] if n >= 4 else _DAYS[m.weekday()][:3]
    if letter == "e":
        return str(m.isoweekday())
    if letter in "Xx":
        z = letter == "X"
        if n == 1:
            text = _offset(m, False, z)
            return text if text == "Z" or text[3:] != "00" else text[:3]
        return _offset(m, n in (3, 5), z)
    if letter == "Z":
        return _offset(m, n == 5, n == 5)
    if letter == "z":
        return m.tzname() or _offset(m, True, True)
    if letter == "V":
        return getattr(m.tzinfo, "key", None) or _offset(m, True, True)
    raise ValidationError("format", f"unsupported letter {letter!r} in date pattern {pattern!r}")


_STRPTIME = {"yyyy": "%Y", "MM": "%m", "dd": "%d", "HH": "%H", "mm": "%M", "ss": "%S", "SSSSSS": "%f", "SSS": "%f"}


def _strptime(text: str, pattern: str, default_zone: tzinfo) -> datetime:
    """Read ``text`` written in a simple Java pattern (digits fields and literals only)."""
    out: list[str] = []
    for match in _TOKEN.finditer(pattern):
        token = match.group(0)
        if token.startswith("'"):
            out.append(token[1:-1].replace("''", "'").replace("%", "%%"))
        elif match.group(1):
            if token not in _STRPTIME:
                raise ValidationError("existingFormat", f"cannot read dates written as {pattern!r}")
            out.append(_STRPTIME[token])
        else:
            out.append(token.replace("%", "%%"))
    try:
        parsed = datetime.strptime(text, "".join(out))
    except ValueError:
        raise ValidationError("date", f"{text[:64]!r} is not written as {pattern!r}") from None
    return parsed.replace(tzinfo=default_zone)


# ---------------------------------------------------------------- the environment


class Renderer:
    """Renders property values; one per run, so that ``now()`` and secrets are the run's."""

    def __init__(
        self,
        *,
        default_zone: tzinfo = UTC,
        now: Callable[[], datetime] | None = None,
        secret: Callable[[str], str] | None = None,
    ) -> None:
        self.default_zone = default_zone
        self._now = now or (lambda: datetime.now(UTC))
        self._secret = secret
        env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
        env.globals.update(now=self.now, secret=self.secret)
        env.filters.update(dateAdd=self.date_add, date=self.date, timestamp=self.timestamp)
        self.env = env

    def now(self, timeZone: str | None = None) -> PebbleDate:
        return _pebble(self._now().astimezone(zone(timeZone, self.default_zone)))

    def secret(self, key: str) -> str:
        if self._secret is None:
            raise ValidationError("secret", f"no secret provider: cannot read secret {key!r}")
        return self._secret(str(key))

    def date_add(
        self,
        value: object,
        amount: int,
        unit: str,
        format: str | None = None,
        timeZone: str | None = None,
        existingFormat: str | None = None,
        locale: str | None = None,
    ) -> str:
        tz = zone(timeZone, self.default_zone)
        moment = to_date(value, tz, existingFormat).astimezone(tz)
        return format_date(add(moment, amount, unit), format)

    def date(
        self,
        value: object,
        format: str | None = None,
        timeZone: str | None = None,
        existingFormat: str | None = None,
        locale: str | None = None,
    ) -> str:
        tz = zone(timeZone, self.default_zone)
        return format_date(to_date(value, tz, existingFormat).astimezone(tz), format)

    def timestamp(self, value: object, timeZone: str | None = None) -> int:
        return int(to_date(value, zone(timeZone, self.default_zone)).timestamp())

    def check(self, text: str, where: str) -> None:
        """Refuse an expression that does not parse (unknown filters included), naming ``where``."""
        try:
            self.env.parse(text)
            self.env.from_string(text)
        except jinja2.TemplateSyntaxError as exc:
            raise ExpressionError(where, f"bad expression {text[:120]!r}: {exc.message}") from None

    def render(self, text: str, context: Mapping[str, Any], where: str) -> str:
        if "{{" not in text and "{%" not in text:
            return text
        try:
            return self.env.from_string(text).render(**context)
        except ValidationError as exc:
            raise ExpressionError(where, f"{exc.field}: {exc.message} (in {text[:120]!r})") from None
        except jinja2.TemplateError as exc:
            raise ExpressionError(where, f"bad expression {text[:120]!r}: {exc.message or exc}") from None
        except (TypeError, ValueError, ArithmeticError, AttributeError, KeyError) as exc:
            raise ExpressionError(where, f"expression {text[:120]!r} failed: {exc}") from None

    def render_value(self, value: Any, context: Mapping[str, Any], where: str) -> Any:
        """Render every string inside ``value`` (lists and maps included)."""
        if isinstance(value, str):
            return self.render(value, context, where)
        if isinstance(value, list):
            return [self.render_value(v, context, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.render_value(v, context, f"{where}.{k}") for k, v in value.items()}
        return value


def trigger_context(date: datetime, next: datetime | None, previous: datetime | None) -> dict[str, Any]:
    """``trigger.date``, ``trigger.next``, ``trigger.previous`` as Kestra's Schedule exposes them."""
    return {
        "date": _pebble(date),
        "next": None if next is None else _pebble(next),
        "previous": None if previous is None else _pebble(previous),
    }
