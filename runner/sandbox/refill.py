"""Keeps ``sandbox.warm`` sandboxes started ahead of the runs that will take them."""

from __future__ import annotations

import logging
import threading
import time

from runner.sandbox.base import SandboxSpec, WarmSandboxes

log = logging.getLogger("orchestrator.sandbox")

QUIET_S = 2.0  # seconds without a run taking a warm sandbox before refills start


class WarmRefill:
    """Refills the backend's warm sandboxes in a quiet moment: starting containers while a
    burst of runs is being dispatched would slow every one of them."""

    def __init__(self, pool: WarmSandboxes, template: SandboxSpec, count: int) -> None:
        self.pool = pool
        self.template = template
        self.count = count
        self._last_taken = 0.0  # monotonic time a run last took a warm sandbox

    def take(self, spec: SandboxSpec) -> bool:
        """Give run ``spec.run_id`` a warm sandbox if one matching ``spec`` waits (see
        ``WarmSandboxes.take``); a run that took one holds refills back until the burst of
        runs is over."""
        took = self.pool.take(spec)
        if took:
            self._last_taken = time.monotonic()
        return took

    def status(self) -> dict[str, int]:
        """Warm sandboxes waiting now, and how many this process keeps."""
        return {"warm_sandboxes": self.pool.ready(), "warm_target": self.count}

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
                    added = self.pool.add(self.template, self.count)
                except Exception as exc:  # engine away, disk full: runs start cold meanwhile  # noqa: BLE001
                    log.warning("cannot start a warm sandbox (%s); trying again in 60s", exc)
                    stopping.wait(60)
                    continue
                if not added:
                    stopping.wait(1.0)
        finally:
            try:
                self.pool.drain()
            except Exception as exc:  # left for the orphan sweep of the next start  # noqa: BLE001
                log.warning("cannot remove the warm sandboxes: %s", exc)
