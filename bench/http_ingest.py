"""HTTP ingest over loopback: batched throughput and single-event latency.

Starts ``auditledger serve`` in a subprocess on a fresh SQLite file (with an
ingest token, so authentication is part of the cost), then

* ``--clients`` threads each POST batches of ``--batch`` demo events until
  ``--events`` are stored: events per second (target >= 20,000 with 4 x 500);
* one client sends ``--singles`` one-event requests: p50/p99 latency
  (target p99 < 25 ms).

    python bench/http_ingest.py [--events 200000] [--batch 500] [--clients 4] [--singles 1000]
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
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        if errors:
            raise SystemExit(f"{len(errors)} failed requests, first: {errors[0]}")
        print(f"batched: {args.events:,} events, {args.clients} clients x {args.batch} per request: "
              f"{elapsed:.2f} s, {args.events / elapsed:,.0f} events/s")

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


if __name__ == "__main__":
    main()
