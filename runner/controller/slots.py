"""Worker slots: each claims the next runnable step under a lease, works it, lets go.

A slot holds a run only while one of its steps works; a run that waits gives its slot back.
The lease is renewed by a heartbeat; a kill reaches the run through its handle.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING

from runner.forge.retry import audit_waits, interrupt_on
from runner.model import KillRequest, Lease
from runner.run.handle import RunHandle
from runner.store.base import LeaseLost, StoreError

if TYPE_CHECKING:
    from runner.controller.core import Controller

log = logging.getLogger("orchestrator.controller")


class Slots:
    """This process's worker slots and the runs whose steps they work on now."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.settings = controller.settings
        self.store = controller.store
        self.driver = controller.driver
        self.worker_id = controller.worker_id
        self.stopping = controller.stopping
        self.clock = controller.clock
        self.handles: dict[str, RunHandle] = {}
        self._handles_lock = threading.Lock()
        self._wake = threading.Condition()

    @property
    def _ttl(self) -> float:
        return self.settings.limits.lease_ttl

    def owned(self) -> list[str]:
        """The runs whose steps this process works on now."""
        with self._handles_lock:
            return sorted(self.handles)

    def notify(self) -> None:
        """One idle slot looks for work: a claim per new or woken run, not a herd of them."""
        with self._wake:
            self._wake.notify()

    def notify_all(self) -> None:
        """Every idle slot looks for work (dispatch resumed, or stopping)."""
        with self._wake:
            self._wake.notify_all()

    def deliver_kill(self, kill: KillRequest) -> bool:
        """Stop the run now if a slot of this process works on it; True when one does."""
        with self._handles_lock:
            handle = self.handles.get(kill.run_id)
        if handle is None:
            return False
        log.info("run %s: kill by %s (%s)", kill.run_id, kill.actor, kill.reason)
        handle.trigger(kill)
        return True

    def work_loop(self) -> None:
        """One slot: claim the next step, work it, until the controller stops."""
        while not self.stopping.is_set():
            try:
                lease = self.store.claim(self.worker_id, self._ttl,
                                         repo_limit=self.settings.limits.per_repo)
            except StoreError as exc:
                log.warning("cannot claim work: %s", exc)
                lease = None
            if lease is None:
                with self._wake:
                    self._wake.wait(1.0)
                continue
            self.work_on(lease)

    def work_on(self, lease: Lease) -> bool:
        """Take the run's steps under ``lease``; True when it now waits."""
        handle = RunHandle(run_id=lease.run_id, lease=lease)
        with self._handles_lock:
            self.handles[lease.run_id] = handle
        with contextlib.suppress(StoreError):  # who worked on which step, under which fence
            self.store.append_event(lease.run_id, "claimed",
                                    {"worker": lease.worker, "fence": lease.token})
        try:
            kill = self.store.kill_request(lease.run_id)
        except StoreError:  # the store is away: drive() meets it too, and the lease lapses
            kill = None
        if kill is not None:
            handle.trigger(kill)
        beat = threading.Thread(target=self._heartbeat, args=(handle,), daemon=True,
                                name=f"orchestrator-lease-{lease.run_id}")
        beat.start()
        crashed = waiting = False
        try:
            # A kill ends a forge call's wait to retry; a rate-limit wait is audited.
            with interrupt_on(handle.cancel), audit_waits(
                    lambda data: self.store.append_event(lease.run_id, "forge.wait", data)):
                waiting = self.driver.drive(handle)
        except LeaseLost:
            log.warning("run %s: lease lost; another process owns it now", lease.run_id)
        # a step's bug must not kill the slot; the lease lapses and the run resumes
        except Exception as exc:  # noqa: BLE001
            crashed = True
            log.warning("run %s stopped on an error (%s: %s); it is retried when its lease "
                        "lapses", lease.run_id, type(exc).__name__, exc)
        finally:
            handle.released.set()  # its heartbeat stops now, not a period later
            with self._handles_lock:
                self.handles.pop(lease.run_id, None)
            if not crashed and not waiting:  # after a crash the lease lapses by itself
                with contextlib.suppress(StoreError):
                    self.store.release(handle.lease)
            if waiting and handle.kill is not None:
                # The kill came as the run began to wait: it has no owner to stop it now.
                try:
                    self.controller.cancel_unowned(handle.kill)
                except Exception as exc:  # the next look at the issue cancels it instead  # noqa: BLE001
                    log.warning("run %s: cannot cancel it here: %s", lease.run_id, exc)
                waiting = False
            if not waiting:  # the issue may want something else now; a waiting run's is
                try:          # looked at when its event comes
                    run = self.store.get_run(lease.run_id)
                    self.controller.enqueue(run.repo, run.issue)
                except StoreError:
                    pass
        return waiting

    def _heartbeat(self, handle: RunHandle) -> None:
        period = max(self._ttl / 3, 0.2)
        while not self.clock.wait(handle.released, period) and not self.stopping.is_set():
            try:
                handle.lease = self.store.renew(handle.lease, self._ttl)
            except LeaseLost:
                handle.lease_lost = True
                handle.trigger(None)
                return
            except StoreError as exc:
                log.warning("run %s: cannot renew lease: %s", handle.run_id, exc)

    def drive_in_foreground(self, run_id: str) -> bool:
        """Claim one run and work on it in this thread (``run``, ``handle-event``) to its end,
        waiting out its waits here. False if someone else holds it."""
        while not self.stopping.is_set():
            lease = self.store.claim_run(run_id, self.worker_id, self._ttl)
            if lease is None:
                return False
            if not self.work_on(lease):
                return True
            # No other process takes the next step here: wait for its time or a wake.
            while not self.stopping.is_set():
                run = self.store.get_run(run_id)
                if run.terminal or run.wake_at <= self.clock.now():
                    break
                with self._wake:
                    self._wake.wait(min(1.0, run.wake_at - self.clock.now()))
        return True
