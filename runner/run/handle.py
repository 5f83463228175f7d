"""What a process holds for a run while one of its steps works: the lease and a way to stop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from runner.model import KillRequest, Lease

log = logging.getLogger("orchestrator.run")


@dataclass
class RunHandle:
    """A claimed run: its lease, the event every wait in its steps watches, and who killed it."""

    run_id: str
    lease: Lease
    cancel: threading.Event = field(default_factory=threading.Event)
    kill: KillRequest | None = None
    lease_lost: bool = False
    released: threading.Event = field(default_factory=threading.Event)  # the claim is over
    _on_kill: list[Callable[[], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_kill(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (e.g. stop the container) as soon as a kill arrives."""
        with self._lock:
            fire = self.cancel.is_set()
            if not fire:
                self._on_kill.append(callback)
        if fire:
            callback()

    def trigger(self, kill: KillRequest | None) -> None:
        """Stop the run's work now: a kill (``kill`` says whose) or a lost lease (None)."""
        with self._lock:
            if kill is not None and self.kill is None:
                self.kill = kill
            if self.cancel.is_set():
                return
            self.cancel.set()
            callbacks, self._on_kill = self._on_kill, []
        # Each in a thread of its own: stopping a container takes a second or more, and the
        # caller (the bus listener) has the next run's kill to deliver.
        for callback in callbacks:
            threading.Thread(target=self._call, args=(callback,), daemon=True,
                             name=f"orchestrator-kill-{self.run_id}").start()

    def _call(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:  # a failed stop must not keep the others from running
            log.exception("kill callback for %s failed", self.run_id)
