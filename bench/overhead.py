"""Overhead of auditing on the example app's write endpoint (PUT a new flow revision).

Three copies of the example app in one process, each on its own SQLite file:
auditing off, auditing to an embedded ledger (SQLite, WAL, synchronous=FULL),
and auditing through the HTTP client in background-batching mode to a real
``auditledger serve`` process on 127.0.0.1. Requests go
through the full ASGI stack in-process (httpx.ASGITransport), rounds are
interleaved so that the machine's noise hits every mode alike, and the
median per-request time of each mode is reported.

    python bench/overhead.py --requests 200 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.workflow_platform.app import create_app  # noqa: E402

from auditledger import AuditLog  # noqa: E402
from auditledger.store.sqlite import SQLiteStore  # noqa: E402

TOKEN = "bench-admin-token"
SOURCE = "id: bench\nnamespace: company.bench\ntasks:\n  - id: t\n    type: io.kestra.plugin.core.log.Log\n"


def start_server(folder: Path) -> tuple[Any, str, str, AuditLog]:
    """``auditledger serve`` in its own process on a fresh SQLite ledger, as deployed (not a thread of
    the app's process, where it would take the app's GIL); returns (process, url, ingest token, ledger)."""
    import socket
    import subprocess
    import sys

    import httpx

    from auditledger.server import Tokens

    url_db = f"sqlite:///{folder / 'server.db'}"
    ledger = AuditLog.open(url_db)
    token = Tokens(ledger.store).create("ingest", "main")[0]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from auditledger.cli import main; main()",
            "serve",
            "--db",
            url_db,
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("the auditledger server did not start")
        time.sleep(0.1)
    return process, url, token, ledger


class Driver:
    def __init__(self, app: Any) -> None:
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://bench",
            headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/x-yaml"},
        )
        self.revision = 0

    async def setup(self) -> None:
        response = await self.http.post("/api/v1/flows", content=SOURCE)
        response.raise_for_status()

    async def run(self, n: int) -> float:
        """Seconds per request over ``n`` writes, each a new revision."""
        start = time.perf_counter()
        for _ in range(n):
            self.revision += 1
            response = await self.http.put(
                "/api/v1/flows/company.bench/bench", content=SOURCE + f"# revision {self.revision}\n"
            )
            if response.status_code != 200:
                raise RuntimeError(f"PUT answered {response.status_code}: {response.text[:200]}")
        return (time.perf_counter() - start) / n


async def bench(args: argparse.Namespace, folder: Path) -> None:
    sinks: dict[str, Any] = {"off": None}
    ledger = AuditLog.open(f"sqlite:///{folder / 'embedded.db'}")  # the default: synchronous=FULL
    sinks["embedded"] = ledger
    # The same ledger with synchronous=NORMAL: WAL commits survive an application crash, not a power cut.
    sinks["embed-normal"] = AuditLog(SQLiteStore(f"sqlite:///{folder / 'embedded-normal.db'}", synchronous="NORMAL"))
    client = server = None
    if not args.no_client:
        try:
            from auditledger.client import Client
            from auditledger.integrations.context import Queued

            server, url, ingest, _server_ledger = start_server(folder)
            client = Client(url, token=ingest, batch_size=500, flush_interval=0.2)
            sinks["client"] = Queued(client)
        except Exception as exc:  # the bench still reports what it can measure
            print(f"client mode skipped: {type(exc).__name__}: {exc}")
    drivers = {
        name: Driver(create_app(f"sqlite:///{folder / f'app-{name}.db'}", sink=sink, admin_token=TOKEN))
        for name, sink in sinks.items()
    }
    for driver in drivers.values():
        await driver.setup()
        await driver.run(max(5, args.requests // 10))  # warm-up
    times: dict[str, list[float]] = {name: [] for name in drivers}
    for _ in range(args.rounds):
        for name, driver in drivers.items():
            times[name].append(await driver.run(args.requests))
    if client is not None:
        client.close()
    if server is not None:
        server.terminate()
        server.wait(10)
    base = statistics.median(times["off"])
    print(f"write endpoint: PUT /api/v1/flows/{{ns}}/{{id}}, {args.rounds} rounds x {args.requests} requests")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:>12}: {median * 1e3:7.2f} ms/request (min {min(values) * 1e3:.2f}, max {max(values) * 1e3:.2f})"
            f"  overhead {100 * (median / base - 1):+5.1f}%"
        )
    print(f"events in the embedded ledger: {ledger.count()}")
    for sink in sinks.values():
        if isinstance(sink, AuditLog):
            sink.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="writes per mode per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--no-client", action="store_true", help="skip the client + server mode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(bench(args, Path(folder)))


if __name__ == "__main__":
    main()
