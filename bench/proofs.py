"""Proof benchmarks: verify throughput, inclusion proof latency, append cost of the tree.

1. ``AuditLog.verify`` (every event re-hashed, decoded and checked against its
   indexed columns and details rows) in one process and in one process per CPU,
   beside the raw ceiling (reading ``seq, hash, body`` and hashing the bodies, one
   process, no checks), ``--rounds`` times; and ``tree.verify_against`` (the whole
   tree recomputed from the leaf hashes and checked against a signed checkpoint).
2. Inclusion proof generation (``Tree.inclusion`` + ``root_at`` on a cold
   ``Tree``, as one API request does) at ``--proof-size`` leaves: p50/p99.
   The leaves are written straight into the ``leaves`` table and the tree is
   built by catch-up, so that a million-leaf tree takes seconds, not an ingest.
3. ``record_many`` into two ledgers, batch by batch in alternation, one with
   the tree maintained and one with ``tree.extend_rows`` switched off; also the
   CPU spent inside ``tree.extend_rows``.

Wall and CPU (process) times are printed: on a shared machine CPU time is the
steadier figure.

    python bench/proofs.py [--events 50000] [--proof-size 1000000] [--proofs 2000] [--rounds 3] [--threads]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from auditledger import AuditLog, tree
from auditledger import checkpoint as ck
from auditledger.demo import demo_events
from auditledger.store import Row, WriteTxn


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall time and CPU time, the CPU of finished child processes (verify's workers) included."""
    wall, cpu = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - wall, _cpu() - cpu


def _cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def bench_append(tmp: Path, n: int, batch: int, rounds: int) -> None:
    """Two ledgers fed batch by batch in alternation, the tree switched off for one of them.

    Alternating every batch (and which goes first) exposes both to the same
    machine load, which a shared machine changes from second to second.
    """
    events = list(demo_events(n))
    original = tree.extend_rows
    spent = [0.0]

    def measured(txn: WriteTxn, rows: list[Row]) -> None:
        t0 = time.process_time()
        original(txn, rows)
        spent[0] += time.process_time() - t0

    def off(txn: WriteTxn, rows: list[Row]) -> None:
        return None

    totals = {False: [0.0, 0.0], True: [0.0, 0.0]}  # with_tree -> [wall, cpu]
    for r in range(rounds):
        logs = {flag: AuditLog.open(f"sqlite:///{tmp / f'append-{r}-{flag}.db'}") for flag in (False, True)}
        for b, i in enumerate(range(0, n, batch)):
            for flag in (False, True) if b % 2 == 0 else (True, False):
                tree.extend_rows = measured if flag else off  # type: ignore[assignment]
                wall, cpu = timed(lambda: logs[flag].record_many(events[i : i + batch]))  # noqa: B023
                totals[flag][0] += wall
                totals[flag][1] += cpu
        tree.extend_rows = original
        for log in logs.values():
            log.close()
    total = n * rounds
    (w0, c0), (w1, c1) = totals[False], totals[True]
    print(f"append, {n} events in batches of {batch}, {rounds} rounds, batches alternating:")
    print(f"  without tree: {total / w0:10,.0f} events/s wall, {total / c0:10,.0f} events/s CPU")
    print(f"  with tree:    {total / w1:10,.0f} events/s wall, {total / c1:10,.0f} events/s CPU")
    print(f"  tree overhead: {100 * (w1 / w0 - 1):+.1f}% wall, {100 * (c1 / c0 - 1):+.1f}% CPU; "
          f"CPU inside tree.extend_rows: {100 * spent[0] / c1:.1f}% of the ingest's")


def raw_ceiling(db: Path, n: int) -> None:
    """What verify cannot beat in one process: read ``seq, hash, body`` and hash each body, nothing else."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    sha256 = hashlib.sha256

    def read_and_hash() -> None:
        for lo in range(0, n, 20_000):
            rows = conn.execute(
                "SELECT l.seq, l.hash, e.body FROM leaves l JOIN events e ON e.tenant = l.tenant AND e.seq = l.seq "
                "WHERE l.tenant = 'main' AND l.seq >= ? AND l.seq < ? ORDER BY l.seq",
                (lo, lo + 20_000),
            ).fetchall()
            for _, leaf, body in rows:
                if sha256(b"\x00" + body).digest() != leaf:
                    raise SystemExit("raw ceiling: a leaf hash differs")

    wall, cpu = timed(read_and_hash)
    conn.close()
    print(f"raw ceiling (read seq, hash, body + sha256, one process), {n} events: "
          f"{n / wall:,.0f} events/s wall, {n / cpu:,.0f} events/s CPU")


def verify_parts(db: Path, n: int) -> None:
    """Where verify's time goes on SQLite: each of its statements alone, then the hash pass, in CPU µs per event.

    The same SQL as ``store/sqlite_verify.py``, one after another in this thread (verify runs
    the two checks in worker threads beside the hash pass, so its wall time is about the
    largest share, its CPU time about the sum).
    """
    from auditledger import verify
    from auditledger.store import CheckedChunk, sqlite_verify

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    step = sqlite_verify.CHUNK
    ranges = [(lo, min(lo + step, n)) for lo in range(0, n, step)]

    def cpu(fn: Callable[[], Any]) -> tuple[float, Any]:
        best, out = float("inf"), None
        for _ in range(3):
            t0 = time.process_time()
            out = fn()
            best = min(best, time.process_time() - t0)
        return best * 1e6 / n, out

    def read_chunk(lo: int, hi: int) -> CheckedChunk:
        events = conn.execute(sqlite_verify._EVENTS, ("main", lo, hi)).fetchall()
        leaves = None if len(events) == hi - lo else conn.execute(sqlite_verify._LEAVES, ("main", lo, hi)).fetchall()
        return CheckedChunk(lo, hi, leaves, events, lambda: None)

    def check_columns(lo: int, hi: int) -> None:
        conn.execute(sqlite_verify._COLUMNS_CHECK, ("main", lo, hi)).fetchone()
        conn.execute(sqlite_verify._LEAVES_CHECK, (hi - lo, "main", lo, hi)).fetchone()

    read, chunks = cpu(lambda: [read_chunk(lo, hi) for lo, hi in ranges])
    hashing, _ = cpu(lambda: [verify._hash_pass(chunk, -1) for chunk in chunks])
    columns, _ = cpu(lambda: [check_columns(*r) for r in ranges])
    details, _ = cpu(lambda: conn.execute(sqlite_verify._DETAILS_CHECK, (0, step, "main", 0, n)).fetchall())
    conn.close()
    print(f"verify's parts, CPU per event: hash pass {read + hashing:.2f} µs (reading the events {read:.2f}, "
          f"hashing and dates {hashing:.2f}); columns and leaves check {columns:.2f} µs; "
          f"details check {details:.2f} µs; "
          f"sum {read + hashing + columns + details:.2f} µs")


def _schedstat() -> tuple[float, float]:
    """This thread's time running and waiting for a CPU, in seconds (Linux); zeros elsewhere."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            running, waiting, _ = f.read().split()
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(running) / 1e9, int(waiting) / 1e9


def verify_threads(log: AuditLog, processes: int) -> None:
    """One verify, each thread of the calling process timed: running, waiting for a CPU, blocked.

    Blocked is neither running nor runnable: waiting for the GIL, a verdict or a worker process.
    The worker processes are seen from here: their CPU (all of it, start included) and how long
    this process waits for them once its own range is checked.
    """
    from auditledger import verify
    from auditledger.store import sqlite_verify

    spans: list[tuple[str, float, float, float, float]] = []  # name, start, wall, running, waiting
    t0 = time.perf_counter()

    def timed_call(name: str | None, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            start, (running, waiting) = time.perf_counter(), _schedstat()
            try:
                return fn(*args, **kwargs)
            finally:
                r, w = _schedstat()
                spans.append((name or args[0].role, start - t0, time.perf_counter() - start, r - running, w - waiting))
        return call

    created: list[object] = []

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        originals[0](self, *args, **kwargs)
        self.role = ("columns worker", "details worker")[len(created) % 2]  # created in this order per range
        created.append(self)

    originals = (sqlite_verify._Worker.__init__, sqlite_verify._Worker.run, verify.check_range, verify._answers)
    sqlite_verify._Worker.__init__ = init  # type: ignore[method-assign]
    sqlite_verify._Worker.run = timed_call(None, originals[1])  # type: ignore[method-assign]
    verify.check_range = timed_call("calling thread", originals[2])  # type: ignore[assignment]
    verify._answers = timed_call("waiting for the workers", originals[3])  # type: ignore[assignment]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        wall, cpu = timed(lambda: log.verify(processes=processes))
    finally:
        (sqlite_verify._Worker.__init__, sqlite_verify._Worker.run,  # type: ignore[method-assign]
         verify.check_range, verify._answers) = originals
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers = max(0.0, after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime)
    print(f"  threads, {processes} process(es): wall {1000 * wall:.0f} ms, CPU of all processes {1000 * cpu:.0f} ms, "
          f"of the worker processes {1000 * workers:.0f} ms")
    for name, start, span, running, waiting in sorted(spans, key=lambda s: s[1]):
        if name == "waiting for the workers":
            print(f"    {name}: {1000 * span:.0f} ms after {1000 * start:.0f} ms")
        else:
            print(f"    {name}: {1000 * start:.0f}-{1000 * (start + span):.0f} ms, running {1000 * running:.0f}, "
                  f"waiting for a CPU {1000 * waiting:.0f}, blocked {1000 * (span - running - waiting):.0f}")


def bench_verify(tmp: Path, n: int, rounds: int, threads: bool = False) -> None:
    """Verify in one process and in one per CPU, each against the raw ceiling, best of ``rounds``."""
    db = tmp / "verify.db"
    url = f"sqlite:///{db}"
    events = list(demo_events(n))
    signer = tree.Signer(ck.generate_key())
    with AuditLog.open(url) as log:
        for i in range(0, n, 1000):
            log.record_many(events[i : i + 1000])
        note = tree.make_checkpoint(log.store, "main", signer).note
    cpus = os.cpu_count() or 1
    with AuditLog.open(url) as log:
        verify_parts(db, n)
        for _ in range(rounds):
            raw_ceiling(db, n)
            for processes in sorted({1, cpus}):
                wall, cpu = timed(lambda: log.verify(processes=processes))  # noqa: B023
                print(f"AuditLog.verify, {n} events, {processes} process(es): {n / wall:,.0f} events/s wall, "
                      f"{n / cpu:,.0f} events/s CPU (all processes)")
                if threads:
                    verify_threads(log, processes)
        wall, cpu = timed(lambda: tree.verify_against(log, note, [signer.vkey]))
        print(f"tree.verify_against, {n} leaves: {n / wall:,.0f} leaves/s wall, {n / cpu:,.0f} leaves/s CPU")


def bench_proofs(tmp: Path, size: int, count: int) -> None:
    url = f"sqlite:///{tmp / 'proofs.db'}"
    log = AuditLog.open(url)
    store = log.store
    start = time.perf_counter()
    with store.write() as txn:
        conn = txn.conn  # type: ignore[attr-defined]  # SQLite: executemany for speed
        step = 100_000
        for lo in range(0, size, step):
            conn.executemany(
                "INSERT INTO leaves (tenant, seq, hash) VALUES ('main', ?, ?)",
                [(seq, hashlib.sha256(seq.to_bytes(8, "big")).digest()) for seq in range(lo, min(size, lo + step))],
            )
        txn.execute("INSERT INTO heads (tenant, size, last_date) VALUES ('main', ?, 0)", [size])
    tree.catch_up(store, "main")
    print(f"built a {size:,}-leaf tree in {time.perf_counter() - start:.1f} s")
    signer = tree.Signer(ck.generate_key())
    note = tree.make_checkpoint(store, "main", signer).note
    wall, cpu = timed(lambda: tree.verify_against(log, note, [signer.vkey]))
    print(f"tree.verify_against, {size:,} leaves: {size / wall:,.0f} leaves/s wall, {size / cpu:,.0f} leaves/s CPU")
    rng = random.Random(1)
    cases = [(rng.randrange(size), size - rng.randrange(min(size, 5000))) for _ in range(count)]
    for label, with_root in (("inclusion proof", False), ("inclusion proof + root", True)):
        times = []
        cpu = time.process_time()
        for index, tree_size in cases:
            index = min(index, tree_size - 1)
            t0 = time.perf_counter()
            t = tree.Tree(store.query, "main")  # cold: nothing cached, as in one API request
            t.inclusion(index, tree_size)
            if with_root:
                t.root_at(tree_size)
            times.append(time.perf_counter() - t0)
        cpu = time.process_time() - cpu
        times.sort()
        p50, p99 = (1000 * times[min(len(times) - 1, int(q * len(times)))] for q in (0.50, 0.99))
        print(f"{label}, tree of {size:,}, {count} random: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
              f"max {1000 * times[-1]:.2f} ms wall; mean {1000 * cpu / count:.2f} ms CPU")
    log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000, help="events for the verify and append figures")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--proof-size", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=2000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["verify", "proofs", "append"])
    parser.add_argument("--threads", action="store_true",
                        help="after each verify, one more with the calling process's threads timed (Linux)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if "verify" not in args.skip:
            bench_verify(tmp, args.events, args.rounds, args.threads)
        if "proofs" not in args.skip:
            bench_proofs(tmp, args.proof_size, args.proofs)
        if "append" not in args.skip:
            bench_append(tmp, args.events, args.batch, args.rounds)


if __name__ == "__main__":
    main()
