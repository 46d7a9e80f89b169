"""The example app auditing through the HTTP client's background sender to a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from examples.workflow_platform.app import create_app
from tests.server.conftest import make_tokens, start

from auditledger import AuditLog
from auditledger.client import Client
from auditledger.integrations.context import Queued
from auditledger.server import create_app as create_server
from auditledger.settings import Settings
from auditledger.testing import recorded

ADMIN = "admin-secret-token-123"
FLOW_V1 = "id: hello\nnamespace: company.team\ntasks:\n  - id: say\n    type: io.kestra.plugin.core.log.Log\n"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[AuditLog, str, str]]:
    settings = Settings(db=f"sqlite:///{tmp_path / 'server.db'}")
    ledger = AuditLog.open(settings.db)
    token = make_tokens(ledger)["ingest@*"]
    uv, thread, url = start(create_server(settings, ledger))
    yield ledger, url, token
    uv.should_exit = True
    thread.join(10)
    ledger.close()


def test_writes_reach_the_server_through_the_queue(tmp_path: Path, served: tuple[AuditLog, str, str]) -> None:
    """A flow created and changed through the API arrives at the server with its actor, request id and states."""
    ledger, url, token = served
    client = Client(url, token, flush_interval=60)
    app = create_app(f"sqlite:///{tmp_path / 'app.db'}", sink=Queued(client), admin_token=ADMIN)

    async def calls() -> None:
        transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 4321))
        headers = {"authorization": f"Bearer {ADMIN}", "content-type": "application/x-yaml", "x-request-id": "r-42"}
        async with httpx.AsyncClient(transport=transport, base_url="http://platform", headers=headers) as http:
            assert (await http.post("/api/v1/flows", content=FLOW_V1)).status_code == 201
            changed = await http.put("/api/v1/flows/company.team/hello", content=FLOW_V1 + "# v2\n")
            assert changed.status_code == 200

    asyncio.run(calls())
    assert client.pending == 3  # the bootstrap admin, the flow's CREATE and UPDATE: queued, not yet sent
    client.close()
    events = [e for e in recorded(ledger) if e["resource_type"] != "CREDENTIAL"]  # the server's own token events
    kinds = [(e["resource_type"], e["action"]) for e in events]
    assert kinds == [("USER", "CREATE"), ("FLOW", "CREATE"), ("FLOW", "UPDATE")]
    update = events[-1]
    assert update["actor"]["id"] == "admin@example.com" and update["actor"]["ip"] == "192.0.2.10"
    assert update["details"]["requestId"] == "r-42" and update["details"]["revision"] == "2"
    assert update["before"] == FLOW_V1 and update["after"] == FLOW_V1 + "# v2\n"
