"""The bus listener: kills and wakes published by any process sharing the store."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from runner.model import KillRequest
from runner.store.base import StoreError

if TYPE_CHECKING:
    from runner.controller.core import Controller

log = logging.getLogger("orchestrator.controller")


class BusListener:
    """Delivers kills to this process's slots and wakes a slot for runnable work."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.store = controller.store
        self.stopping = controller.stopping
        self.slots = controller.slots

    def listen(self) -> None:
        """Until the controller stops: subscribe, catch up on kills, deliver messages."""
        while not self.stopping.is_set():
            try:
                sub = self.store.subscribe()
            except StoreError as exc:
                log.warning("cannot subscribe to the store: %s; retrying", exc)
                self.stopping.wait(1.0)
                continue
            # Kills published while we were not subscribed (start-up, or the store was
            # away) are in the store: check our runs now that nothing more can be missed.
            # (This ran after a broken subscription, while the store was still away, and its
            # error ended this thread: no kill reached this process again.)
            try:
                for run_id in self.slots.owned():
                    kill = self.store.kill_request(run_id)
                    if kill is not None:
                        self.slots.deliver_kill(kill)
            except StoreError as exc:
                log.warning("cannot read kill requests: %s; resubscribing", exc)
                with contextlib.suppress(Exception):
                    sub.close()
                self.stopping.wait(1.0)
                continue
            try:
                while not self.stopping.is_set():
                    message = sub.get(timeout=0.5)
                    if message is not None:
                        self._on_message(message)
            # any break of the subscription resubscribes; the loop must live
            except Exception as exc:  # noqa: BLE001
                log.warning("bus subscription broke (%s); resubscribing", exc)
            finally:
                with contextlib.suppress(Exception):
                    sub.close()
            self.stopping.wait(0.5)  # the store may still be away: do not spin

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        if kind == "kill":
            kill = KillRequest(run_id=message["run"], actor=message.get("actor", ""),
                               reason=message.get("reason", ""), at=time.time())
            if not self.slots.deliver_kill(kill):
                # Not ours to stop: if nobody works on the run (it waits), cancel it, off
                # this thread so that the kills after it are not held up.
                threading.Thread(target=self._cancel_unowned, args=(kill,), daemon=True,
                                 name=f"orchestrator-kill-{kill.run_id}").start()
        elif kind == "wake":
            self.slots.notify()
        elif kind == "resume":
            self.slots.notify_all()

    def _cancel_unowned(self, kill: KillRequest) -> None:
        try:
            self.controller.cancel_unowned(kill)
        except Exception as exc:  # the next look at the issue cancels it instead  # noqa: BLE001
            log.warning("run %s: cannot cancel it here: %s", kill.run_id, exc)
