"""Group commits made deterministic: the first call's write is held until the others have queued behind it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def queued_behind_a_held_write(
    calls: list[Callable[[], Any]], *, held: Callable[[], bool], queued: Callable[[], int], release: threading.Event
) -> list[Any]:
    """Run ``calls[0]`` until its write is held (``held()`` true), then the others until ``queued()``
    counts each of them; then ``release`` the write. Each call's result, or the exception it raised."""
    outcome: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            outcome[i] = calls[i]()
        except BaseException as exc:  # handed to the test
            outcome[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    threads[0].start()
    deadline = time.monotonic() + 10
    while not held() and time.monotonic() < deadline:
        time.sleep(0.001)
    for thread in threads[1:]:
        thread.start()
    while queued() < len(calls) - 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert queued() == len(calls) - 1, "the calls did not queue behind the held write"
    release.set()
    for thread in threads:
        thread.join(10)
    return outcome
