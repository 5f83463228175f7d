"""The Store protocol: runs, audit events, leases, kill requests, the cross-process bus.

Two implementations share one contract test suite: ``sqlite.py`` (one machine, the default)
and ``redis.py`` (many runner processes on many machines, Redis or Valkey).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from runner.model import ACTIVE, Event, KillRequest, Lease, Run, RunState


class StoreError(Exception):
    """The store cannot be used; the message says what to do."""


class StoreUnavailable(StoreError):
    """The store's server or file cannot be reached."""


class RunNotFound(StoreError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run {run_id!r} (list runs with `orchestrator runs`)")
        self.run_id = run_id


class StaleState(StoreError):
    """Compare-and-set failed: the run was not in the state the caller saw."""

    def __init__(self, run_id: str, expected: RunState, actual: RunState) -> None:
        super().__init__(f"run {run_id} is {actual}, not {expected}")
        self.expected, self.actual = expected, actual


class RunFinished(StoreError):
    """The run has already ended; it cannot be killed or changed."""

    def __init__(self, run: Run) -> None:
        super().__init__(f"run {run.id} already {run.state}; nothing to kill")
        self.run = run


class LeaseLost(StoreError):
    """Another worker holds the run now (or the lease expired): stop writing."""

    def __init__(self, run_id: str, token: int) -> None:
        super().__init__(f"run {run_id}: lease with fencing token {token} is no longer current")
        self.run_id, self.token = run_id, token


MARK_TTL = 2 * 86400.0  # seconds a ``mark_once`` key is kept


def new_run_id() -> str:
    return "r-" + secrets.token_hex(6)


# Messages on the bus are small dicts: {"kind": "kill"|"event"|"wake"|"pause"|"resume", ...}
BusMessage = dict[str, Any]


class Subscription(Protocol):
    def get(self, timeout: float) -> BusMessage | None:
        """The next message published by any process, or None after ``timeout`` seconds."""

    def close(self) -> None: ...


@runtime_checkable
class Store(Protocol):
    """Durable state shared by every runner process pointed at it."""

    # runs
    def create_run(self, repo: str, issue: int, **fields: Any) -> tuple[Run, bool]:
        """Create a queued run, or return the active one for that issue. True if created."""

    def get_run(self, run_id: str) -> Run:
        """The run; RunNotFound if there is none."""

    def active_run(self, repo: str, issue: int) -> Run | None:
        """The non-terminal run of an issue, if any."""

    def latest_run(self, repo: str, issue: int) -> Run | None:
        """The most recent run of an issue, finished or not."""

    def list_runs(self, *, states: Iterable[RunState] | None = None, repo: str | None = None,
                  limit: int = 100) -> list[Run]:
        """Runs, newest first."""

    def transition(self, run_id: str, expected: RunState, target: RunState, *, actor: str,
                   reason: str = "", fence: int | None = None) -> Run:
        """Move a run from ``expected`` to ``target`` and record the audit event, atomically.

        StaleState if it was not in ``expected``; LeaseLost if ``fence`` is not current.
        """

    def update_run(self, run_id: str, *, fence: int | None = None, **fields: Any) -> Run:
        """Change non-state fields (PR number, cost, ...)."""

    def count_by_state(self) -> dict[RunState, int]:
        """How many runs are in each state (every state present, zero when none), counted by
        the store from an index: never by reading every run (the metrics scrape asks)."""

    def spend_by_repo(self, since: float) -> dict[str, float]:
        """The recorded model cost (``cost_usd``) of the runs created at or after ``since``
        (epoch seconds), summed per repository; repositories without such runs are absent."""

    def mark_once(self, key: str) -> bool:
        """True for the first process (ever) to mark ``key``, False for every later mark: a
        notice made once across every process sharing the store (kept about two days)."""

    # audit
    def append_event(self, run_id: str, kind: str, data: dict[str, Any] | None = None, *,
                     actor: str = "runner") -> Event:
        """Record an audit event (and publish it live); returns it with its sequence number."""

    def events(self, run_id: str, *, after: int = 0, limit: int = 100) -> list[Event]:
        """The run's events with ``seq > after``, oldest first."""

    # leases
    def claim(self, worker: str, ttl: float, *, repo_limit: int | None = None) -> Lease | None:
        """Lease the next unleased active run that is not waiting to ``worker``: highest
        priority first, then oldest; None when there is none or dispatch is paused.
        ``repo_limit`` caps leased runs per repository."""

    def claim_run(self, run_id: str, worker: str, ttl: float) -> Lease | None:
        """Lease one given run, if it is active and nobody holds it."""

    def park(self, run_id: str, until: float, *, fence: int, wakes: int) -> bool:
        """Give up the lease of a run that now waits: nobody claims it before ``until`` unless
        it is woken. ``wakes`` is the run's wake count its owner saw when it claimed: if a
        wake came since, the run is claimable at once and False is returned. LeaseLost if
        ``fence`` is not current."""

    def wake(self, run_id: str) -> Run:
        """An event concerns the run: claimable now if it waits, and counted, so that an
        owner about to park it sees the event. Publishes a ``wake`` on the bus."""

    def renew(self, lease: Lease, ttl: float) -> Lease:
        """Extend a lease; LeaseLost if it is no longer current."""

    def release(self, lease: Lease) -> None:
        """Give a lease up (safe if it is already gone)."""

    def check_fence(self, run_id: str, token: int) -> None:
        """LeaseLost unless ``token`` is the run's current lease token."""

    def current_lease(self, run_id: str) -> Lease | None: ...

    def recover_expired(self) -> list[str]:
        """Drop leases that expired; return their runs, now claimable again."""

    # kills and dispatch
    def request_kill(self, run_id: str, *, actor: str, reason: str) -> KillRequest:
        """Record and publish a kill; RunFinished if the run has ended."""

    def kill_request(self, run_id: str) -> KillRequest | None: ...

    def pause(self, *, actor: str, reason: str) -> None: ...

    def resume(self, *, actor: str) -> None: ...

    def paused(self) -> dict[str, Any] | None:
        """Who paused dispatch and why, or None when dispatch runs."""

    # bus
    def publish(self, message: BusMessage) -> None: ...

    def subscribe(self) -> Subscription:
        """Messages published from now on, by any process."""

    def ping(self) -> None:
        """StoreUnavailable unless the store answers."""

    def close(self) -> None: ...


def kill_all(store: Store, *, actor: str, reason: str) -> list[str]:
    """Pause dispatch, then request a kill of every active run; the ids asked to stop.

    Shared by ``orchestrator kill --all`` and ``POST /api/kill-all``.
    """
    store.pause(actor=actor, reason=reason)
    killed = []
    for run in store.list_runs(states=ACTIVE, limit=100_000):
        try:
            store.request_kill(run.id, actor=actor, reason=reason)
        except RunFinished:
            continue  # it finished meanwhile
        killed.append(run.id)
    return killed
