"""Where a purge's time goes on SQLite: each statement's total time, the commits and the pauses.

    python bench/purge_profile.py --db /tmp/purge-bench.db

Works on a copy of a ledger filled by ``bench/purge.py`` (same ``--db``) and
purges everything older than 30 days of 90 with no ingest running, timing
every statement purge runs through its write transactions (grouped by the
statement's text), the time inside ``write()`` outside those statements (BEGIN,
COMMIT, the pragma switches), and the pauses between batches (WAL copies,
yielding to waiting writers).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

from purge import copy_of, fill, remove

from auditledger import Actor, AuditLog
from auditledger.retention import Retention, purge_filter
from auditledger.store.sqlite import SQLiteWriteTxn

_SPACES = re.compile(r"\s+")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="/tmp/auditledger-purge-bench.db", help="a ledger filled by bench/purge.py")
    parser.add_argument("--events", type=int, default=1_000_000, help="its size (filled if it is not that)")
    parser.add_argument("--vacuum", action="store_true", help="also time the incremental vacuum")
    args = parser.parse_args()

    filled_at = fill(args.db, args.events, False)
    cut = filled_at - timedelta(days=30)
    path = copy_of(args.db, ".profile")
    print(f"load average {os.getloadavg()[0]:.2f}")
    spent: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0.0])
    inside = [0.0, 0]

    def timed(kind: str, original: Any) -> Any:
        def run(self: SQLiteWriteTxn, sql: str, params: Sequence[Any] = ()) -> Any:
            t, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(self, sql, params)
            finally:
                entry = spent[f"{kind} {_SPACES.sub(' ', sql)[:150]}"]
                entry[0] += time.perf_counter() - t
                entry[1] += 1
                entry[2] += time.thread_time() - cpu

        return run

    SQLiteWriteTxn.execute = timed("exec", SQLiteWriteTxn.execute)  # type: ignore[method-assign]
    SQLiteWriteTxn.query = timed("query", SQLiteWriteTxn.query)  # type: ignore[method-assign]
    log = AuditLog.open(f"sqlite:///{path}")
    store: Any = log.store
    purge_write = store.purge_write

    @contextmanager
    def timed_write() -> Iterator[SQLiteWriteTxn]:
        t = time.perf_counter()
        with purge_write() as txn:
            yield txn
        inside[0] += time.perf_counter() - t
        inside[1] += 1

    store.purge_write = timed_write
    retention = Retention(log, reclaim_threshold=1)
    pause = retention._pause
    paused = [0.0, 0]

    def timed_pause() -> None:
        t = time.perf_counter()
        pause()
        paused[0] += time.perf_counter() - t
        paused[1] += 1

    retention._pause = timed_pause  # type: ignore[method-assign]
    checkpoint = store.checkpoint
    copied = [0.0, 0]

    def timed_checkpoint() -> bool:
        t = time.perf_counter()
        try:
            return bool(checkpoint())
        finally:
            copied[0] += time.perf_counter() - t
            copied[1] += 1

    store.checkpoint = timed_checkpoint
    written = _written()
    t0, cpu0 = time.perf_counter(), time.thread_time()
    result = retention.purge(purge_filter(cut), actor=Actor.system("bench"), reclaim=False)
    total, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
    print(f"purge: {result.count:,} events in {total:.2f}s = {result.count / total:,.0f} events/s "
          f"({result.batches} batches); the purging thread's CPU {cpu:.2f}s "
          f"({result.count / cpu:,.0f} events per CPU second)")
    print("   wall  share    cpu  calls")
    statements = sum(s for s, _, _ in spent.values())
    for sql, (seconds, calls, used) in sorted(spent.items(), key=lambda kv: -kv[1][0]):
        if seconds >= 0.005:
            print(f"{seconds:7.2f}s {100 * seconds / total:5.1f}% {used:6.2f}s {calls:6d}x  {sql}")
    print(f"{inside[0] - statements:7.2f}s {100 * (inside[0] - statements) / total:5.1f}% {inside[1]:6d}x  "
          "inside write() outside the statements (BEGIN, COMMIT, pragmas)")
    print(f"{paused[0]:7.2f}s {100 * paused[0] / total:5.1f}% {paused[1]:6d}x  pauses between batches")
    print(f"{copied[0]:7.2f}s {100 * copied[0] / total:5.1f}% {copied[1]:6d}x    of which WAL copies (checkpoint())")
    rest = total - inside[0] - paused[0]
    print(f"{rest:7.2f}s {100 * rest / total:5.1f}%          the rest (planning, holds, the purge's event)")
    print(f"{(_written() - written) / result.count:,.0f} bytes written per purged event (WAL and database file)")
    if args.vacuum:
        t1 = time.perf_counter()
        retention.reclaim()
        print(f"incremental vacuum {time.perf_counter() - t1:.2f}s")
    log.close()
    remove(path)


def _written() -> int:
    """Bytes this process has handed to write() so far (Linux)."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("wchar:"))


if __name__ == "__main__":
    main()
