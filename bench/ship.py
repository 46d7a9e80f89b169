"""Shipping throughput: events per second to NDJSON files and to a local HTTP receiver.

    python bench/ship.py --events 100000
    python bench/ship.py --db sqlite:///big.db --events 0   # reuse a filled ledger

The HTTP receiver runs in its own process (a minimal http.server that reads
each body and answers 200), so the shipper's process is measured alone.
Targets (issue 6): >= 100k events/s to files, >= 20k events/s over HTTP.

``raw ceiling`` is the same work without the shipper, to judge the file
figures by: read the same rows' bodies from the store in windows of
``--batch`` (one query each), write them as lines to a file and fsync after
every window, in one thread. The shipper does more per event (the leaf hash
in each record, offsets committed per batch) but reads ahead in a second thread.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from auditledger import AuditLog
from auditledger.demo import demo_events
from auditledger.ship import Shipper, offsets, run_shipper

RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    do_PUT = do_POST
    def log_message(self, *a):
        pass

s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def fill(log: AuditLog, n: int) -> None:
    events = list(demo_events(min(n, 20_000), seed=5))
    done = 0
    while done < n:
        take = min(5000, n - done)
        log.record_many([events[(done + i) % len(events)] for i in range(take)])
        done += take


def timed(log: AuditLog, spec: dict[str, object], key: str) -> tuple[int, float, float]:
    """Events shipped, wall seconds, and this process's CPU seconds (the shared machine inflates wall time)."""
    key = key.replace(" ", "-").replace("+", "-")
    offsets.reset(log.store, "main", key)
    start, cpu = time.perf_counter(), time.process_time()
    out = run_shipper(log, {**spec, "offsetKey": key, "lookbackPeriod": "P3650D"})
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if out["errors"]:
        raise SystemExit(f"shipping failed: {out['errors']}")
    return int(out["size"]), seconds, cpu


def raw_ceiling(log: AuditLog, path: Path, batch: int) -> tuple[int, float, float]:
    """Events written, wall and CPU seconds: bodies read by seq window, written as lines, fsynced per window."""
    head = next((h.size for h in log.store.heads() if h.tenant == "main"), 0)
    sql = "SELECT body FROM events WHERE tenant = ? AND seq >= ? AND seq < ? ORDER BY seq"
    n = 0
    start, cpu = time.perf_counter(), time.process_time()
    with path.open("wb") as f:
        for low in range(0, head, batch):
            bodies = [body for (body,) in log.store.query(sql, ["main", low, low + batch])]
            f.write(b"\n".join(bodies) + b"\n")
            f.flush()
            os.fsync(f.fileno())
            n += len(bodies)
    return n, time.perf_counter() - start, time.process_time() - cpu


def report(name: str, n: int, wall: float, cpu: float) -> None:
    print(
        f"{name:<18} {n:>9,} events  wall {wall:6.2f} s {n / wall:>9,.0f} ev/s  cpu {cpu:6.2f} s {n / cpu:>9,.0f} ev/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="store URL (default: a temporary SQLite file)")
    parser.add_argument("--events", type=int, default=200_000, help="events to record first (0: use the db as is)")
    parser.add_argument("--batch", type=int, default=5000, help="batchSize")
    parser.add_argument("--only", choices=["file", "http"], help="run one of the two")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ship-bench-"))
    log = AuditLog.open(args.db or f"sqlite:///{tmp / 'bench.db'}")
    if args.events:
        t = time.perf_counter()
        fill(log, args.events)
        print(f"recorded {args.events:,} events in {time.perf_counter() - t:.1f} s")
    base = {"batchSize": args.batch}
    # The first Shipper imports the settings and reads the exporters' entry points (about a second on
    # this machine): start-up, not throughput, so it happens before anything is timed.
    Shipper(log, {"logExporters": [{"id": "warm-up", "type": "file", "directory": str(tmp / "warm-up")}]})
    if args.only in (None, "file"):
        n, s, c = raw_ceiling(log, tmp / "raw.ndjson", args.batch)
        report("raw ceiling", n, s, c)
        for name, extra in (
            ("ndjson", {}),
            ("ndjson+gzip", {"gzip": True, "gzipLevel": 1}),
            ("ecs ndjson", {"format": "ecs"}),
        ):
            spec = {
                **base,
                "logExporters": [
                    {
                        "id": "f",
                        "type": "file",
                        "directory": str(tmp / name.replace(" ", "_")),
                        "maxLinesPerFile": 1_000_000,
                        **extra,
                    }
                ],
            }
            n, s, c = timed(log, spec, "bench-file-" + name.replace(" ", "-").replace("+", "-"))
            report(f"file {name}", n, s, c)
    if args.only in (None, "http"):
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(RECEIVER)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            url = f"http://127.0.0.1:{proc.stdout.readline().strip()}"
            for name, exporter in (
                ("webhook", {"type": "webhook", "url": url + "/in"}),
                ("webhook+gzip", {"type": "webhook", "url": url + "/in", "gzip": True}),
                ("datadog", {"type": "datadog", "basePath": url, "apiKey": "k"}),
            ):
                spec = {**base, "logExporters": [{"id": "h", **exporter}]}
                n, s, c = timed(log, spec, f"bench-http-{name}")
                report(f"http {name}", n, s, c)
        finally:
            proc.terminate()
            proc.wait()
    log.close()
    print(f"(cpu count {os.cpu_count()}; files in {tmp})")


if __name__ == "__main__":
    main()
