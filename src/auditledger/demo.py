"""A reproducible demo data set: the audit trail of a workflow platform.

Users and service accounts edit flows (YAML sources over revisions, with
before/after), run executions, manage secrets, key-value entries, namespaces
and roles, and sign in and out; the system runs schedules. The same seed and
count give the same events, spread over the last ``days`` days.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

NAMESPACES = (
    "company",
    "company.team",
    "company.team.data",
    "company.team.ml",
    "company.marketing",
    "company.finance",
    "company.finance.reporting",
    "system",
)
USERS = (
    ("anna@acme.io", "Anna Schmidt"),
    ("ben@acme.io", "Ben Okafor"),
    ("chloe@acme.io", "Chloé Martin"),
    ("dev.patel@acme.io", "Dev Patel"),
    ("emma@acme.io", "Emma Larsen"),
    ("farid@acme.io", "Farid Haddad"),
    ("grace@acme.io", "Grace Liu"),
    ("hugo@acme.io", "Hugo Rossi"),
)
SERVICE_ACCOUNTS = (("sa-ci-deployer", "CI deployer"), ("sa-terraform", "Terraform"), ("sa-dbt", "dbt runner"))
SYSTEM = ("kestra-scheduler", "Scheduler")
FLOW_NAMES = (
    "hello-world",
    "daily-etl",
    "sync-crm",
    "train-model",
    "billing-export",
    "send-report",
    "ingest-events",
    "backup-db",
    "refresh-dashboards",
    "cleanup-tmp",
    "score-leads",
    "load-warehouse",
)
TASK_TYPES = (
    "io.kestra.plugin.core.log.Log",
    "io.kestra.plugin.scripts.python.Script",
    "io.kestra.plugin.jdbc.postgresql.Query",
    "io.kestra.plugin.core.http.Request",
    "io.kestra.plugin.dbt.cli.DbtCLI",
)
IPS = ("10.0.0.7", "10.0.0.12", "10.0.3.41", "192.168.1.20", "172.16.4.9")
AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Firefox/131.0",
    "kestra-cli/0.19",
    "terraform-provider-kestra/0.18",
)
SECRETS = ("POSTGRES_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "SLACK_WEBHOOK", "OPENAI_API_KEY")
KV_KEYS = ("last_run_watermark", "feature_flags", "etl_cursor", "model_version")


def flow_source(namespace: str, flow_id: str, revision: int, rng: random.Random) -> str:
    """A plausible Kestra flow in YAML; each revision changes a few lines."""
    lines = [
        f"id: {flow_id}",
        f"namespace: {namespace}",
        f"description: {flow_id.replace('-', ' ')} (revision {revision})",
    ]
    lines += [
        "",
        "labels:",
        f"  owner: team-{namespace.split('.')[-1]}",
        f"  tier: {'gold' if revision % 3 else 'silver'}",
    ]
    lines += ["", "tasks:"]
    for i in range(1 + revision % 4):
        kind = TASK_TYPES[(revision + i) % len(TASK_TYPES)]
        lines += [f"  - id: step_{i + 1}", f"    type: {kind}"]
        if kind.endswith("Log"):
            lines.append(f'    message: "Hello from {flow_id} r{revision}"')
        elif kind.endswith("Script"):
            lines += ["    script: |", f"      print('processing batch {rng.randint(1, 99)}')"]
        elif kind.endswith("Query"):
            lines += [
                "    sql: SELECT * FROM events WHERE day = '{{ trigger.date | date('yyyy-MM-dd') }}'"
                f" LIMIT {100 * revision}"
            ]
        elif kind.endswith("Request"):
            lines.append(f"    uri: https://api.acme.io/v{1 + revision % 3}/sync")
        else:
            lines += ["    commands:", f"      - dbt build --select tag:{flow_id}"]
    if revision % 2 == 0:
        lines += [
            "",
            "triggers:",
            "  - id: schedule",
            "    type: io.kestra.plugin.core.trigger.Schedule",
            f'    cron: "{revision % 60} {2 + revision % 20} * * *"',
        ]
    return "\n".join(lines) + "\n"


@dataclass
class _World:
    rng: random.Random
    flows: dict[tuple[str, str], int] = field(default_factory=dict)  # (namespace, flow) -> revision
    executions: list[tuple[str, str, str]] = field(default_factory=list)
    secrets: set[tuple[str, str]] = field(default_factory=set)
    counter: int = 0

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.rng.getrandbits(40):010x}{self.counter:x}"


def _user(rng: random.Random) -> dict[str, Any]:
    uid, name = rng.choice(USERS)
    return {"type": "USER", "id": uid, "name": name, "ip": rng.choice(IPS), "user_agent": AGENTS[0]}


def _service(rng: random.Random) -> dict[str, Any]:
    sid, name = rng.choice(SERVICE_ACCOUNTS)
    return {
        "type": "SERVICE_ACCOUNT",
        "id": sid,
        "name": name,
        "ip": rng.choice(IPS),
        "user_agent": rng.choice(AGENTS[1:]),
    }


def _editor(rng: random.Random) -> dict[str, Any]:
    return _user(rng) if rng.random() < 0.7 else _service(rng)


def _flow_event(w: _World) -> dict[str, Any]:
    rng = w.rng
    if not w.flows or rng.random() < 0.12:
        ns = rng.choice(NAMESPACES[:-1])
        flow = rng.choice(FLOW_NAMES)
        if (ns, flow) not in w.flows:
            w.flows[(ns, flow)] = 1
            return {
                "resource_type": "FLOW",
                "action": "CREATE",
                "actor": _editor(rng),
                "details": {"id": flow, "namespace": ns, "flowId": flow, "revision": "1"},
                "after": flow_source(ns, flow, 1, rng),
            }
    ns, flow = rng.choice(sorted(w.flows))
    rev = w.flows[(ns, flow)]
    if rng.random() < 0.03:
        del w.flows[(ns, flow)]
        return {
            "resource_type": "FLOW",
            "action": "DELETE",
            "actor": _editor(rng),
            "details": {"id": flow, "namespace": ns, "flowId": flow, "revision": str(rev)},
            "before": flow_source(ns, flow, rev, rng),
        }
    w.flows[(ns, flow)] = rev + 1
    return {
        "resource_type": "FLOW",
        "action": "UPDATE",
        "actor": _editor(rng),
        "details": {"id": flow, "namespace": ns, "flowId": flow, "revision": str(rev + 1)},
        "before": flow_source(ns, flow, rev, rng),
        "after": flow_source(ns, flow, rev + 1, rng),
    }


def _execution_event(w: _World) -> dict[str, Any]:
    rng = w.rng
    if w.executions and rng.random() < 0.45:
        ns, flow, ex = w.executions.pop(rng.randrange(len(w.executions)))
        state = rng.choice(("SUCCESS", "SUCCESS", "SUCCESS", "FAILED", "KILLED"))
        return {
            "resource_type": "EXECUTION",
            "action": "UPDATE",
            "actor": {"type": "SYSTEM", "id": SYSTEM[0], "name": SYSTEM[1]},
            "details": {"id": ex, "namespace": ns, "flowId": flow, "executionId": ex, "state": state},
            "before": {"id": ex, "state": {"current": "RUNNING"}},
            "after": {"id": ex, "state": {"current": state}, "duration": f"PT{rng.randint(1, 900)}S"},
            "outcome": "failure" if state != "SUCCESS" else "success",
        }
    ns, flow = rng.choice(sorted(w.flows)) if w.flows else ("company.team", "hello-world")
    ex = w.next_id("ex")
    w.executions.append((ns, flow, ex))
    if len(w.executions) > 500:
        w.executions.pop(0)
    actor = {"type": "SYSTEM", "id": SYSTEM[0], "name": SYSTEM[1]} if rng.random() < 0.6 else _editor(rng)
    return {
        "resource_type": "EXECUTION",
        "action": "CREATE",
        "actor": actor,
        "details": {"id": ex, "namespace": ns, "flowId": flow, "executionId": ex},
        "after": {"id": ex, "namespace": ns, "flowId": flow, "state": {"current": "CREATED"}},
    }


def _login_event(w: _World) -> dict[str, Any]:
    rng = w.rng
    actor = _user(rng)
    roll = rng.random()
    action = "LOGIN" if roll < 0.6 else "LOGOUT" if roll < 0.9 else "LOGIN_FAILURE"
    return {
        "resource_type": "USER",
        "action": action,
        "actor": actor,
        "details": {"id": actor["id"], "username": actor["id"], "method": rng.choice(("password", "sso-okta"))},
        "outcome": "failure" if action == "LOGIN_FAILURE" else "success",
    }


def _secret_event(w: _World) -> dict[str, Any]:
    rng = w.rng
    ns = rng.choice(NAMESPACES[:-1])
    key = rng.choice(SECRETS)
    exists = (ns, key) in w.secrets
    action = rng.choice(("UPDATE", "DELETE")) if exists else "CREATE"
    if action == "DELETE":
        w.secrets.discard((ns, key))
    else:
        w.secrets.add((ns, key))
    masked = {"key": key, "value": "******", "description": f"{key.lower()} for {ns}"}
    return {
        "resource_type": "SECRET",
        "action": action,
        "actor": _editor(rng),
        "details": {"id": key, "namespace": ns, "key": key},
        "before": masked if action != "CREATE" else None,
        "after": masked if action != "DELETE" else None,
    }


def _other_event(w: _World) -> dict[str, Any]:
    rng = w.rng
    ns = rng.choice(NAMESPACES)
    kind = rng.random()
    if kind < 0.4:
        key = rng.choice(KV_KEYS)
        return {
            "resource_type": "KVSTORE",
            "action": rng.choice(("CREATE", "UPDATE", "READ")),
            "actor": _editor(rng),
            "details": {"id": key, "namespace": ns, "key": key},
            "after": {"key": key, "value": rng.randint(1, 10_000)},
        }
    if kind < 0.6:
        flow = rng.choice(FLOW_NAMES)
        on = rng.random() < 0.5
        return {
            "resource_type": "TRIGGER",
            "action": "UPDATE",
            "actor": _editor(rng),
            "details": {"id": "schedule", "namespace": ns, "flowId": flow, "triggerId": "schedule"},
            "before": {"disabled": on},
            "after": {"disabled": not on},
        }
    if kind < 0.75:
        return {
            "resource_type": "NAMESPACE",
            "action": rng.choice(("CREATE", "UPDATE")),
            "actor": _user(rng),
            "details": {"id": ns, "namespace": ns},
            "after": {"id": ns, "description": f"Namespace {ns}", "variables": {"env": rng.choice(("dev", "prod"))}},
        }
    if kind < 0.9:
        uid, _ = rng.choice(USERS)
        role = rng.choice(("Admin", "Developer", "Editor", "Launcher", "Viewer"))
        return {
            "resource_type": "BINDING",
            "action": rng.choice(("CREATE", "DELETE")),
            "actor": _user(rng),
            "details": {"id": f"{uid}:{role}", "userId": uid, "role": role, "namespace": ns},
        }
    uid, _ = rng.choice(USERS)
    return {
        "resource_type": "USER",
        "action": "IMPERSONATE",
        "actor": dict(_user(rng), impersonated_by="anna@acme.io"),
        "details": {"id": uid, "username": uid},
    }


_KINDS = (
    (_execution_event, 0.46),
    (_flow_event, 0.2),
    (_login_event, 0.14),
    (_secret_event, 0.06),
    (_other_event, 0.14),
)


def demo_events(count: int, *, seed: int = 7) -> Iterator[dict[str, Any]]:
    """``count`` events as mappings ``AuditLog.record_many`` accepts, the same for the same seed."""
    world = _World(random.Random(seed))
    makers = [k for k, _ in _KINDS]
    weights = [w for _, w in _KINDS]
    for _ in range(count):
        yield world.rng.choices(makers, weights)[0](world)
