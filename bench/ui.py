"""Server time of the web UI's pages on a large SQLite ledger.

Serves the UI (``create_app``, uvicorn on 127.0.0.1) over the 1M-event ledger
that ``bench/search.py`` caches under /tmp (built here with its ``build`` when
missing, which takes minutes), and times each page: the ``Server-Timing``
header the table page sends (handler start to rendered HTML) and the client's
wall time for the whole request. Target: table first page < 300 ms server time.
The count and the timeline are fragments the page fetches after its rows; they
are timed separately.

    python bench/ui.py [--events 1000000] [--runs 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from auditledger import AuditLog
from auditledger.server import create_app
from auditledger.settings import Settings


def _search_bench_build(path: Path, events: int) -> None:
    spec = importlib.util.spec_from_file_location("bench_search", Path(__file__).with_name("search.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(path, events)


def _serve(db: str) -> tuple[str, uvicorn.Server, AuditLog]:
    ledger = AuditLog.open(db)
    # insecure_dev: no token row is written into the shared benchmark file; a session costs
    # one AES-GCM open and one indexed token lookup on top of what is measured here.
    app = create_app(Settings(db=db, insecure_dev=True, checkpoint_interval=0), ledger)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, ledger


def _measure(client: httpx.Client, path: str, params: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    server_ms: list[float] = []
    wall_ms: list[float] = []
    client.get(path, params=params)  # warm: templates compiled, pages cached by SQLite
    for _ in range(runs):
        began = time.perf_counter()
        answer = client.get(path, params=params)
        wall_ms.append((time.perf_counter() - began) * 1000)
        answer.raise_for_status()
        timing = re.search(r"dur=([\d.]+)", answer.headers.get("server-timing", ""))
        if timing:
            server_ms.append(float(timing.group(1)))
    return server_ms, wall_ms


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--db", type=Path, default=None, help="Ledger file (default /tmp/auditledger-bench-N.db).")
    args = parser.parse_args()
    path = args.db or Path(f"/tmp/auditledger-bench-{args.events}.db")
    if not path.exists():
        print(f"building {path} with bench/search.py's builder ({args.events:,} events) ...", flush=True)
        _search_bench_build(path, args.events)
    url, server, ledger = _serve(f"sqlite:///{path}")
    size = sum(h.size for h in ledger.store.heads())
    print(f"ledger {path}: {size:,} events; {args.runs} runs per page; milliseconds")
    with httpx.Client(base_url=url, timeout=600) as client:
        first = ledger.search(None, limit=60).events
        older = client.get("/ui/t/main").text
        cursor = re.search(r'older=([A-Za-z0-9_-]+)', older)
        pages: list[tuple[str, str, dict[str, str]]] = [
            ("table, first page, no filter", "/ui/t/main", {}),
            ("table, namespace:company.team", "/ui/t/main", {"q": "namespace:company.team"}),
            ("table, resource:FLOW action:UPDATE", "/ui/t/main", {"q": "resource:FLOW action:UPDATE"}),
            ("table, actor + last 7 d", "/ui/t/main", {"q": "actor:anna@acme.io after:-7d"}),
            ("table, free word", "/ui/t/main", {"q": "billing"}),
            ("table, 200 rows", "/ui/t/main", {"size": "200"}),
        ]
        if cursor:
            pages.append(("table, second page (keyset)", "/ui/t/main", {"older": cursor.group(1)}))
        print(f"{'page':40} {'server p50':>10} {'p95':>7} {'wall p50':>9} {'p95':>7}")
        for name, path_, params in pages:
            srv, wall = _measure(client, path_, params, args.runs)
            print(f"{name:40} {statistics.median(srv):10.1f} {_pct(srv, 0.95):7.1f} "
                  f"{statistics.median(wall):9.1f} {_pct(wall, 0.95):7.1f}", flush=True)
        flow = next((e for e in first if e.before is not None or e.after is not None), first[0])
        others = [
            ("diff page", f"/ui/t/main/events/{flow.id}/diff", {}),
            ("event page", f"/ui/t/main/events/{flow.id}", {}),
            ("count fragment, no filter", "/ui/t/main/count", {}),
            ("count fragment, namespace:company.team", "/ui/t/main/count", {"q": "namespace:company.team"}),
            ("timeline fragment, last 7 d", "/ui/t/main/timeline", {"q": "after:-7d"}),
            ("timeline fragment, all 90 d", "/ui/t/main/timeline", {}),
            ("timeline fragment, namespace (90 d)", "/ui/t/main/timeline", {"q": "namespace:company.team"}),
        ]
        for name, path_, params in others:
            runs = max(3, args.runs // 4) if "fragment" in name else args.runs
            _, wall = _measure(client, path_, params, runs)
            print(f"{name:40} {'':>10} {'':>7} {statistics.median(wall):9.1f} {_pct(wall, 0.95):7.1f}", flush=True)
    server.should_exit = True
    ledger.close()


if __name__ == "__main__":
    main()
