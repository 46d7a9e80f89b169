"""The HTTP client against a real server: batching, background flush, retries and idempotent re-sends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from auditledger import Actor, AuditLog, Query
from auditledger.client import AsyncClient, Client
from auditledger.errors import AuthError, ValidationError
from auditledger.server import create_app
from auditledger.server.writer import Overloaded, Writer
from auditledger.settings import Settings
from tests.server.conftest import make_tokens, start


class Server:
    def __init__(self, url: str, ledger: AuditLog, tokens: dict[str, str]) -> None:
        self.url, self.ledger, self.tokens = url, ledger, tokens

    def count(self, tenant: str = "main") -> int:
        return self.ledger.count(Query(), tenant=tenant)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    path: Path = tmp_path_factory.mktemp("client") / "ledger.db"
    settings = Settings(db=f"sqlite:///{path}")
    ledger = AuditLog.open(settings.db)
    tokens = make_tokens(ledger)
    uv, thread, url = start(create_app(settings, ledger))
    yield Server(url, ledger, tokens)
    uv.should_exit = True
    thread.join(10)
    ledger.close()


class LoseFirstAnswers(httpx.HTTPTransport):
    """Delivers each request to the server but drops the first ``n`` answers, as a flaky network would."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.sent += 1
        if self.left > 0:
            self.left -= 1
            response.read()
            raise httpx.ReadError("connection reset after the server answered", request=request)
        return response


EVENT = {"resource_type": "FLOW", "action": "CREATE", "actor": {"type": "USER", "id": "a"}}


def test_record_queues_and_close_flushes(server: Server) -> None:
    """record() only queues; close() sends everything in batches and every event is stored."""
    with Client(server.url, server.tokens["ingest@*"], tenant="batched", batch_size=7, flush_interval=60) as client:
        keys = [client.record("FLOW", "UPDATE", Actor.user("anna"), details={"i": str(i)}) for i in range(20)]
        assert server.count("batched") < 20
    assert len(set(keys)) == 20
    assert server.count("batched") == 20


def test_background_flush(server: Server) -> None:
    """The background thread sends queued events without an explicit flush."""
    client = Client(server.url, server.tokens["ingest@*"], tenant="background", flush_interval=0.05)
    client.record("FLOW", "READ", Actor.user("anna"))
    deadline = time.monotonic() + 10
    while server.count("background") < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.count("background") == 1
    client.close()


def test_lost_answer_retry_stores_once(server: Server) -> None:
    """A batch whose answer is lost is re-sent with the same idempotency keys and stored once."""
    transport = LoseFirstAnswers(2)
    with Client(server.url, server.tokens["ingest@*"], tenant="retry", backoff=0.01, transport=transport) as client:
        receipts = client.record_many([dict(EVENT) for _ in range(10)])
    assert transport.sent == 3
    assert len(receipts) == 10 and all(r["duplicate"] for r in receipts)
    assert server.count("retry") == 10


def test_retries_honour_503(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """503 with Retry-After is retried until the server accepts."""
    original = Writer.submit
    calls = {"n": 0}

    def sometimes_full(self: Writer, tenant: str, drafts: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise Overloaded("full", 0)
        return original(self, tenant, drafts)

    monkeypatch.setattr(Writer, "submit", sometimes_full)
    with Client(server.url, server.tokens["ingest@*"], tenant="busy", backoff=0.01) as client:
        receipts = client.record_many([dict(EVENT)])
    assert calls["n"] == 3 and len(receipts) == 1


def test_errors_map_to_the_error_tree(server: Server) -> None:
    """422 becomes ValidationError naming the field; 403 becomes AuthError; neither is retried."""
    with Client(server.url, server.tokens["ingest@acme"], tenant="acme") as client:
        with pytest.raises(ValidationError) as info:
            client.record_many([{**EVENT, "resource_type": "flow"}])
        assert info.value.field == "events[0].resource_type"
        with pytest.raises(AuthError):
            client.search()


def test_search_and_get(server: Server) -> None:
    """search() answers Kestra's page plus our cursor; get() answers the full event."""
    with Client(server.url, server.tokens["admin@*"], tenant="reads") as client:
        (receipt,) = client.record_many([{**EVENT, "resource_type": "SECRET", "details": {"id": "k"}}])
        page = client.search("resource:SECRET")
        assert page["total"] == 1 and page["results"][0]["auditLog"]["id"] == receipt["id"]
        assert client.get(receipt["id"])["details"] == {"id": "k"}


def test_async_client(server: Server) -> None:
    """AsyncClient records, flushes, searches and reads back."""

    async def main() -> tuple[int, dict[str, Any]]:
        async with AsyncClient(server.url, server.tokens["admin@*"], tenant="async", flush_interval=60) as client:
            for i in range(5):
                client.record("FLOW", "UPDATE", Actor.user("anna"), details={"i": str(i)})
            await client.flush()
            page = await client.search(size=10)
            receipts = await client.record_many([{**EVENT, "actor": {"type": "USER", "id": "b"}}])
            one = await client.get(receipts[0]["id"])
            return page["total"], one

    total, one = asyncio.run(main())
    assert total == 5 and one["actor"]["id"] == "b"
