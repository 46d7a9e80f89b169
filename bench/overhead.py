"""Overhead of auditing on the example app's write endpoint (PUT a new flow revision).

Four copies of the example app in one process, each on its own SQLite file:
auditing off; to an embedded ledger (SQLite, WAL, synchronous=FULL, the
default); the same with synchronous=NORMAL; and through the HTTP client in
background-batching mode (``Queued(Client(...))``) to a real ``auditledger
serve`` process on 127.0.0.1. Requests go through the full ASGI stack
in-process (httpx.ASGITransport). ``--breakdown`` adds two modes that split the
embedded cost: a sink that keeps nothing (the capture path alone: middleware,
actor dependency, flush hooks) and an in-memory ledger (the ledger's work
without the disk). ``embed-in-db`` keeps the ledger's tables in the app's own database and
writes them in the app's transactions (``write="in_transaction"``); ``--app-journal wal``
puts every mode's app database in WAL, "off" included. ``embed-spool`` records into a durable
spool (``auditledger.spool.Spooled``: one small synced row per request) that a background thread
drains into an embedded ledger every flush interval; its rounds end with a drain counted like the
client's.

Keeping the comparison honest on a shared machine:

- rounds interleave the modes in a new random order each round, so drift and
  the machine's noise hit every mode alike and no mode always follows another;
- after each client round the bench waits until the client has sent what it
  still holds, so that none of its sends (and none of the server's commits)
  fall into another mode's timed round. That last send is work the
  application pays for too (a round of 40 requests lasts about one flush
  interval, so it is a good share of the sends): the CPU this process spends
  on it is added to the round's time and CPU. Its wall time is not, as the
  wait for the server's commit happens on the sender thread, off the request
  path. The sends of the timed rounds and of these drains are counted and printed;
- each mode's figure is the median of its rounds; beside it, the median of the
  per-round ratios to the "off" round of the same round (robust to drift).

    python bench/overhead.py --requests 40 --rounds 12
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.workflow_platform.app import create_app, ledger_in  # noqa: E402

from auditledger import AuditLog  # noqa: E402
from auditledger.spool import Spooled  # noqa: E402
from auditledger.store.sqlite import SQLiteStore  # noqa: E402

TOKEN = "bench-admin-token"
SOURCE = "id: bench\nnamespace: company.bench\ntasks:\n  - id: t\n    type: io.kestra.plugin.core.log.Log\n"


def start_server(folder: Path, synchronous: str = "FULL") -> tuple[Any, str, str, AuditLog]:
    """``auditledger serve`` in its own process on a fresh SQLite ledger, as deployed (not a thread of
    the app's process, where it would take the app's GIL); returns (process, url, ingest token, ledger).

    ``synchronous``: the server ledger's SQLite sync level; NORMAL (not durable at a power cut) is
    a diagnostic only, to see what the server's fsyncs on the app's own disk cost the app here."""
    import socket
    import subprocess
    import sys

    import httpx

    from auditledger.server import Tokens

    url_db = f"sqlite:///{folder / 'server.db'}" + ("" if synchronous == "FULL" else f"?synchronous={synchronous}")
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


class CountingTransport(httpx.HTTPTransport):
    """The client's transport, counting the batches it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        return super().handle_request(request)


class NullSink:
    """A sink that takes each batch and keeps nothing: what the capture path costs by itself."""

    def record_many(self, events: Any, *, tenant: str = "main") -> list[None]:
        return [None for _ in events]


def app_engine(url: str, args: argparse.Namespace) -> Any:
    """The app's engine, as create_app makes it; ``--app-journal wal`` puts every mode's app in WAL
    and ``--app-synchronous NORMAL`` lowers its syncs (off included: the same app with auditing off)."""
    from sqlalchemy import create_engine, event

    engine = create_engine(url, connect_args={"check_same_thread": False})
    if args.app_journal == "wal" or args.app_synchronous != "FULL":

        @event.listens_for(engine, "connect")
        def pragmas(dbapi: Any, _record: Any) -> None:
            if args.app_journal == "wal":
                dbapi.execute("PRAGMA journal_mode = WAL")
            dbapi.execute(f"PRAGMA synchronous = {args.app_synchronous}")

    engine.connect().close()
    return engine


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
    spool = None
    if not args.no_spool:
        # The embedded ledger behind a durable spool: the request commits one small row to the spool
        # file, and the spool's thread places the batch in the ledger (its own file) every flush_interval.
        spooled_ledger = AuditLog.open(f"sqlite:///{folder / 'embedded-spool.db'}")
        spool = Spooled(spooled_ledger, batch_size=args.batch_size, flush_interval=args.flush_interval)
        sinks["embed-spool"] = spool
    outbox = None
    if not args.no_outbox:
        from auditledger.integrations.outbox import Outbox

        # The embedded ledger behind a transactional outbox: the request's own commit carries one
        # more small row (its events) in the app's database; the outbox's thread places the rows in
        # the ledger (its own file) every flush_interval and deletes them.
        outbox_url = f"sqlite:///{folder / 'app-embed-outbox.db'}"
        outbox_engine = app_engine(outbox_url, args)
        outbox_ledger = AuditLog.open(f"sqlite:///{folder / 'embedded-outbox.db'}")
        outbox = Outbox(outbox_engine, outbox_ledger, batch_size=args.batch_size, flush_interval=args.flush_interval)
        sinks["embed-outbox"] = outbox
    if args.breakdown:
        # Where the embedded cost goes: the capture path alone (a sink that keeps nothing),
        # then the ledger's work without the disk (an in-memory store).
        sinks["null-sink"] = NullSink()
        sinks["embed-memory"] = AuditLog.open("memory://")
    client = server = transport = None
    if not args.no_client:
        try:
            from auditledger.client import Client
            from auditledger.integrations.context import Queued

            server, url, ingest, _server_ledger = start_server(folder, args.server_synchronous)
            transport = CountingTransport()
            client = Client(
                url, token=ingest, batch_size=args.batch_size, flush_interval=args.flush_interval, transport=transport
            )
            sinks["client"] = Queued(client)
        except Exception as exc:  # the bench still reports what it can measure
            print(f"client mode skipped: {type(exc).__name__}: {exc}")
    drivers = {}
    for name, sink in sinks.items():
        url = f"sqlite:///{folder / f'app-{name}.db'}"
        engine = outbox.engine if sink is outbox and outbox is not None else app_engine(url, args)
        drivers[name] = Driver(create_app(url, sink=sink, admin_token=TOKEN, engine=engine))
    if not args.no_in_db:
        # The ledger's tables in the app's own database, written in the app's transactions: one
        # commit (and its syncs, with the app's own journal and synchronous=FULL) carries both.
        shared_url = f"sqlite:///{folder / 'app-embed-in-db.db'}"
        engine = app_engine(shared_url, args)  # the app's journal mode is set before the ledger opens the file
        # A ledger in the app's transactions asks for the app's own sync level: no more durable, no less.
        sinks["embed-in-db"] = shared = (
            ledger_in(shared_url)
            if args.app_synchronous == "FULL"
            else AuditLog(SQLiteStore(f"{shared_url}?synchronous={args.app_synchronous}", journal="keep"))
        )
        drivers["embed-in-db"] = Driver(
            create_app(shared_url, sink=shared, admin_token=TOKEN, engine=engine, audit_write="in_transaction")
        )
    for driver in drivers.values():
        await driver.setup()
        await driver.run(max(5, args.requests // 10))  # warm-up
    if client is not None:
        client.flush()
    if spool is not None:
        spool.flush()
    if outbox is not None:
        outbox.flush()
    times: dict[str, list[float]] = {name: [] for name in drivers}
    cpu: dict[str, list[float]] = {name: [] for name in drivers}
    ratios: dict[str, list[float]] = {name: [] for name in drivers}
    timed_sends = drained_sends = 0
    drained_cpu = 0.0
    drains = {name: sinks[name] for name in ("embed-spool", "embed-outbox") if name in sinks}
    drain_cpus = dict.fromkeys(drains, 0.0)
    order = list(drivers)
    shuffle = random.Random(args.seed)
    for _ in range(args.rounds):
        shuffle.shuffle(order)
        this_round: dict[str, float] = {}
        for name in order:
            before = transport.sent if transport is not None else 0
            started = time.process_time()
            this_round[name] = await drivers[name].run(args.requests)
            cpu[name].append((time.process_time() - started) / args.requests)
            if name == "client" and client is not None and transport is not None:
                timed_sends += transport.sent - before
                before = transport.sent
                drain_started = time.process_time()
                client.flush()  # the rest goes now, not during the next mode's round ...
                drain_cpu = time.process_time() - drain_started
                drained_sends += transport.sent - before
                drained_cpu += drain_cpu
                # ... and what sending it cost this process counts as the round's work.
                this_round[name] += drain_cpu / args.requests
                cpu[name][-1] += drain_cpu / args.requests
            drained = drains.get(name)
            if drained is not None:
                # As for the client: what the spool or the outbox still holds is placed now, not
                # during the next mode's round, and the CPU of placing it counts as this round's work.
                drain_started = time.process_time()
                drained.flush()
                drain_cpu = time.process_time() - drain_started
                drain_cpus[name] += drain_cpu
                this_round[name] += drain_cpu / args.requests
                cpu[name][-1] += drain_cpu / args.requests
        for name, value in this_round.items():
            times[name].append(value)
            ratios[name].append(value / this_round["off"])
    if client is not None:
        client.close()
    if spool is not None:
        spool.close()
    if outbox is not None:
        outbox.close()
    if server is not None:
        server.terminate()
        server.wait(10)
    report(args, times, ratios, cpu)
    if client is not None:
        print(
            f"client: batch_size {args.batch_size}, flush_interval {args.flush_interval} s; "
            f"batches sent during timed rounds {timed_sends}, drained between rounds {drained_sends} "
            f"(their CPU, {drained_cpu / (args.rounds * args.requests) * 1e3:.3f} ms per request, is counted)"
        )
    for name, drained in drains.items():
        placed = (drained.ledger if isinstance(drained, Spooled) else drained.sink).count()
        print(
            f"{name}: batch_size {args.batch_size}, flush_interval {args.flush_interval} s; "
            f"events placed in its ledger {placed}; the drains after its rounds cost "
            f"{drain_cpus[name] / (args.rounds * args.requests) * 1e3:.3f} ms CPU per request (counted)"
        )
    print(f"events in the embedded ledger: {ledger.count()}")
    for sink in sinks.values():
        if isinstance(sink, AuditLog):
            sink.close()
    if spool is not None:
        spool.ledger.close()
    if outbox is not None:
        outbox.sink.close()


def median_interval(values: list[float], seed: int, resamples: int = 2000) -> tuple[float, float]:
    """A 95 % bootstrap interval of the median of ``values`` (the rounds resampled with replacement).

    It says whether a run resolves a target: a median of +14 % whose interval reaches +17 % has not
    shown that the mode stays under 15 %; more rounds narrow it (about as one over their square root).
    """
    draw = random.Random(seed)
    medians = sorted(statistics.median(draw.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def report(
    args: argparse.Namespace, times: dict[str, list[float]], ratios: dict[str, list[float]], cpu: dict[str, list[float]]
) -> None:
    base = statistics.median(times["off"])
    cpu_base = statistics.median(cpu["off"])
    print(f"write endpoint: PUT /api/v1/flows/{{ns}}/{{id}}, {args.rounds} rounds x {args.requests} requests")
    print(
        "overhead: of the modes' medians | median of per-round ratios to the same round's 'off' "
        "(quartiles; 95 % bootstrap interval of that median)"
    )
    print("cpu: this process's CPU per request (app, request driver, client sender), median of rounds")
    for name, values in times.items():
        median = statistics.median(values)
        own_cpu = statistics.median(cpu[name])
        q1, q2, q3 = statistics.quantiles(ratios[name], n=4) if len(values) > 1 else (1.0, 1.0, 1.0)
        low, high = median_interval(ratios[name], args.seed) if len(values) > 1 else (1.0, 1.0)
        print(
            f"{name:>12}: {median * 1e3:7.2f} ms/request (min {min(values) * 1e3:.2f}, max {max(values) * 1e3:.2f})"
            f"  overhead {100 * (median / base - 1):+5.1f}% | {100 * (q2 - 1):+5.1f}%"
            f" ({100 * (q1 - 1):+.1f} .. {100 * (q3 - 1):+.1f}; ci {100 * (low - 1):+.1f} .. {100 * (high - 1):+.1f})"
            f"  cpu {own_cpu * 1e3:.2f} ms ({100 * (own_cpu / cpu_base - 1):+.1f}%)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40, help="writes per mode per round")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved rounds")
    parser.add_argument("--batch-size", type=int, default=500, help="the client's and the spool's batch_size")
    parser.add_argument(
        "--flush-interval", type=float, default=0.2, help="the client's and the spool's flush_interval (linger), s"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the rounds' random order")
    parser.add_argument(
        "--breakdown", action="store_true", help="two more modes: a sink that keeps nothing, an in-memory ledger"
    )
    parser.add_argument("--no-client", action="store_true", help="skip the client + server mode")
    parser.add_argument("--no-spool", action="store_true", help="skip the embedded ledger behind a durable spool")
    parser.add_argument(
        "--no-outbox", action="store_true", help="skip the embedded ledger behind a transactional outbox"
    )
    parser.add_argument("--no-in-db", action="store_true", help="skip the mode with the ledger in the app's database")
    parser.add_argument(
        "--app-journal",
        choices=("delete", "wal"),
        default="delete",
        help="every mode's app database: SQLite's rollback journal (the example's default) or WAL",
    )
    parser.add_argument(
        "--server-synchronous",
        choices=("FULL", "NORMAL"),
        default="FULL",
        help="the client mode's server ledger: PRAGMA synchronous (NORMAL is a diagnostic: the server shares this "
        "machine's disk with the app, which a deployed server does not)",
    )
    parser.add_argument(
        "--app-synchronous",
        choices=("FULL", "NORMAL"),
        default="FULL",
        help="every mode's app database: PRAGMA synchronous (NORMAL in WAL survives an app crash, not a power cut)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(bench(args, Path(folder)))


if __name__ == "__main__":
    main()
