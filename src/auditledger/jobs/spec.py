"""Job files: YAML in Kestra's flow shape, checked with the line of every mistake.

A job is ``id``, ``namespace``, ``description``, ``tasks`` (each ``id``,
``type`` and the type's properties) and ``triggers`` (``Schedule``). Task and
trigger types accept Kestra's full class names as aliases, so a Kestra system
flow such as the audit-log purge example applies unchanged. Every error names
the file and line (from the YAML node marks) and what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import yaml
from croniter import croniter

from auditledger.errors import ConfigError, ValidationError
from auditledger.jobs.expressions import Renderer, zone

ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,99}$")  # Kestra's flow and task id rule
NAMESPACE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,149}$")
SYSTEM_NAMESPACE = "system"


@dataclass(frozen=True, slots=True)
class TaskType:
    """A task type: its properties (Kestra's names), the required ones, and its aliases."""

    name: str
    properties: frozenset[str]
    required: frozenset[str]
    aliases: tuple[str, ...]


TASK_TYPES = {
    t.name: t
    for t in (
        TaskType(
            "PurgeAuditLogs",
            frozenset({"endDate", "startDate", "namespace", "resources", "types", "actions"}),
            frozenset({"endDate"}),
            ("io.kestra.plugin.ee.core.log.PurgeAuditLogs",),
        ),
        TaskType(
            "AuditLogShipper",
            frozenset(
                {
                    "logExporters",
                    "resources",
                    "lookbackPeriod",
                    "offsetKey",
                    "delete",
                    "batchSize",
                    # ours beside Kestra's (auditledger.ship.spec)
                    "query",
                    "maxRetries",
                    "retryDelay",
                    "maxRetryDelay",
                }
            ),
            frozenset({"logExporters"}),
            ("io.kestra.plugin.ee.core.log.AuditLogShipper",),
        ),
    )
}
_TASK_ALIASES = {alias: t.name for t in TASK_TYPES.values() for alias in (t.name, *t.aliases)}
_TASK_COMMON = frozenset({"id", "type", "description", "disabled", "allowFailure"})
_SCHEDULE_TYPES = (
    "Schedule",
    "io.kestra.plugin.core.trigger.Schedule",
    "io.kestra.core.models.triggers.types.Schedule",
)
_SCHEDULE_KEYS = frozenset(
    {
        "id",
        "type",
        "cron",
        "withSeconds",
        "timezone",
        "recoverMissedSchedules",
        "disabled",
        "description",
        "inputs",
        "lateMaximumDelay",
        "stopAfter",
    }
)
_JOB_KEYS = frozenset({"id", "namespace", "description", "tasks", "triggers", "labels", "disabled", "variables"})
RECOVER_POLICIES = ("ALL", "LAST", "NONE")


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    type: str  # the short name: PurgeAuditLogs, AuditLogShipper
    properties: Mapping[str, Any]
    line: int
    lines: Mapping[str, int]  # property -> line, for run-time errors
    description: str | None = None
    disabled: bool = False
    allow_failure: bool = False


@dataclass(frozen=True, slots=True)
class Schedule:
    id: str
    cron: str
    line: int
    timezone: str | None = None
    recover: str = "ALL"  # recoverMissedSchedules
    disabled: bool = False
    with_seconds: bool = False

    def iterator(self, start: Any) -> croniter:
        return croniter(self.cron, start, second_at_beginning=self.with_seconds)


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    namespace: str
    tasks: tuple[Task, ...]
    triggers: tuple[Schedule, ...] = ()
    description: str | None = None
    disabled: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    variables: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}.{self.id}"

    @property
    def system(self) -> bool:
        """Jobs of the ``system`` namespace (and its children) are for administrators only."""
        return self.namespace == SYSTEM_NAMESPACE or self.namespace.startswith(SYSTEM_NAMESPACE + ".")


class _Reader:
    """Walks the composed YAML so that every value keeps the line it came from."""

    def __init__(self, text: str, name: str) -> None:
        self.name = name
        self.source = text

    def fail(self, node: yaml.Node | None, message: str) -> ConfigError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        return ConfigError(f"{self.name}{line}: {message}")

    def value(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return {self.key(k): self.value(v) for k, v in node.value}
        if isinstance(node, yaml.SequenceNode):
            return [self.value(v) for v in node.value]
        loader = yaml.SafeLoader("")
        try:
            return loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self.fail(node, f"unreadable value: {exc}") from None
        finally:
            loader.dispose()

    def key(self, node: yaml.Node) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, "keys must be plain names")
        return str(node.value)

    def mapping(self, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping of properties")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for k, v in node.value:
            name = self.key(k)
            if name in out:
                raise self.fail(k, f"{what}: property {name!r} is given twice")
            out[name] = (k, v)
        return out

    def text(self, entry: tuple[yaml.Node, yaml.Node], what: str) -> str:
        value = self.value(entry[1])
        if not isinstance(value, str) or not value:
            raise self.fail(entry[1], f"{what} must be a non-empty text")
        return value

    def flag(self, entry: tuple[yaml.Node, yaml.Node] | None, what: str) -> bool:
        if entry is None:
            return False
        value = self.value(entry[1])
        if not isinstance(value, bool):
            raise self.fail(entry[1], f"{what} must be true or false")
        return value


def parse_job(text: str, name: str = "<job>", *, renderer: Renderer | None = None) -> Job:
    """Parse and check one job file; raises :class:`ConfigError` naming ``name:line``."""
    r = _Reader(text, name)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = f":{exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
        raise ConfigError(f"{name}{line}: not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: not valid YAML: {exc}") from None
    if root is None:
        raise ConfigError(f"{name}: the file is empty")
    top = r.mapping(root, "a job")
    for key, (k, _) in top.items():
        if key not in _JOB_KEYS:
            raise r.fail(k, f"unknown property {key!r} of a job (expected {', '.join(sorted(_JOB_KEYS))})")
    for required in ("id", "namespace", "tasks"):
        if required not in top:
            raise r.fail(root, f"a job needs {required!r}")
    job_id = r.text(top["id"], "id")
    if not ID_RE.fullmatch(job_id):
        raise r.fail(top["id"][1], f"id {job_id!r} must match {ID_RE.pattern}")
    namespace = r.text(top["namespace"], "namespace")
    if not NAMESPACE_RE.fullmatch(namespace):
        raise r.fail(top["namespace"][1], f"namespace {namespace!r} must match {NAMESPACE_RE.pattern}")
    renderer = renderer or Renderer()
    tasks_node = top["tasks"][1]
    if not isinstance(tasks_node, yaml.SequenceNode) or not tasks_node.value:
        raise r.fail(tasks_node, "tasks must be a non-empty list")
    tasks = tuple(_task(r, node, i, renderer) for i, node in enumerate(tasks_node.value))
    seen: set[str] = set()
    for task, node in zip(tasks, tasks_node.value, strict=True):
        if task.id in seen:
            raise r.fail(node, f"task id {task.id!r} is used twice")
        seen.add(task.id)
    triggers: tuple[Schedule, ...] = ()
    if "triggers" in top:
        trig_node = top["triggers"][1]
        if not isinstance(trig_node, yaml.SequenceNode):
            raise r.fail(trig_node, "triggers must be a list")
        triggers = tuple(_schedule(r, node) for node in trig_node.value)
        if len({t.id for t in triggers}) != len(triggers):
            raise r.fail(trig_node, "trigger ids must be unique")
    labels = r.value(top["labels"][1]) if "labels" in top else {}
    if not isinstance(labels, dict):
        raise r.fail(top["labels"][1], "labels must be a mapping")
    variables = r.value(top["variables"][1]) if "variables" in top else {}
    if not isinstance(variables, dict):
        raise r.fail(top["variables"][1], "variables must be a mapping")
    description = r.value(top["description"][1]) if "description" in top else None
    return Job(
        id=job_id,
        namespace=namespace,
        tasks=tasks,
        triggers=triggers,
        description=None if description is None else str(description),
        disabled=r.flag(top.get("disabled"), "disabled"),
        labels={str(k): str(v) for k, v in labels.items()},
        variables=variables,
        source=text,
    )


def _task(r: _Reader, node: yaml.Node, index: int, renderer: Renderer) -> Task:
    props = r.mapping(node, f"tasks[{index}]")
    for required in ("id", "type"):
        if required not in props:
            raise r.fail(node, f"tasks[{index}] needs {required!r}")
    task_id = r.text(props["id"], "task id")
    if not ID_RE.fullmatch(task_id):
        raise r.fail(props["id"][1], f"task id {task_id!r} must match {ID_RE.pattern}")
    given_type = r.text(props["type"], "type")
    short = _TASK_ALIASES.get(given_type)
    if short is None:
        known = ", ".join(sorted(_TASK_ALIASES))
        raise r.fail(props["type"][1], f"unknown task type {given_type!r} (known: {known})")
    spec = TASK_TYPES[short]
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key, (k, v) in props.items():
        if key in _TASK_COMMON:
            continue
        if key not in spec.properties:
            allowed = ", ".join(sorted(spec.properties | _TASK_COMMON))
            raise r.fail(k, f"unknown property {key!r} of task {task_id!r} ({short}); allowed: {allowed}")
        values[key] = r.value(v)
        lines[key] = k.start_mark.line + 1
        _check_expressions(r, v, values[key], f"tasks[{index}].{key}", renderer)
    for required in sorted(spec.required):
        if required not in values:
            raise r.fail(node, f"task {task_id!r} ({short}) needs the property {required!r}")
    if "types" in values and "actions" in values:
        raise r.fail(props["actions"][0], f"task {task_id!r}: give the actions as `types` or `actions`, not both")
    description = r.value(props["description"][1]) if "description" in props else None
    return Task(
        id=task_id,
        type=short,
        properties=values,
        line=node.start_mark.line + 1,
        lines=lines,
        description=None if description is None else str(description),
        disabled=r.flag(props.get("disabled"), "disabled"),
        allow_failure=r.flag(props.get("allowFailure"), "allowFailure"),
    )


def _check_expressions(r: _Reader, node: yaml.Node, value: Any, where: str, renderer: Renderer) -> None:
    """Parse every expression now, so that a typo fails at apply with its line, not at 3 a.m."""
    if isinstance(value, str):
        try:
            renderer.check(value, where)
        except ValidationError as exc:
            raise r.fail(node, exc.message) from None
    elif isinstance(value, list) and isinstance(node, yaml.SequenceNode):
        for i, (n, v) in enumerate(zip(node.value, value, strict=True)):
            _check_expressions(r, n, v, f"{where}[{i}]", renderer)
    elif isinstance(value, dict) and isinstance(node, yaml.MappingNode):
        for (_, n), (k, v) in zip(node.value, value.items(), strict=True):
            _check_expressions(r, n, v, f"{where}.{k}", renderer)


def _schedule(r: _Reader, node: yaml.Node) -> Schedule:
    props = r.mapping(node, "a trigger")
    if "type" not in props or "id" not in props:
        raise r.fail(node, "a trigger needs 'id' and 'type'")
    trigger_type = r.text(props["type"], "type")
    if trigger_type not in _SCHEDULE_TYPES:
        raise r.fail(props["type"][1], f"unknown trigger type {trigger_type!r} (known: {', '.join(_SCHEDULE_TYPES)})")
    for key, (k, _) in props.items():
        if key not in _SCHEDULE_KEYS:
            raise r.fail(k, f"unknown property {key!r} of a Schedule trigger")
    trigger_id = r.text(props["id"], "trigger id")
    if "cron" not in props:
        raise r.fail(node, f"trigger {trigger_id!r} needs 'cron'")
    cron = r.text(props["cron"], "cron").strip()
    with_seconds = r.flag(props.get("withSeconds"), "withSeconds")
    fields = len(cron.split())
    ok = cron.startswith("@") or fields == (6 if with_seconds else 5)
    if not ok or not croniter.is_valid(cron, second_at_beginning=with_seconds):
        want = "6 fields (withSeconds: true)" if with_seconds else "5 fields"
        raise r.fail(props["cron"][1], f"bad cron {cron!r}: expected {want} or @daily, @hourly ...")
    timezone = r.text(props["timezone"], "timezone") if "timezone" in props else None
    if timezone is not None:
        try:
            zone(timezone, UTC)
        except ValidationError:
            raise r.fail(props["timezone"][1], f"unknown time zone {timezone!r}") from None
    recover = (
        r.text(props["recoverMissedSchedules"], "recoverMissedSchedules")
        if ("recoverMissedSchedules" in props)
        else "ALL"
    )
    if recover not in RECOVER_POLICIES:
        raise r.fail(props["recoverMissedSchedules"][1], f"recoverMissedSchedules must be one of {RECOVER_POLICIES}")
    return Schedule(
        id=trigger_id,
        cron=cron,
        line=node.start_mark.line + 1,
        timezone=timezone,
        recover=recover,
        disabled=r.flag(props.get("disabled"), "disabled"),
        with_seconds=with_seconds,
    )
