"""A queue of issue keys, not events: duplicates collapse, and a key is never worked on twice
at once (a key added while it is being worked on is worked on again afterwards)."""

from __future__ import annotations

import threading
import time
from collections import deque

from runner.clock import SYSTEM_CLOCK, Clock, call_later


def issue_key(repo: str, issue: int) -> str:
    """The queue's key of an issue: ``owner/name#12``."""
    return f"{repo}#{issue}"


def parse_key(key: str) -> tuple[str, int]:
    """The repository and issue number of a key."""
    repo, _, number = key.rpartition("#")
    return repo, int(number)


class WorkQueue:
    """Keys like ``owner/name#12`` waiting for the controller to look at them again."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._cond = threading.Condition()
        self._order: deque[str] = deque()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()  # added again while being processed
        self._timers: dict[str, threading.Event] = {}  # key -> cancels its delayed add
        self._closed = False

    def add(self, key: str) -> None:
        """Ask for ``key`` to be looked at; a no-op when it is already waiting."""
        with self._cond:
            if self._closed:
                return
            if key in self._processing:
                self._dirty.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._order.append(key)
                self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        """Look at ``key`` again in ``delay`` seconds (one pending timer per key)."""
        with self._cond:
            if self._closed or key in self._timers:
                return
            self._timers[key] = call_later(self.clock, delay, lambda: self._fire(key),
                                           name=f"orchestrator-requeue-{key}")

    def _fire(self, key: str) -> None:
        with self._cond:
            self._timers.pop(key, None)
        self.add(key)

    def get(self, timeout: float | None = None) -> str | None:
        """The next key to work on (marked as being processed), or None after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._order:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            key = self._order.popleft()
            self._queued.discard(key)
            self._processing.add(key)
            return key

    def done(self, key: str) -> None:
        """Finished with ``key``; it is queued again if it was added meanwhile."""
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self._queued.add(key)
                self._order.append(key)
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for cancel in self._timers.values():
                cancel.set()
            self._timers.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._order)
