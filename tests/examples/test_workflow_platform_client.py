"""The example app auditing through the HTTP client's background sender to a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from examples.workflow_platform.app import create_app
from tests.examples.platform_calls import ADMIN, assert_the_update, call, create_and_change
from tests.server.conftest import make_tokens, start

from auditledger import AuditLog
from auditledger.client import Client
from auditledger.integrations.context import Queued
from auditledger.server import create_app as create_server
from auditledger.settings import Settings
from auditledger.testing import recorded


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

    call(app, create_and_change)
    assert client.pending == 3  # the bootstrap admin, the flow's CREATE and UPDATE: queued, not yet sent
    client.close()
    events = [e for e in recorded(ledger) if e["resource_type"] != "CREDENTIAL"]  # the server's own token events
    kinds = [(e["resource_type"], e["action"]) for e in events]
    assert kinds == [("USER", "CREATE"), ("FLOW", "CREATE"), ("FLOW", "UPDATE")]
    update = events[-1]
    assert_the_update(update)
