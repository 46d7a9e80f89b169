"""Verifying a stored ledger: every position re-hashed and cross-checked against its indexes.

Per tenant, position by position: the leaf hash is the RFC 9162 leaf hash of the stored
canonical bytes; positions run 0, 1, 2 ... with no gap; an event is missing only where purge
marked its leaf, and then its details rows are gone too; every indexed column and the details
rows (what search filters on) say what the hashed bytes say; dates never go backwards; the
head's size is the number of positions. The first bad position is named.

Where the store compares the indexed columns and details rows with the hashed bytes itself
(``Store.checked_chunks``: SQLite, in worker threads), the hot loop here only hashes and checks
positions and dates; a chunk with any doubt takes the exact check. The exact check reads plain
tuples (``Store.verify_chunks``), hashes with hashlib and compares the indexed columns with the
parsed bytes as one tuple: only a mismatch pays for decoding an ``Event`` and naming the field.
A large ledger on a file or PostgreSQL store is cut into one
range of positions per CPU: this process checks the first while worker processes check the
others; the lowest bad position wins.
"""

from __future__ import annotations

import hashlib
import operator
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from auditledger import canonical
from auditledger.errors import VerificationError
from auditledger.model import Event, format_micros, to_micros
from auditledger.store import DETAILS_PENDING, CheckedChunk, DatabaseChecks, Head, Row, Store, open_store

# Below this many positions one process is about as quick: each worker pays for starting
# Python and importing the package (~0.2 s on an idle machine) before it checks anything.
PARALLEL_MIN = 50_000

# A range's outcome, also as a worker process prints it (JSON): (purged count, None, "") when
# it checks out, else (0, first bad seq, message).
Outcome = tuple[int, int | None, str]


def verify_tenant(store: Store, tenant: str, head: Head, *, processes: int | None = None) -> tuple[int, int]:
    """Check every position of ``tenant``; return (positions, purged) or raise at the first bad one.

    ``processes``: None picks one per CPU for a large ledger on a store other processes can
    open (not ``memory://``), else 1; a number forces that many (tests use it on small ledgers).
    """
    size = head.size
    first, *others = split(size, _process_count(store, size, processes))
    workers = _start_workers(store.url, tenant, size, others)
    try:
        outcomes = [_outcome(store, tenant, *first, size)]  # this process takes the first range meanwhile
    except BaseException:
        _stop(workers or [])
        raise
    if outcomes[0][1] is not None:  # the first range's error is the first bad position: no need to wait
        _stop(workers or [])
        raise VerificationError(outcomes[0][2], outcomes[0][1])
    for (lo, hi), answer in zip(others, _answers(workers, len(others)), strict=True):
        outcomes.append(answer if answer is not None else _outcome(store, tenant, lo, hi, size))
    purged = 0
    for count, bad, message in outcomes:  # in position order: the first failing range holds the first bad seq
        if bad is not None or message:
            raise VerificationError(message, bad)
        purged += count
    _check_beyond_head(store, tenant, size)
    return size, purged


def split(size: int, parts: int) -> list[tuple[int, int]]:
    """``[0, size)`` as ``parts`` consecutive ranges of (nearly) equal length."""
    parts = max(1, min(parts, size))
    bounds = [size * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)] if size else [(0, 0)]


def _process_count(store: Store, size: int, processes: int | None) -> int:
    if processes is not None:
        return max(1, processes) if _shareable(store.url) else 1
    if size < PARALLEL_MIN or not _shareable(store.url):
        return 1
    cpus = os.cpu_count() or 1
    # A range the database checks keeps two cores busy by itself (the hash pass here, the SQL in
    # the store's threads): a second process on two cores only adds its start and a pass over
    # the details table. checked_chunks starts nothing until its context is entered.
    return max(1, cpus // 2) if store.checked_chunks("", 0, 0) is not None else cpus


def _shareable(url: str) -> bool:
    """Whether another process can open the same store (an in-memory SQLite database it cannot)."""
    return not (url.startswith("memory://") or url in ("sqlite://", "sqlite:///:memory:"))


def _start_workers(
    url: str, tenant: str, size: int, ranges: Sequence[tuple[int, int]]
) -> list[subprocess.Popen[bytes]] | None:
    """A Python process per range; None when they cannot be started (then this process checks every range).

    Plain subprocesses rather than multiprocessing: they neither re-run the caller's main
    module (a script without an ``if __name__ == "__main__"`` guard would start itself
    again) nor fork a possibly threaded server holding SQLite connections. The store URL
    (it may carry a password) goes through stdin, not the command line.
    """
    if not ranges:
        return []
    paths = [_PACKAGE_ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for lo, hi in ranges:
            worker = subprocess.Popen(  # noqa: S603  (our own interpreter and a fixed command)
                [sys.executable, "-c", _WORKER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # a worker that fails is redone in-process, which reports why
                env=env,
            )
            workers.append(worker)
            if worker.stdin is not None:  # a few bytes: they fit the pipe, so no worker waits for another
                with worker.stdin:
                    worker.stdin.write(orjson.dumps([url, tenant, lo, hi, size]))
    except OSError:  # no interpreter to start, or a worker gone at once: stop the others
        _stop(workers)
        return None
    return workers


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.kill()
        _answer(worker)


def _answers(workers: list[subprocess.Popen[bytes]] | None, count: int) -> list[Outcome | None]:
    """Each worker's outcome once it has exited; None for a worker that failed (store unreachable, killed ...)."""
    if workers is None:
        return [None] * count
    outcomes: list[Outcome | None] = []
    for worker in workers:
        try:
            purged, bad, message = orjson.loads(_answer(worker))
            outcomes.append((int(purged), bad, str(message)))
        except (orjson.JSONDecodeError, ValueError, TypeError):
            outcomes.append(None)
    return outcomes


def _answer(worker: subprocess.Popen[bytes]) -> bytes:
    """What the worker printed, once it has exited; nothing if it failed."""
    with worker:  # closes the pipes and waits for the exit
        out = worker.stdout.read() if worker.stdout is not None else b""
    return out if worker.returncode == 0 else b""


_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
_WORKER = "from auditledger.verify import serve_range; serve_range()"


def serve_range() -> None:
    """A worker process: read ``[url, tenant, lo, hi, size]`` on stdin, print the range's outcome as JSON."""
    url, tenant, lo, hi, size = orjson.loads(sys.stdin.buffer.read())
    store = open_store(url)
    try:
        outcome = _outcome(store, tenant, lo, hi, size)
    finally:
        store.close()
    sys.stdout.buffer.write(orjson.dumps(outcome))


def _outcome(store: Store, tenant: str, lo: int, hi: int, size: int) -> Outcome:
    try:
        return check_range(store, tenant, lo, hi, size), None, ""
    except VerificationError as exc:
        return 0, exc.seq, exc.message


def check_range(store: Store, tenant: str, start: int, end: int, head_size: int) -> int:
    """Check positions ``[start, end)``; return how many are purged, raise at the first bad one.

    Where the store runs the comparisons itself (``Store.checked_chunks``), this pass only
    re-hashes the bodies and checks the positions and dates, running a few chunks ahead of
    the database's verdicts, which are settled in order (so the first bad position wins). A
    chunk where anything differs is checked again by :func:`check_exact`, which names the
    first bad position or finds the alarm false; when the database cannot tell, or after a
    few false alarms, the rest of the range takes the exact check at once (each exact check
    of a chunk reads the tenant's details table through, as the whole range does).
    """
    checked = store.checked_chunks(tenant, start, end)
    if checked is None:
        return check_exact(store, tenant, start, end, head_size)
    purged = 0
    resume: int | None = None  # where the exact check takes over the rest of the range
    alarms = _FALSE_ALARMS
    with checked as chunks:
        for hashed in _ahead(chunks, _date_before(store, tenant, start)):
            checks = hashed.checks()  # asked for every chunk, in order, even one already known to be bad
            if (
                hashed.ok
                and checks is not None
                and checks.agree
                and checks.dates == hashed.dates
                and (hashed.leaves is None or hashed.leaves == checks.leaves)
            ):
                purged += hashed.purged
            elif checks is None or not alarms:
                resume = hashed.start
                break
            else:
                alarms -= 1
                purged += check_exact(store, tenant, hashed.start, hashed.end, head_size)
    if resume is not None:  # after the workers have stopped
        purged += check_exact(store, tenant, resume, end, head_size)
    return purged


# Chunks hashed before the oldest one's verdict is waited for (a million positions): the details
# check answers only once it has sorted the whole range, and hashing meanwhile keeps both cores busy.
_AHEAD = 200
_FALSE_ALARMS = 2  # chunks checked again alone before the exact check takes the rest at once


def _ahead(chunks: Iterator[CheckedChunk], last_date: int) -> Iterator[_Hashed]:
    """The chunks after their hash pass, each given out once ``_AHEAD`` more have been hashed (or at the end)."""
    pending: deque[_Hashed] = deque()
    for chunk in chunks:
        hashed = _hash_pass(chunk, last_date)
        last_date = hashed.last_date
        pending.append(hashed)
        if len(pending) > _AHEAD:
            yield pending.popleft()
    yield from pending


class _Hashed(NamedTuple):
    """One chunk after the hash pass: whether it checked out, and what to hold the verdict against."""

    start: int
    end: int
    checks: Callable[[], DatabaseChecks | None]
    ok: bool
    purged: int
    dates: bytes | None  # SHA-256 of the indexed dates as the database renders the hashed ones
    last_date: int
    leaves: bytes | None  # SHA-256 of the bodies' leaf hashes joined, where the leaves were not read


def _hash_pass(chunk: CheckedChunk, last_date: int) -> _Hashed:
    """Positions gap-free, every body hashing to its leaf, every event with a leaf, purges marked, dates growing."""
    if chunk.leaves is None:
        return _hash_full(chunk, last_date)
    leaves, events = chunk.leaves, chunk.events
    # seq is the leaves' key: as many as the range holds, first and last in place, is no gap
    ok = len(leaves) == chunk.end - chunk.start and (not leaves or leaves[-1][0] - leaves[0][0] == len(leaves) - 1)
    if ok and leaves and leaves[0][0] != chunk.start:
        ok = False
    sha256 = hashlib.sha256  # canonical.leaf_hash inlined: this is the hot loop
    leaf_prefix = canonical.LEAF_PREFIX
    dates: list[str] = []
    purged = 0
    try:
        if ok and len(events) == len(leaves):  # nothing purged: leaves and events pair up one to one
            for (seq, leaf, _), (stored, date, body) in zip(leaves, events, strict=True):
                if seq != stored or sha256(leaf_prefix + body).digest() != leaf or date <= last_date:
                    ok = False
                    break
                last_date = date
                dates.append(format_micros(date))
        elif ok:
            by_seq = {event[0]: event for event in events}
            for seq, leaf, was_purged in leaves:
                event = by_seq.pop(seq, None)
                if event is None:
                    if not was_purged:
                        ok = False
                        break
                    purged += 1
                    continue
                _, date, body = event
                if sha256(leaf_prefix + body).digest() != leaf or date <= last_date:
                    ok = False
                    break
                last_date = date
                dates.append(format_micros(date))
            ok = ok and not by_seq  # else events with no leaf
    except (TypeError, ValueError):  # a body stored as text, a date that is no integer ...
        ok = False
    if not ok:  # the exact check decides; if it passes, the chunk's last date is where the next goes on
        last_date = next((e[1] for e in reversed(events) if isinstance(e[1], int)), last_date)
    digest = sha256(('"' + '","'.join(dates) + '"').encode()).digest() if dates else None
    return _Hashed(chunk.start, chunk.end, chunk.checks, ok, purged, digest, last_date, None)


def _hash_full(chunk: CheckedChunk, last_date: int) -> _Hashed:
    """A chunk with an event at every position (as many as it holds, unique seqs), its leaves unread.

    The bodies' leaf hashes go into one digest, held against the digest of the stored leaves
    (``DatabaseChecks.leaves``, which also says that every position has a leaf of 32 bytes and
    an integer seq; the columns check says the same of the events' seqs), so that each body
    is paired with the leaf of its own position as when both are read.
    """
    events = chunk.events
    sha256 = hashlib.sha256
    prefixed = sha256(canonical.LEAF_PREFIX)  # copied for each body: cheaper than hashing prefix + body anew
    dates: list[str] = []
    hashes: list[bytes] = []
    try:
        for _, _, body in events:
            leaf = prefixed.copy()
            leaf.update(body)
            hashes.append(leaf.digest())
        stored = [event[1] for event in events]
        ok = stored[0] > last_date and all(map(operator.lt, stored, stored[1:]))
        if ok:
            dates = list(map(format_micros, stored))
            last_date = stored[-1]
    except (TypeError, ValueError):  # a body stored as text, a date that is no integer ...
        ok = False
    if not ok:  # the exact check decides; if it passes, the chunk's last date is where the next goes on
        last_date = next((e[1] for e in reversed(events) if isinstance(e[1], int)), last_date)
    digest = sha256(('"' + '","'.join(dates) + '"').encode()).digest() if dates else None
    leaves = sha256(b"".join(hashes)).digest()
    return _Hashed(chunk.start, chunk.end, chunk.checks, ok, 0, digest, last_date, leaves)


def check_exact(store: Store, tenant: str, start: int, end: int, head_size: int) -> int:
    """Check positions ``[start, end)`` one by one in Python; return how many are purged, raise at the first bad one."""
    last_date = _date_before(store, tenant, start)
    expected = start
    purged = 0
    sha256 = hashlib.sha256  # canonical.leaf_hash inlined: this is the hot loop
    leaf_prefix = canonical.LEAF_PREFIX
    loads = orjson.loads
    version = canonical.FORMAT_VERSION
    with closing(store.verify_chunks(tenant, start, end)) as chunks:
        for chunk in chunks:
            details = chunk.details
            for position in chunk.positions:
                seq, leaf, was_purged, id, date, rtype, action, atype, aid, aname, outcome, body = position
                if seq != expected:
                    raise _fail(tenant, f"position {expected} is missing (next stored is {seq})", expected)
                expected += 1
                if not leaf:
                    raise _fail(tenant, "an event is stored with no ledger leaf (inserted?)", seq)
                if body is None:
                    if not was_purged:
                        raise _fail(tenant, "the event was removed without a purge", seq)
                    if seq in details and was_purged != DETAILS_PENDING:
                        raise _fail(tenant, "the event was purged but its details rows were left behind", seq)
                    purged += 1
                    continue
                if type(body) is not bytes:
                    body = _as_bytes(body)
                if sha256(leaf_prefix + body).digest() != leaf:
                    raise _fail(tenant, "the stored event does not match its leaf hash", seq)
                try:
                    obj = loads(body)
                    actor = obj["actor"]
                    hashed = (obj["v"], obj["seq"], obj["tenant"], obj["id"], obj["date"], obj["resource_type"],
                              obj["action"], actor["type"], actor["id"], actor.get("name"), obj["outcome"],
                              obj["details"])  # fmt: skip
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                    hashed = None
                rows = details.get(seq)
                indexed = loads(rows[1]) if rows is not None else {}
                stored_date = format_micros(date) if type(date) is int else None  # a date that is no integer differs
                stored = (version, seq, tenant, id, stored_date, rtype, action, atype, aid, aname, outcome,
                          indexed)  # fmt: skip
                if hashed != stored or (rows is not None and rows[0] != len(indexed)):
                    raise _mismatch(tenant, position, body, leaf, rows)
                if date <= last_date:
                    raise _fail(tenant, "date goes backwards", seq)
                last_date = date
    if expected < end:
        raise _end_missing(store, tenant, expected, head_size)
    return purged


def _fail(tenant: str, problem: str, seq: int) -> VerificationError:
    return VerificationError(f"tenant {tenant!r}: {problem}", seq)


def _as_bytes(value: object) -> bytes:
    """Stored bytes; a text put there behind our back still hashes as its UTF-8 bytes."""
    return bytes(value) if isinstance(value, (bytearray, memoryview)) else str(value).encode("utf-8", "surrogatepass")


def _date_before(store: Store, tenant: str, seq: int) -> int:
    """The date of the last event stored before ``seq`` (-1 if none): dates must keep growing across ranges."""
    if seq == 0:
        return -1
    rows = store.query("SELECT date FROM events WHERE tenant = ? AND seq < ? ORDER BY seq DESC LIMIT 1", [tenant, seq])
    return int(rows[0][0]) if rows else -1


def _next_stored(store: Store, tenant: str, seq: int) -> int | None:
    found = [
        row[0]
        for table in ("leaves", "events")
        for row in store.query(f"SELECT min(seq) FROM {table} WHERE tenant = ? AND seq >= ?", [tenant, seq])
        if row[0] is not None
    ]
    return int(min(found)) if found else None


def _end_missing(store: Store, tenant: str, expected: int, head_size: int) -> VerificationError:
    """The positions from ``expected`` to the end of a range are not stored: a gap, or a short ledger."""
    following = _next_stored(store, tenant, expected)
    if following is not None:
        return _fail(tenant, f"position {expected} is missing (next stored is {following})", expected)
    return _fail(tenant, f"the head says {head_size} events but {expected} are stored", min(expected, head_size))


def _check_beyond_head(store: Store, tenant: str, size: int) -> None:
    """Nothing may be stored at or past the head: a forged or orphaned position is named, then the head."""
    top = [
        row[0]
        for table in ("leaves", "events")
        for row in store.query(f"SELECT max(seq) FROM {table} WHERE tenant = ? AND seq >= ?", [tenant, size])
        if row[0] is not None
    ]
    if top:
        stored = int(max(top)) + 1
        check_range(store, tenant, size, stored, size)
        raise _fail(tenant, f"the head says {size} events but {stored} are stored", size)


def _mismatch(
    tenant: str, position: tuple[Any, ...], body: bytes, leaf: bytes, rows: tuple[int, str] | None
) -> VerificationError:
    """Name what differs between the indexed columns and the hashed bytes (the slow path, once)."""
    seq = position[0]
    details: dict[str, str] = orjson.loads(rows[1]) if rows is not None else {}
    if rows is not None and rows[0] != len(details):
        return _fail(tenant, f"indexed details hold {rows[0]} rows for {len(details)} keys (a key stored twice)", seq)
    try:
        event = canonical.decode(body, leaf)
    except VerificationError as exc:
        return _fail(tenant, exc.message, seq)
    id, date, rtype, action, atype, aid, aname, outcome = position[3:11]
    row = Row(id, tenant, seq, date, rtype, action, atype, aid, aname, outcome, None, body, leaf, details)
    return _fail(tenant, _row_mismatch(row, event, tenant, seq) or "the hashed event is not a valid v1 event", seq)


def _row_mismatch(row: Row, event: Event, tenant: str, seq: int) -> str | None:
    """What differs between the indexed columns and the hashed bytes (search would lie)."""
    checks = (
        ("seq", event.seq, seq),
        ("tenant", event.tenant, tenant),
        ("id", event.id, row.id),
        ("date", to_micros(event.date), row.date),
        ("resource_type", event.resource_type, row.resource_type),
        ("action", event.action, row.action),
        ("actor.type", str(event.actor.type), row.actor_type),
        ("actor.id", event.actor.id, row.actor_id),
        ("actor.name", event.actor.name, row.actor_name),
        ("outcome", str(event.outcome), row.outcome),
        ("details", dict(event.details), dict(row.details)),
    )
    for name, hashed, stored in checks:
        if hashed != stored:
            return f"indexed {name} {str(stored)[:80]!r} differs from the hashed event's {str(hashed)[:80]!r}"
    return None
