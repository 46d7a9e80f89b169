"""HTTP ingest over loopback: batched throughput and single-event latency.

Starts ``auditledger serve`` in a subprocess on a fresh SQLite file (with an
ingest token, so authentication is part of the cost), then

* ``--clients`` threads each POST batches of ``--batch`` demo events until
  ``--events`` are stored: events per second (target >= 20,000 with 4 x 500);
* one client sends ``--singles`` one-event requests: p50/p99 latency
  (target p99 < 25 ms).

and where the time goes: the server process's CPU per event (its event-loop thread,
which parses, validates and encodes, apart from its other threads: the group-commit
writer, the checkpointer) and the clients' own, read from ``/proc`` (Linux) and
``time.process_time`` around the batched run; then, for comparison, the embedded
ceiling of the same machine: ``AuditLog.record_many`` and raw ``sqlite3.executemany``
(``bench/ingest.py``) with batches of clients x batch events, the most one group commit takes from those clients.

    python bench/http_ingest.py [--events 200000] [--batch 500] [--clients 4] [--singles 1000] [--ceiling 100000]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson

from auditledger.demo import demo_events


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--singles", type=int, default=1000)
    parser.add_argument(
        "--ceiling", type=int, default=100_000, metavar="N",
        help="Events for the embedded ceiling run printed after the HTTP figures (0: skip).",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="auditledger-http-bench-"))
    db = f"sqlite:///{workdir / 'ledger.db'}"
    script = Path(sys.executable).parent / "auditledger"
    if not script.exists():
        raise SystemExit("run with the project's virtualenv python (the auditledger command must be beside it)")
    cli = [str(script)]
    token = subprocess.run(
        [*cli, "token", "create", "--role", "ingest", "--tenant", "main", "--db", db],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    port = free_port()
    env = {**os.environ, "AUDITLEDGER_LOG_LEVEL": "warning"}
    server = subprocess.Popen([*cli, "serve", "--db", db, "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not start")
            time.sleep(0.1)
        events = list(demo_events(args.events, seed=11))
        bodies = [
            orjson.dumps({"events": events[i : i + args.batch]}) for i in range(0, len(events), args.batch)
        ]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        next_body = iter(bodies)
        lock = threading.Lock()
        errors: list[str] = []

        def worker() -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
                while True:
                    with lock:
                        body = next(next_body, None)
                    if body is None:
                        return
                    r = client.post("/api/v1/main/auditlogs", content=body)
                    if r.status_code != 201:
                        errors.append(f"{r.status_code} {r.text[:200]}")

        threads = [threading.Thread(target=worker) for _ in range(args.clients)]
        cpu_before = thread_cpu(server.pid)
        client_before = time.process_time()
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        client_cpu = time.process_time() - client_before
        cpu_after = thread_cpu(server.pid)
        if errors:
            raise SystemExit(f"{len(errors)} failed requests, first: {errors[0]}")
        print(f"batched: {args.events:,} events, {args.clients} clients x {args.batch} per request: "
              f"{elapsed:.2f} s, {args.events / elapsed:,.0f} events/s")
        writer = writer_metrics(url)
        commits = writer.get("auditledger_writer_commits_total", 0.0)
        if commits:
            busy = writer.get("auditledger_writer_commit_seconds_total", 0.0) / elapsed
            print(f"group commit: {commits:,.0f} commits, {args.events / commits:,.0f} events per commit, "
                  f"writer busy {busy:.0%} of the run")
        if cpu_after:
            loop = cpu_after.get(server.pid, 0.0) - cpu_before.get(server.pid, 0.0)
            total = sum(cpu_after.values()) - sum(cpu_before.get(t, 0.0) for t in cpu_after)
            per = 1e6 / args.events
            print(f"CPU per event: server {total * per:.1f} us ({total / elapsed:.2f} cores): event loop "
                  f"{loop * per:.1f}, other threads (writer, checkpoint) {(total - loop) * per:.1f}; "
                  f"clients {client_cpu * per:.1f} us; load {os.getloadavg()[0]:.1f}")

        one = [orjson.dumps(e) for e in demo_events(args.singles, seed=12)]
        latencies = []
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            for body in one:
                t0 = time.perf_counter()
                r = client.post("/api/v1/main/auditlogs", content=body)
                latencies.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 201:
                    raise SystemExit(f"single request failed: {r.status_code} {r.text[:200]}")
        latencies.sort()
        p50 = latencies[len(latencies) // 2]
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        print(f"single-event requests: {args.singles}, p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    finally:
        server.terminate()
        server.wait(10)
    if args.ceiling:
        ceiling(args.ceiling, args.batch * args.clients)


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of process ``pid``, from ``/proc``; {} elsewhere."""
    found: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended in between
        found[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return found


def writer_metrics(url: str) -> dict[str, float]:
    """The writer's counters from ``/metrics`` (Prometheus text)."""
    found: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("auditledger_writer_"):
            found[name] = float(value)
    return found


def ceiling(events: int, batch: int) -> None:
    """What the embedded append and the raw SQLite inserts reach on this machine, now.

    HTTP ingest cannot go faster than the embedded ``record_many`` it ends in, and
    that cannot go faster than raw ``executemany`` of the same rows into the same
    schema: printed beside the HTTP figure so that a run on a slow or busy
    machine can be read against its own ceiling.
    """
    sys.path.insert(0, str(Path(__file__).parent))
    from ingest import measure  # the embedded benchmark, at the group size of the HTTP run

    base, mine = measure(events, batch)
    print(f"embedded ceiling ({events:,} events, batches of {batch}): AuditLog.record_many {mine:,.0f} events/s, "
          f"raw sqlite3.executemany {base:,.0f} rows/s")


if __name__ == "__main__":
    main()
