"""What the two background workers share: the HTTP client's sender and the spool's drain.

Each keeps its newest failures in ``errors``, backs off between failed attempts
(exponentially, with jitter, cut short by ``close()``), and is closed at a normal
interpreter exit when nobody closed it, so that what it still holds is sent or placed.
"""

from __future__ import annotations

import atexit
import random
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol, TypeVar

from auditledger.errors import AuditLedgerError

KEEP_ERRORS = 100  # the newest background failures kept in ``errors``


def keep(errors: list[AuditLedgerError], exc: AuditLedgerError) -> None:
    """Append ``exc`` to ``errors``, keeping the newest ``KEEP_ERRORS``."""
    errors.append(exc)
    del errors[:-KEEP_ERRORS]


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before attempt ``attempt + 1``: ``base`` doubled per attempt up to ``cap``, half of it jitter."""
    return float(min(cap, base * (2**attempt)) * (0.5 + random.random() / 2))


def pause(ready: threading.Condition, closed: Callable[[], bool], seconds: float) -> None:
    """Sleep ``seconds`` on ``ready`` (taking its lock), or less once ``closed()`` is true and ``ready`` notified."""
    deadline = time.monotonic() + seconds
    with ready:
        while not closed() and (left := deadline - time.monotonic()) > 0:
            ready.wait(left)


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


def closed_at_exit(failed: Callable[[C, AuditLedgerError], None]) -> weakref.WeakSet[C]:
    """A set whose members still in it at a normal interpreter exit are closed then.

    Add each worker when it starts and discard it when it is closed; ``failed`` logs a
    close that raised (what it held is reported there, not lost silently).
    """
    members: weakref.WeakSet[C] = weakref.WeakSet()

    def close_all() -> None:
        for member in list(members):
            try:
                member.close()
            except AuditLedgerError as exc:
                failed(member, exc)

    atexit.register(close_all)
    return members
