"""The shipper's specification: Kestra's ``AuditLogShipper`` properties, checked.

A Kestra user's task runs unchanged::

    type: io.kestra.plugin.ee.core.log.AuditLogShipper
    resources: [FLOW]
    lookbackPeriod: P1D
    offsetKey: LogShipper-state
    delete: false
    batchSize: 1000
    logExporters:
      - id: datadog
        type: io.kestra.plugin.ee.datadog.LogExporter
        basePath: https://http-intake.logs.datadoghq.eu
        apiKey: "{{ secret('DATADOG_API_KEY') }}"

Every mistake is a :class:`~auditledger.errors.ConfigError` naming the
property (``logExporters[0].apiKey``), never a traceback. Secrets come from
the environment or a secrets file, never from the YAML, and their values never
appear in an error message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from auditledger.errors import ConfigError, ValidationError
from auditledger.model import KESTRA_RESOURCE_TYPES, check_name
from auditledger.query import Field, Query, Term
from auditledger.query import parse as parse_query

DEFAULT_OFFSET_KEY = "LogShipper-state"  # Kestra's default
DEFAULT_LOOKBACK = timedelta(days=1)
DEFAULT_BATCH = 1000
MAX_BATCH = 100_000
SECRETS_FILE_ENV = "AUDITLEDGER_SECRETS_FILE"

# Properties every Kestra task may carry; the shipper accepts and ignores them.
_TASK_PROPS = frozenset(
    [
        "id",
        "type",
        "description",
        "disabled",
        "timeout",
        "retry",
        "allowFailure",
        "allowWarning",
        "logLevel",
        "logToFile",
        "workerGroup",
        "runIf",
        "version",
    ]
)
_SHIPPER_PROPS = frozenset(
    [
        "resources",
        "lookbackPeriod",
        "offsetKey",
        "delete",
        "batchSize",
        "logExporters",
        "query",
        "maxRetries",
        "retryDelay",
        "maxRetryDelay",
    ]
)
_DURATION_RE = re.compile(
    r"(?P<sign>[-+]?)P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+(?:[.,]\d{1,9})?)S)?)?",
    re.IGNORECASE,
)
_EXPR_RE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_SECRET_RE = re.compile(r"\s*secret\(\s*(['\"])([A-Za-z_][A-Za-z0-9_.-]{0,127})\1\s*\)\s*")


def parse_duration(text: object, where: str) -> timedelta:
    """An ISO 8601 duration as Java's ``Duration.parse`` reads it (``P1D``, ``PT12H``, ``PT0.5S``).

    Years and months have no fixed length, so they are refused rather than guessed.
    """
    if isinstance(text, timedelta):
        return text
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected an ISO 8601 duration such as P1D or PT12H, got {type(text).__name__}")
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None or text.strip().upper() in ("P", "PT") or text.strip().upper().endswith("T"):
        raise ConfigError(f"{where}: {text[:40]!r} is not an ISO 8601 duration such as P1D, PT12H or PT30S")
    if match.group("y") or match.group("mo"):
        raise ConfigError(f"{where}: {text!r}: years and months have no fixed length; use days (P30D)")
    value = timedelta(
        weeks=int(match.group("w") or 0),
        days=int(match.group("d") or 0),
        hours=int(match.group("h") or 0),
        minutes=int(match.group("mi") or 0),
        seconds=float((match.group("s") or "0").replace(",", ".")),
    )
    return -value if match.group("sign") == "-" else value


# ---------------------------------------------------------------- secrets


class Secrets:
    """Resolves ``{{ secret('NAME') }}``: ``AUDITLEDGER_SECRET_NAME``, then ``NAME``, then the secrets file.

    The secrets file (``AUDITLEDGER_SECRETS_FILE`` or ``file=``) is a YAML or
    JSON mapping, or ``NAME=value`` lines. Every resolved value is remembered
    so that :meth:`redact` can scrub it from error texts.
    """

    def __init__(
        self,
        values: Mapping[str, str] | None = None,
        *,
        file: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._values = dict(values or {})
        self._environ = os.environ if environ is None else environ
        path = file if file is not None else self._environ.get(SECRETS_FILE_ENV)
        if path is None and environ is None:
            path = _setting_secrets_file()  # the same setting, also read from a .env file
        self._file: dict[str, str] = _read_secrets_file(Path(path)) if path else {}
        self._used: set[str] = set()

    def get(self, name: str, where: str) -> str:
        for value in (
            self._values.get(name),
            self._environ.get(f"AUDITLEDGER_SECRET_{name}"),
            self._environ.get(name),
            self._file.get(name),
        ):
            if value is not None:
                if len(value) >= 4:
                    self._used.add(value)
                return value
        raise ConfigError(
            f"{where}: secret {name!r} is not set (environment AUDITLEDGER_SECRET_{name} or {name}, "
            f"or the secrets file named by {SECRETS_FILE_ENV})"
        )

    def render(self, text: str, where: str) -> str:
        """Replace every ``{{ secret('NAME') }}`` in ``text``; any other expression is an error here."""

        def one(match: re.Match[str]) -> str:
            inner = _SECRET_RE.fullmatch(match.group(1))
            if inner is None:
                raise ConfigError(
                    f"{where}: only {{{{ secret('NAME') }}}} expressions are evaluated by the shipper, "
                    f"got {{{{{match.group(1).strip()[:60]}}}}}"
                )
            return self.get(inner.group(2), where)

        return _EXPR_RE.sub(one, text) if "{{" in text else text

    def redact(self, text: str) -> str:
        for value in sorted(self._used, key=len, reverse=True):
            text = text.replace(value, "****")
        return text


def _setting_secrets_file() -> str | None:
    from auditledger import settings

    try:
        return settings.load().secrets_file
    except ConfigError:
        return None  # another setting is invalid: its own command reports it


def _read_secrets_file(path: Path) -> dict[str, str]:
    try:
        raw = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"secrets file {path}: {exc.strerror or exc}") from None
    stripped = raw.lstrip()
    if stripped.startswith(("{", "---")) or re.match(r"[A-Za-z_][\w.-]*\s*:", stripped):
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"secrets file {path}: not valid YAML/JSON") from None
        if not isinstance(data, dict):
            raise ConfigError(f"secrets file {path}: expected a mapping of NAME: value")
        return {str(k): str(v) for k, v in data.items() if v is not None}
    out = {}
    for n, line in enumerate(raw.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"secrets file {path}, line {n}: expected NAME=value")
        out[name.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return out


# ---------------------------------------------------------------- property access


class Props:
    """Typed, checked access to one exporter's properties; ``finish()`` refuses unknown ones."""

    def __init__(self, raw: Mapping[str, Any], where: str, secrets: Secrets) -> None:
        self.raw = dict(raw)
        self.where = where
        self.secrets = secrets
        self._seen: set[str] = {"id", "type"}

    def _get(self, name: str) -> Any:
        self._seen.add(name)
        value = self.raw.get(name)
        if isinstance(value, str):
            value = self.secrets.render(value, f"{self.where}.{name}")
        return value

    def text(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self._get(name)
        if value is None or value == "":
            if required:
                raise ConfigError(f"{self.where}.{name}: is required")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{self.where}.{name}: expected a text, got {type(value).__name__}")
        return str(value)

    def req(self, name: str) -> str:
        value = self.text(name, required=True)
        assert value is not None
        return value

    def integer(self, name: str, default: int, *, low: int = 0, high: int = 1 << 62) -> int:
        value = self._get(name)
        if value is None:
            return default
        try:
            number = int(value) if not isinstance(value, bool) and str(value).strip().lstrip("-").isdigit() else None
        except ValueError:
            number = None
        if number is None:
            raise ConfigError(f"{self.where}.{name}: expected a whole number, got {str(value)[:40]!r}")
        if not low <= number <= high:
            raise ConfigError(f"{self.where}.{name}: must be between {low} and {high}, got {number}")
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{self.where}.{name}: expected true or false, got {str(value)[:40]!r}")

    def choice(self, name: str, options: Sequence[str], default: str) -> str:
        value = self.text(name, default)
        assert value is not None
        for option in options:
            if option.lower() == value.lower():
                return option
        raise ConfigError(f"{self.where}.{name}: {value[:40]!r} is not one of {', '.join(options)}")

    def duration(self, name: str, default: timedelta | None) -> timedelta | None:
        value = self._get(name)
        if value is None:
            return default
        return parse_duration(value, f"{self.where}.{name}")

    def mapping(self, name: str) -> dict[str, Any]:
        value = self._get(name)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{self.where}.{name}: expected a mapping, got {type(value).__name__}")
        return {
            str(k): self.secrets.render(v, f"{self.where}.{name}.{k}") if isinstance(v, str) else v
            for k, v in value.items()
        }

    def texts(self, name: str) -> list[str]:
        value = self._get(name)
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.where}.{name}: expected a list of texts")
        return [self.secrets.render(v, f"{self.where}.{name}[{i}]") for i, v in enumerate(value)]

    def finish(self) -> None:
        unknown = sorted(set(self.raw) - self._seen)
        if unknown:
            raise ConfigError(f"{self.where}.{unknown[0]}: unknown property for this exporter")


# ---------------------------------------------------------------- the spec


@dataclass(frozen=True, slots=True)
class ExporterSpec:
    """One entry of ``logExporters``: its id, type (ours or Kestra's) and raw properties."""

    id: str
    type: str
    properties: Mapping[str, Any]
    where: str


@dataclass(frozen=True, slots=True)
class ShipperSpec:
    """A checked shipper specification; see :func:`parse_spec`."""

    log_exporters: tuple[ExporterSpec, ...]
    resources: tuple[str, ...] = ()
    lookback: timedelta = DEFAULT_LOOKBACK
    offset_key: str = DEFAULT_OFFSET_KEY
    delete: bool = False
    batch_size: int = DEFAULT_BATCH
    query: Query = field(default_factory=Query)
    max_retries: int = 5
    retry_delay: timedelta = timedelta(seconds=0.5)
    max_retry_delay: timedelta = timedelta(seconds=30)

    def filter(self) -> Query:
        """The events to ship: ``query`` and, when given, only ``resources``."""
        if not self.resources:
            return self.query
        return self.query.and_(Term(Field.RESOURCE, self.resources))


def parse_spec(raw: Mapping[str, Any] | str, *, exporters_required: bool = True) -> ShipperSpec:
    """Check a shipper spec (a mapping, or YAML text); raise ConfigError naming the property."""
    if isinstance(raw, str):
        try:
            raw = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"shipper spec is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError("shipper spec: expected a mapping of properties")
    if "logExporters" not in raw and isinstance(raw.get("tasks"), list):
        raw = shipper_task(raw)
    unknown = sorted(set(raw) - _SHIPPER_PROPS - _TASK_PROPS)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown property of the audit log shipper")
    exporters = raw.get("logExporters")
    if exporters is None and not exporters_required:
        exporters = []
    elif not isinstance(exporters, list) or not exporters:
        raise ConfigError("logExporters: is required: a list of exporters, each with id and type")
    specs: list[ExporterSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(exporters):
        where = f"logExporters[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: expected a mapping with id and type")
        ident, kind = item.get("id"), item.get("type")
        if not isinstance(ident, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", ident):
            raise ConfigError(f"{where}.id: is required: letters, digits, '_', '.', '-' (at most 100)")
        if ident in seen:
            raise ConfigError(f"{where}.id: {ident!r} is used twice; exporter ids key their offsets")
        seen.add(ident)
        if not isinstance(kind, str) or not kind:
            raise ConfigError(f"{where}.type: is required")
        props = {k: v for k, v in item.items() if k != "properties"}
        nested = item.get("properties")
        if nested is not None:
            if not isinstance(nested, Mapping):
                raise ConfigError(f"{where}.properties: expected a mapping")
            props.update(nested)
        specs.append(ExporterSpec(ident, kind, props, where))
    resources = raw.get("resources") or []
    if isinstance(resources, str):
        resources = [resources]
    if not isinstance(resources, list):
        raise ConfigError("resources: expected a list of resource types such as [FLOW, EXECUTION]")
    checked = []
    for i, name in enumerate(resources):
        try:
            checked.append(check_name(name, f"resources[{i}]", KESTRA_RESOURCE_TYPES))
        except ValidationError as exc:
            raise ConfigError(str(exc)) from None
    offset_key = raw.get("offsetKey", DEFAULT_OFFSET_KEY)
    if not isinstance(offset_key, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}", offset_key):
        raise ConfigError("offsetKey: letters, digits, '_', '.', ':', '-' (at most 200)")
    delete = raw.get("delete", False)
    if not isinstance(delete, bool):
        raise ConfigError("delete: expected true or false")
    query_text = raw.get("query")
    query = Query()
    if query_text is not None:
        if not isinstance(query_text, str):
            raise ConfigError("query: expected a search text such as 'action:DELETE namespace:prod'")
        try:
            query = parse_query(query_text)
        except ValidationError as exc:
            raise ConfigError(f"query: {exc}") from None
    return ShipperSpec(
        log_exporters=tuple(specs),
        resources=tuple(checked),
        lookback=_positive(raw.get("lookbackPeriod"), "lookbackPeriod", DEFAULT_LOOKBACK),
        offset_key=offset_key,
        delete=delete,
        batch_size=_int(raw.get("batchSize"), "batchSize", DEFAULT_BATCH, 1, MAX_BATCH),
        query=query,
        max_retries=_int(raw.get("maxRetries"), "maxRetries", 5, 0, 100),
        retry_delay=_positive(raw.get("retryDelay"), "retryDelay", timedelta(seconds=0.5), zero=True),
        max_retry_delay=_positive(raw.get("maxRetryDelay"), "maxRetryDelay", timedelta(seconds=30), zero=True),
    )


SHIPPER_TYPES = ("io.kestra.plugin.ee.core.log.AuditLogShipper", "AuditLogShipper")


def shipper_task(flow: Mapping[str, Any]) -> Mapping[str, Any]:
    """The first ``AuditLogShipper`` task of a Kestra flow (``tasks: [...]``)."""
    for i, task in enumerate(flow.get("tasks") or []):
        if isinstance(task, Mapping) and str(task.get("type", "")).endswith("AuditLogShipper"):
            if task["type"] not in SHIPPER_TYPES:
                raise ConfigError(f"tasks[{i}].type: {task['type']!r} is not a known shipper")
            return task
    raise ConfigError("logExporters: is required (no AuditLogShipper task in this flow's tasks either)")


def _int(value: object, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: expected a whole number, got {str(value)[:40]!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name}: must be between {low} and {high}, got {value}")
    return value


def _positive(value: object, name: str, default: timedelta, *, zero: bool = False) -> timedelta:
    if value is None:
        return default
    parsed = parse_duration(value, name)
    if parsed < timedelta(0) or (parsed == timedelta(0) and not zero):
        raise ConfigError(f"{name}: must be a positive duration, got {value!r}")
    return parsed
