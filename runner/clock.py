"""Time as the runner reads and waits on it: the system's, unless a test passes another.

Leases, deadlines (CI, a store out of reach, a forge outage), backoffs and the work queue's
delays read ``now()``/``monotonic()`` and wait with ``sleep()``/``wait()`` of the clock they
were given, so a test can move time forward (``FakeClock.advance``) instead of sleeping
through a lease's TTL or a backoff.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """Wall-clock and monotonic time, and the waits that go by them."""

    def now(self) -> float:
        """Seconds since the epoch (what leases, deadlines and audit events record)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for intervals within this process)."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` by this clock."""

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """``event.wait(timeout)`` with ``timeout`` measured by this clock: True when set."""


class SystemClock:
    """The machine's clock: ``time.time``, ``time.monotonic``, real waits."""

    def now(self) -> float:
        """``time.time()``."""
        return time.time()

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """``time.sleep``."""
        time.sleep(max(seconds, 0.0))

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """``event.wait(timeout)``."""
        return event.wait(max(timeout, 0.0))


SYSTEM_CLOCK: Clock = SystemClock()


class FakeClock:
    """The machine's clock plus an offset that ``advance`` moves forward, for tests.

    Time still passes as it does on the machine (threads that poll keep polling), and
    ``advance(s)`` makes ``s`` seconds pass at once: every ``sleep`` and ``wait`` whose time
    has come by this clock returns within a few milliseconds. Both clocks move together, so
    the forge emulator's timestamps (real time) stay earlier than the runner's after an
    advance: advance after the forge events a test depends on, not before.
    """

    POLL_S = 0.01  # how soon a wait notices an event set elsewhere or an advance

    def __init__(self) -> None:
        self._offset = 0.0
        self._changed = threading.Condition()
        self._waits = 0

    @property
    def waits(self) -> int:
        """How many sleeps and waits are in progress: a test moves time once the thread it
        means to wake waits (a wait begun after an advance counts from the advanced time)."""
        with self._changed:
            return self._waits

    def advance(self, seconds: float) -> None:
        """Make ``seconds`` pass now."""
        with self._changed:
            self._offset += seconds
            self._changed.notify_all()

    def now(self) -> float:
        """The machine's ``time.time()`` plus every advance so far."""
        return time.time() + self._offset

    def monotonic(self) -> float:
        """The machine's ``time.monotonic()`` plus every advance so far."""
        return time.monotonic() + self._offset

    def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed by this clock."""
        self.wait(threading.Event(), seconds)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """True as soon as ``event`` is set; False once ``timeout`` has passed by this clock."""
        deadline = self.monotonic() + timeout
        with self._changed:
            self._waits += 1
        try:
            while not event.is_set():
                remaining = deadline - self.monotonic()
                if remaining <= 0:
                    return False
                with self._changed:
                    self._changed.wait(min(remaining, self.POLL_S))
            return True
        finally:
            with self._changed:
                self._waits -= 1


def call_later(clock: Clock, delay: float, action: Callable[[], None], *,
               name: str = "orchestrator-timer") -> threading.Event:
    """Run ``action`` in a daemon thread once ``delay`` has passed by ``clock``; setting the
    returned event before then cancels it."""
    cancelled = threading.Event()

    def fire() -> None:
        if not clock.wait(cancelled, delay):
            action()

    threading.Thread(target=fire, name=name, daemon=True).start()
    return cancelled
