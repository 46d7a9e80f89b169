"""The HTTP client against a real server: batching, background flush, retries and idempotent re-sends."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from auditledger import Actor, AuditLog, Query
from auditledger.client import AsyncClient, Client
from auditledger.errors import AuthError, ConfigError, StoreError, ValidationError
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
    original = Writer.submit_prepared
    calls = {"n": 0}

    def sometimes_full(self: Writer, prepared: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise Overloaded("full", 0)
        return original(self, prepared)

    monkeypatch.setattr(Writer, "submit_prepared", sometimes_full)
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


class Slow(httpx.HTTPTransport):
    """Delivers each request after ``delay`` seconds and counts them, as a busy server would answer."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        time.sleep(self.delay)
        return super().handle_request(request)


class Down(httpx.HTTPTransport):
    """Refuses connections while ``down`` is set, then delivers: a server that is restarting."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            self.refused += 1
            raise httpx.ConnectError("connection refused", request=request)
        return super().handle_request(request)


def wait_for(condition: Any, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_background_sends_one_batch_per_linger(server: Server) -> None:
    """Events arriving while a batch is in flight wait for the next linger: one request per interval, not per event."""
    transport = Slow(0.05)
    client = Client(server.url, server.tokens["ingest@*"], tenant="linger", flush_interval=0.5, transport=transport)
    try:
        start = time.monotonic()
        for i in range(150):  # one event every 10 ms for 1.5 s, a busy application's rate
            client.record("FLOW", "UPDATE", Actor.user("anna"), details={"i": str(i)})
            time.sleep(0.01)
        assert wait_for(lambda: server.count("linger") == 150)
        elapsed = time.monotonic() - start
    finally:
        client.close()
    # A sender chasing new arrivals sends about every 0.05 s here (the answer's delay).
    assert transport.sent <= elapsed / 0.5 + 2, f"{transport.sent} requests for 150 events in {elapsed:.2f} s"


def test_full_batch_goes_without_waiting(server: Server) -> None:
    """batch_size events are sent at once, long before flush_interval."""
    with Client(server.url, server.tokens["ingest@*"], tenant="fullbatch", batch_size=10, flush_interval=60) as client:
        for i in range(10):
            client.record("FLOW", "UPDATE", Actor.user("anna"), details={"i": str(i)})
        assert wait_for(lambda: server.count("fullbatch") == 10)


def test_sender_survives_a_flush_that_empties_the_queue(server: Server) -> None:
    """After an explicit flush() emptied the queue mid-linger, later events are still sent in the background."""
    client = Client(server.url, server.tokens["ingest@*"], tenant="afterflush", flush_interval=0.1)
    try:
        client.record("FLOW", "READ", Actor.user("anna"))
        client.flush()
        time.sleep(0.2)  # the sender's linger ends on an empty queue
        client.record("FLOW", "READ", Actor.user("anna"))
        assert wait_for(lambda: server.count("afterflush") == 2)
    finally:
        client.close()


def test_server_down_keeps_events_and_retries(server: Server) -> None:
    """While the server is unreachable events stay queued and errors are kept; once it is back all arrive, once."""
    transport = Down()
    client = Client(
        server.url, server.tokens["ingest@*"], tenant="outage", flush_interval=0.05,
        max_retries=0, backoff=0.01, max_backoff=0.05, transport=transport,
    )
    try:
        for i in range(5):
            client.record("FLOW", "UPDATE", Actor.user("anna"), details={"i": str(i)})
        assert wait_for(lambda: len(client.errors) >= 2)
        assert client.pending == 5 and server.count("outage") == 0
        assert "cannot reach the server" in str(client.errors[-1])
        transport.down = False
        assert wait_for(lambda: client.pending == 0)
    finally:
        client.close()
    assert server.count("outage") == 5


def test_bounded_queue_refuses_instead_of_growing(server: Server) -> None:
    """With the server unreachable, record() raises StoreError once max_queue events wait; nothing is dropped."""
    transport = Down()
    client = Client(
        server.url, server.tokens["ingest@*"], tenant="bounded", batch_size=2, flush_interval=60,
        max_queue=4, max_retries=0, backoff=0.01, transport=transport,
    )
    for i in range(4):
        client.record("FLOW", "UPDATE", Actor.user("anna"), details={"i": str(i)})
    with pytest.raises(StoreError, match="queue is full"):
        client.record("FLOW", "UPDATE", Actor.user("anna"))
    assert client.pending == 4
    transport.down = False
    client.close()
    assert server.count("bounded") == 4


def test_close_reports_what_it_could_not_deliver(server: Server) -> None:
    """close() with the server unreachable raises StoreError and pending counts the undelivered events."""
    transport = Down()
    client = Client(
        server.url, server.tokens["ingest@*"], tenant="lost", flush_interval=60,
        max_retries=1, backoff=0.01, transport=transport,
    )
    client.record("FLOW", "DELETE", Actor.user("anna"))
    client.record("FLOW", "DELETE", Actor.user("anna"))
    with pytest.raises(StoreError, match="cannot reach the server"):
        client.close()
    assert client.pending == 2 and server.count("lost") == 0
    with pytest.raises(StoreError, match="closed"):
        client.record("FLOW", "DELETE", Actor.user("anna"))


def test_record_validates_at_the_call_site(server: Server) -> None:
    """A bad event raises ValidationError naming the field in record(); queue_many queues all of a batch or none."""
    with Client(server.url, server.tokens["ingest@*"], tenant="invalid", flush_interval=60) as client:
        with pytest.raises(ValidationError) as info:
            client.record("flow", "UPDATE", Actor.user("anna"))
        assert info.value.field == "resource_type"
        with pytest.raises(ValidationError) as info:
            client.queue_many([EVENT, {**EVENT, "details": {"1bad": "x"}}])
        assert info.value.field == "details"
        with pytest.raises(ValidationError, match="set by the server"):
            client.queue_many([{**EVENT, "source": {"token": "t"}}])
        assert client.pending == 0
    assert server.count("invalid") == 0


def test_exit_flushes_an_unclosed_client(server: Server) -> None:
    """A process that queues events and exits without close() still delivers them (atexit hook)."""
    script = (
        "import sys\n"
        "from auditledger import Actor\n"
        "from auditledger.client import Client\n"
        "client = Client(sys.argv[1], sys.argv[2], tenant='atexit', flush_interval=60)\n"
        "for i in range(3):\n"
        "    client.record('FLOW', 'UPDATE', Actor.user('anna'), details={'i': str(i)})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, server.url, server.tokens["ingest@*"]], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    assert server.count("atexit") == 3


def test_async_background_sends_after_the_linger(server: Server) -> None:
    """AsyncClient's sender sends queued events after flush_interval, without an explicit flush."""

    async def main() -> int:
        async with AsyncClient(server.url, server.tokens["ingest@*"], tenant="async-linger", flush_interval=0.05) as c:
            for i in range(3):
                c.record("FLOW", "UPDATE", Actor.user("anna"), details={"i": str(i)})
            for _ in range(500):
                if c.pending == 0:
                    break
                await asyncio.sleep(0.01)
            return c.pending

    assert asyncio.run(main()) == 0
    assert server.count("async-linger") == 3


@pytest.mark.parametrize(
    ("options", "named"),
    [({"batch_size": 0}, "batch_size"), ({"flush_interval": -1}, "flush_interval"), ({"max_queue": 10}, "max_queue")],
)
def test_batching_options_are_checked(options: dict[str, Any], named: str) -> None:
    """Impossible batching options are a ConfigError naming the option, before anything is queued."""
    with pytest.raises(ConfigError, match=named):
        Client("http://127.0.0.1:9", **options)
