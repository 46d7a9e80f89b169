"""The example app: each API call records exactly the expected events, and secrets never reach the store."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from examples.workflow_platform.app import create_app, ledger_in

from auditledger import AuditLog
from auditledger.integrations.sqlalchemy import MASK, MASK_CHANGED
from auditledger.testing import recorded

ADMIN = "admin-secret-token-123"
FLOW_V1 = "id: hello\nnamespace: company.team\ntasks:\n  - id: say\n    type: io.kestra.plugin.core.log.Log\n"
FLOW_V2 = FLOW_V1 + "    message: hi\n"
YAML = {"content-type": "application/x-yaml"}


class Api:
    """Drives the ASGI app in-process on one event loop."""

    def __init__(self, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 4321))
        self.http = httpx.AsyncClient(transport=transport, base_url="http://platform")

    def __call__(self, method: str, path: str, token: str | None = ADMIN, **kwargs: Any) -> httpx.Response:
        headers = {"user-agent": "pytest-client", **kwargs.pop("headers", {})}
        if token:
            headers["authorization"] = f"Bearer {token}"
        return self.loop.run_until_complete(self.http.request(method, path, headers=headers, **kwargs))

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


@pytest.fixture(params=["own-file", "in-app-db"])
def layout(request: pytest.FixtureRequest) -> str:
    """The ledger in its own file (written inside Session.commit), or in the app's database (in its transactions)."""
    return str(request.param)


@pytest.fixture
def ledger_path(tmp_path: Path, layout: str) -> Path:
    return tmp_path / ("app.db" if layout == "in-app-db" else "audit.db")


@pytest.fixture
def world(tmp_path: Path, ledger_path: Path, layout: str) -> Iterator[tuple[Api, AuditLog]]:
    app_url = f"sqlite:///{tmp_path / 'app.db'}"
    if layout == "in-app-db":
        ledger = ledger_in(app_url)
        app = create_app(app_url, sink=ledger, admin_token=ADMIN, audit_write="in_transaction")
    else:
        ledger = AuditLog.open(f"sqlite:///{ledger_path}")
        app = create_app(app_url, sink=ledger, admin_token=ADMIN)
    api = Api(app)
    yield api, ledger
    api.close()
    ledger.close()


def new_events(ledger: AuditLog, seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    everything = recorded(ledger)
    fresh = everything[len(seen) :]
    seen[:] = everything
    return fresh


def brief(events: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [(e["resource_type"], e["action"], e["actor"]["id"], e["outcome"]) for e in events]


def test_each_call_records_exactly_the_expected_events(world: tuple[Api, AuditLog]) -> None:
    """Every call of a scripted session yields exactly its events, actors and before/after states."""
    api, ledger = world
    seen: list[dict[str, Any]] = []
    start = new_events(ledger, seen)
    assert brief(start) == [("USER", "CREATE", "workflow-platform", "success")]  # the bootstrap admin
    assert start[0]["actor"]["type"] == "SYSTEM"

    r = api("POST", "/api/v1/users", json={"email": "dev@acme.io", "name": "Dev", "password": "pw-dev-1"})
    assert r.status_code == 201
    dev_token, dev_id = r.json()["api_token"], r.json()["id"]
    [event] = new_events(ledger, seen)
    assert brief([event]) == [("USER", "CREATE", "admin@example.com", "success")]
    assert event["after"] == {
        "id": dev_id, "email": "dev@acme.io", "name": "Dev", "role": "DEVELOPER",
        "password_hash": MASK, "api_token": MASK,
    }
    assert event["actor"] == {
        "type": "USER", "id": "admin@example.com", "name": "Administrator",
        "ip": "192.0.2.10", "user_agent": "pytest-client",
    }
    assert event["details"]["requestId"] == r.headers["x-request-id"]

    assert api("POST", "/api/v1/flows", token=dev_token, content=FLOW_V1, headers=YAML).status_code == 201
    [event] = new_events(ledger, seen)
    assert brief([event]) == [("FLOW", "CREATE", "dev@acme.io", "success")]
    assert (event["before"], event["after"]) == (None, FLOW_V1)
    assert {k: event["details"][k] for k in ("namespace", "flowId", "revision")} == {
        "namespace": "company.team", "flowId": "hello", "revision": "1",
    }

    r = api("PUT", "/api/v1/flows/company.team/hello", token=dev_token, content=FLOW_V2, headers=YAML)
    assert r.json()["revision"] == 2
    [event] = new_events(ledger, seen)
    assert brief([event]) == [("FLOW", "UPDATE", "dev@acme.io", "success")]
    assert (event["before"], event["after"], event["details"]["revision"]) == (FLOW_V1, FLOW_V2, "2")

    api("PUT", "/api/v1/flows/company.team/hello", token=dev_token, content=FLOW_V2, headers=YAML)
    assert new_events(ledger, seen) == []  # unchanged source: no revision, no event

    assert api("GET", "/api/v1/flows/company.team/hello", token=dev_token).status_code == 200
    assert new_events(ledger, seen) == []  # plain reads are not audited ...
    assert api("GET", "/api/v1/flows/company.team/hello/source", token=dev_token).text == FLOW_V2
    [event] = new_events(ledger, seen)  # ... the source download is, through the logging handler
    assert brief([event]) == [("FLOW", "READ", "dev@acme.io", "success")]
    assert event["details"]["message"] == "flow source downloaded"

    r = api("POST", "/api/v1/executions/company.team/hello", token=dev_token, json={"n": 1})
    execution = r.json()["id"]
    [event] = new_events(ledger, seen)
    assert brief([event]) == [("EXECUTION", "CREATE", "dev@acme.io", "success")]
    assert event["details"]["executionId"] == execution and event["after"]["state"] == "CREATED"
    assert event["after"]["inputs"] == {"n": 1}

    api("POST", f"/api/v1/executions/{execution}/kill", token=dev_token)
    [event] = new_events(ledger, seen)
    assert brief([event]) == [("EXECUTION", "UPDATE", "dev@acme.io", "success")]
    assert (event["before"], event["after"]) == ({"state": "CREATED"}, {"state": "KILLED"})

    login = "/api/v1/login"
    assert api("POST", login, token=None, json={"email": "dev@acme.io", "password": "nope"}).status_code == 401
    assert api("POST", login, token=None, json={"email": "dev@acme.io", "password": "pw-dev-1"}).is_success
    events = new_events(ledger, seen)  # last_login is an ignored column: no USER UPDATE
    assert brief(events) == [
        ("USER", "LOGIN_FAILURE", "dev@acme.io", "failure"),
        ("USER", "LOGIN", "dev@acme.io", "success"),
    ]

    api("PATCH", f"/api/v1/users/{dev_id}", json={"role": "VIEWER", "password": "pw-dev-2"})
    [event] = new_events(ledger, seen)
    assert brief([event]) == [("USER", "UPDATE", "admin@example.com", "success")]
    assert event["before"] == {"role": "DEVELOPER", "password_hash": MASK}
    assert event["after"] == {"role": "VIEWER", "password_hash": MASK_CHANGED}

    assert api("DELETE", "/api/v1/flows/company.team/hello", token=dev_token).status_code == 403  # now a viewer
    assert new_events(ledger, seen) == []
    assert api("DELETE", "/api/v1/flows/company.team/hello").status_code == 204
    [event] = new_events(ledger, seen)
    assert brief([event]) == [("FLOW", "DELETE", "admin@example.com", "success")]
    assert (event["before"], event["after"]) == (FLOW_V2, None)
    assert ledger.verify().total == len(seen)


def test_masked_values_never_reach_the_stored_bytes(
    world: tuple[Api, AuditLog], ledger_path: Path, layout: str
) -> None:
    """Passwords, their hashes and API tokens appear nowhere in the ledger's SQLite file (all pages, WAL too);
    in the app's own database, where the app keeps them, nowhere in the ledger's tables."""
    api, ledger = world
    r = api("POST", "/api/v1/users", json={"email": "sec@acme.io", "name": "S", "password": "Pa55-word-xyz"})
    token = r.json()["api_token"]
    api("PATCH", f"/api/v1/users/{r.json()['id']}", json={"password": "N3w-pass-abc"})
    api("POST", "/api/v1/login", token=None, json={"email": "sec@acme.io", "password": "N3w-pass-abc"})
    api("POST", "/api/v1/login", token=None, json={"email": "sec@acme.io", "password": "Wr0ng-guess-q"})
    from examples.workflow_platform.models import User

    with api_sessions(api)() as session:
        hashes = [u.password_hash for u in session.query(User)]
    ledger.close()
    conn = sqlite3.connect(ledger_path)
    if layout == "in-app-db":
        raw = b"".join(
            str(value).encode()
            for table in ("events", "details", "actors", "leaves", "heads")
            for row in conn.execute(f"SELECT * FROM {table}")
            for value in row
        )
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] >= 5
    else:
        raw = b"".join(p.read_bytes() for p in ledger_path.parent.glob(ledger_path.name + "*"))
    raw += b"".join(row[0] for row in conn.execute("SELECT body FROM events"))
    conn.close()
    for secret in [ADMIN, token, "Pa55-word-xyz", "N3w-pass-abc", "Wr0ng-guess-q", *hashes]:
        assert secret.encode() not in raw, secret
        assert secret.split("$")[-1][:16].encode() not in raw
    assert b"[masked, changed]" in raw  # the events are there, masked


def api_sessions(api: Api) -> Any:
    app = api.http._transport.app  # type: ignore[attr-defined]
    return app.state.sessions


def test_auditing_off_records_nothing(tmp_path: Path) -> None:
    """sink=None runs the same API with no event anywhere (the benchmark's baseline)."""
    api = Api(create_app(f"sqlite:///{tmp_path / 'app.db'}", sink=None, admin_token=ADMIN))
    try:
        assert api("POST", "/api/v1/flows", content=FLOW_V1, headers=YAML).status_code == 201
        body = {"email": "admin@example.com", "password": ADMIN}
        assert api("POST", "/api/v1/login", token=None, json=body).is_success
    finally:
        api.close()
