"""Keeps ``sandbox.warm`` sandboxes started ahead of the runs that will take them."""

from __future__ import annotations

import logging
import threading
import time

from runner.sandbox.base import SandboxBackend, SandboxSpec

log = logging.getLogger("orchestrator.sandbox")

QUIET_S = 2.0  # seconds without a run taking a warm sandbox before refills start


class WarmRefill:
    """Refills the backend's warm sandboxes in a quiet moment: starting containers while a
    burst of runs is being dispatched would slow every one of them."""

    def __init__(self, backend: SandboxBackend, template: SandboxSpec, count: int) -> None:
        self.backend = backend
        self.template = template
        self.count = count
        self._last_taken = 0.0  # monotonic time a run last took a warm sandbox

    def taken(self) -> None:
        """A run took one: hold refills back until the burst is over."""
        self._last_taken = time.monotonic()

    def status(self) -> dict[str, int]:
        """Warm sandboxes waiting now, and how many this process keeps."""
        return {"warm_sandboxes": self.backend.warm_ready(), "warm_target": self.count}

    def run(self, stopping: threading.Event) -> None:
        """Refill until ``stopping``, then remove those no run took."""
        if self.count == 0:
            return
        try:
            while not stopping.is_set():
                if time.monotonic() - self._last_taken < QUIET_S:
                    stopping.wait(0.5)
                    continue
                try:
                    added = self.backend.add_warm(self.template, self.count)
                except Exception as exc:  # engine away, disk full: runs start cold meanwhile
                    log.warning("cannot start a warm sandbox (%s); trying again in 60s", exc)
                    stopping.wait(60)
                    continue
                if not added:
                    stopping.wait(1.0)
        finally:
            try:
                self.backend.drain_warm()
            except Exception as exc:  # left for the orphan sweep of the next start
                log.warning("cannot remove the warm sandboxes: %s", exc)
