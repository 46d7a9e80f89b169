"""Crash-safety soak: ingest over HTTP while the server is killed with SIGKILL and restarted.

Load generators (threads, each with its own :class:`auditledger.client.Client`)
send batches of events with their own idempotency keys; the client retries a
batch until it is acknowledged (connection refused while the server is down,
reset while it dies, 503 while it is busy). Meanwhile the server subprocess
is killed with SIGKILL at random moments and started again on the same store.

Afterwards, with the server stopped, the store is opened directly and checked:
every acknowledged event is present exactly once under the id its receipt
named, nothing is stored that was never sent, and ``AuditLog.verify`` passes.
An acknowledgement is only sent after the commit (the writer's contract), so
``lost`` must be 0 however the kills fall.

    python bench/soak.py                    # short form: SQLite, 3 kills
    python bench/soak.py --long             # long form: 20 kills on SQLite and on PostgreSQL
    python bench/soak.py --store pg --kills 5

The PostgreSQL run uses a fresh database (``al_soak_<random>``) on
``--pg`` (default: the local server), dropped afterwards. The test suite runs
the short form (tests/reliability/test_soak.py) by importing this file.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from auditledger import AuditLog
from auditledger.client import Client, event_dict
from auditledger.errors import AuditLedgerError
from auditledger.model import Actor
from auditledger.server.auth import Tokens

PG_SERVER = os.environ.get("AUDITLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
TENANT = "soak"

# The server process: the app factory under uvicorn, exactly what `auditledger serve`
# runs, without loading every CLI module (restarts are the slow part of a soak).
_LAUNCH = """
import sys, uvicorn
from auditledger.server import create_app
from auditledger.settings import load
settings = load(db=sys.argv[1], port=int(sys.argv[2]))
uvicorn.run(create_app(settings), host="127.0.0.1", port=settings.port, log_level=settings.log_level)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``auditledger``'s app in a subprocess that can be started, SIGKILLed and started again."""

    def __init__(self, db_url: str, *, port: int | None = None, env: dict[str, str] | None = None,
                 log: Path | None = None) -> None:
        self.db_url = db_url
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "AUDITLEDGER_LOG_LEVEL": "warning", **(env or {})}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 90.0) -> float:
        """Start the process and wait until /readyz answers 200; returns the seconds it took."""
        began = time.monotonic()
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCH, self.db_url, str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, env=self.env,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        self.starts += 1
        while True:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-1500:] if self.log else ""
                raise RuntimeError(f"the server exited with {self.proc.returncode} while starting:\n{tail}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - began
            except httpx.TransportError:
                pass
            if time.monotonic() - began > timeout:
                self.kill()
                raise RuntimeError(f"the server did not become ready in {timeout:.0f} s (log: {self.log})")
            time.sleep(0.05)

    def peak_rss_mib(self) -> float:
        """The process's peak resident memory so far (VmHWM), in MiB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, the writer dies wherever it is."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class SoakResult:
    """What a soak run found; ``ok`` when nothing acknowledged was lost or doubled and verify passed."""

    store: str
    kills: int
    sent: int = 0
    acknowledged: int = 0
    stored: int = 0
    lost: int = 0
    duplicates: int = 0
    unexpected: int = 0  # stored events whose key was never sent
    verified: bool = False
    seconds: float = 0.0
    restart_seconds: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verified and self.lost == 0 and self.duplicates == 0 and self.unexpected == 0

    def line(self) -> str:
        worst = max(self.restart_seconds, default=0.0)
        return (
            f"{self.store}: kills {self.kills}, sent {self.sent}, acknowledged {self.acknowledged}, "
            f"stored {self.stored}, lost {self.lost}, duplicates {self.duplicates}, unexpected {self.unexpected}, "
            f"verify {'ok' if self.verified else 'FAILED'}, {self.seconds:.1f} s "
            f"(slowest restart {worst:.1f} s)"
        )


class _Load:
    """Worker threads that ingest until told to stop, each batch retried until acknowledged."""

    def __init__(self, url: str, token: str, workers: int, batch: int) -> None:
        self.url, self.token, self.batch = url, token, batch
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.acked: dict[str, str] = {}  # idempotency key -> event id from the receipt
        self.failures = 0
        self.threads = [threading.Thread(target=self._work, args=(w,), daemon=True) for w in range(workers)]

    def _work(self, worker: int) -> None:
        actor = Actor.service_account(f"soak-{worker}")
        client = Client(self.url, self.token, tenant=TENANT, batch_size=self.batch,
                        max_retries=20, backoff=0.05, max_backoff=0.5, timeout=15)
        n = 0
        run = uuid.uuid4().hex[:8]
        try:
            while not self.stop.is_set():
                events = [
                    event_dict("FLOW", "UPDATE", actor, details={"worker": str(worker), "n": str(n + i)},
                               after={"n": n + i}, idempotency_key=f"{run}-{worker}-{n + i}")
                    for i in range(self.batch)
                ]
                with self.lock:
                    self.sent += len(events)
                while True:  # the same keys again until the server says yes: stored once whatever happens
                    try:
                        receipts = client.record_many(events)
                        break
                    except AuditLedgerError:
                        with self.lock:
                            self.failures += 1
                        time.sleep(0.2)
                with self.lock:
                    for event, receipt in zip(events, receipts, strict=True):
                        self.acked[str(event["idempotency_key"])] = str(receipt["id"])
                n += self.batch
        finally:
            client.close()


def check_store(db_url: str, acked: dict[str, str], result: SoakResult) -> None:
    """Compare the store with the acknowledgements and verify the ledger (server stopped)."""
    with AuditLog.open(db_url) as log:
        rows = log.store.query("SELECT idempotency_key, id FROM events WHERE tenant = ?", [TENANT])
        result.stored = len(rows)
        seen: dict[str, list[str]] = {}
        for key, id in rows:
            seen.setdefault(str(key), []).append(str(id))
        result.duplicates = sum(len(ids) - 1 for ids in seen.values())
        result.unexpected = sum(1 for key in seen if key not in acked)
        for key, id in acked.items():
            if seen.get(key) != [id]:
                result.lost += 1
                if len(result.problems) < 5:
                    result.problems.append(f"acknowledged {key} as {id}, store has {seen.get(key)}")
        try:
            report = log.verify(tenant=TENANT)
            result.verified = report.sizes.get(TENANT) == result.stored
        except AuditLedgerError as exc:
            result.problems.append(f"verify: {exc}")


def run_soak(db_url: str, *, label: str, kills: int, workers: int = 3, batch: int = 25,
             gap: tuple[float, float] = (0.3, 1.5), seed: int | None = None, log: Path | None = None) -> SoakResult:
    """Ingest over HTTP into ``db_url`` while killing the server ``kills`` times; check what survived."""
    rng = random.Random(seed)
    result = SoakResult(label, kills)
    began = time.monotonic()
    with AuditLog.open(db_url) as ledger:  # also migrates the store before the first start
        token = Tokens(ledger.store).create("ingest", TENANT, name="soak")[0]
    server = ServerProcess(db_url, log=log)
    server.start()
    load = _Load(server.url, token, workers, batch)
    for thread in load.threads:
        thread.start()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(*gap))
            server.kill()
            result.restart_seconds.append(server.start())
        time.sleep(rng.uniform(*gap))  # let the generators deliver after the last restart
        load.stop.set()
        for thread in load.threads:
            thread.join(180)
        if any(t.is_alive() for t in load.threads):
            result.problems.append("a load generator did not finish its last batch")
    finally:
        load.stop.set()
        server.stop()
    result.sent, result.acknowledged = load.sent, len(load.acked)
    check_store(db_url, dict(load.acked), result)
    result.seconds = time.monotonic() - began
    return result


# ---------------------------------------------------------------- stores


@contextmanager
def sqlite_store(directory: Path) -> Iterator[str]:
    yield f"sqlite:///{directory / 'soak.db'}"


def _pg_url(server: str, database: str) -> str:
    base, _, query = server.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{database}" + (f"?{query}" if query else "")


@contextmanager
def pg_database(server: str = PG_SERVER) -> Iterator[str]:
    """A fresh database ``al_soak_<random>`` on ``server``, dropped afterwards.

    Raises ``psycopg.OperationalError`` when the server cannot be reached.
    """
    import psycopg

    name = f"al_soak_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield _pg_url(server, name)
    finally:
        with psycopg.connect(server, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long", action="store_true", help="20 kills on SQLite and on PostgreSQL")
    parser.add_argument("--store", choices=["sqlite", "pg", "both"], help="default: sqlite (both with --long)")
    parser.add_argument("--kills", type=int, help="SIGKILLs per store (default 3, 20 with --long)")
    parser.add_argument("--workers", type=int, default=3, help="load generator threads")
    parser.add_argument("--batch", type=int, default=25, help="events per request")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--pg", default=PG_SERVER, help="PostgreSQL server URL for --store pg")
    args = parser.parse_args(argv)
    kills = args.kills if args.kills is not None else (20 if args.long else 3)
    chosen = args.store or ("both" if args.long else "sqlite")
    stores = ["sqlite", "pg"] if chosen == "both" else [chosen]
    failed = False
    with tempfile.TemporaryDirectory(prefix="al-soak-") as tmp:
        for name in stores:
            context: Any = sqlite_store(Path(tmp)) if name == "sqlite" else pg_database(args.pg)
            with context as url:
                result = run_soak(url, label=name, kills=kills, workers=args.workers, batch=args.batch,
                                  seed=args.seed, log=Path(tmp) / f"{name}.log")
            print(result.line(), flush=True)
            for problem in result.problems:
                print(f"  problem: {problem}")
            failed = failed or not result.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
