"""The controller: the one main loop of ``orchestrator serve``.

Two halves share the store. Reconcile decides; workers do.

    webhook / poll / start-up
          |
          v
    queue(key) -> lock(key) -> observe (forge + store) -> plan -> execute -> requeue or forget
                                                                    |
                            Start: a queued run in the store -------+
                            Cancel: a kill request on the bus ------+
                                                                    v
    worker slots: claim(run) under a lease -> pipeline.drive(run) -> release
    bus listener: kill for a run this process owns -> stop its agent and container now
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from runner.config import Settings
from runner.decline import decline
from runner.forge.base import Forge, ForgeError, NotFound, Permission
from runner.model import ACTIVE, KillRequest, Lease, Run, branch_name
from runner.plan import Action, Cancel, Decline, IssueView, Nothing, RejectKill, Start, plan
from runner.policy import Rules, kill_command, task_text
from runner.store.base import LeaseLost, RunFinished, Store, StoreError
from runner.witness import Witnesses
from runner.workqueue import WorkQueue

log = logging.getLogger("orchestrator.controller")

_PERMISSION_TTL = 30.0
# Threads looking at issues. The queue never hands one key to two of them at once, so each
# issue is still observed and planned by one thread at a time; several issues labelled together
# no longer wait in line behind each other's forge requests (one thread made the 20th of 20
# wait for the 19 before it: ~2 s of the dispatch time under load; four, still up to 1.4 s).
RECONCILERS = 8


def issue_key(repo: str, issue: int) -> str:
    return f"{repo}#{issue}"


def rules_for(settings: Settings) -> Rules:
    """The policy the configuration sets: label names and the permission to act."""
    return Rules(trigger_label=settings.labels.trigger, kill_label=settings.labels.kill,
                 required_permission=settings.limits.trigger_permission)


def parse_key(key: str) -> tuple[str, int]:
    repo, _, number = key.rpartition("#")
    return repo, int(number)


@dataclass
class RunHandle:
    """What this process holds for a run it owns: its lease and the means to stop it."""

    run_id: str
    lease: Lease
    cancel: threading.Event = field(default_factory=threading.Event)
    kill: KillRequest | None = None
    lease_lost: bool = False
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
        with self._lock:
            if kill is not None and self.kill is None:
                self.kill = kill
            if self.cancel.is_set():
                return
            self.cancel.set()
            callbacks, self._on_kill = self._on_kill, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a failed stop must not keep the others from running
                log.exception("kill callback for %s failed", self.run_id)


class RunDriver(Protocol):
    """Drives one claimed run through its steps (``pipeline.Pipeline``)."""

    def drive(self, handle: RunHandle) -> None: ...

    def cancel_unowned(self, run: Run, actor: str, reason: str, lease: Lease) -> None:
        """Cancel a run nobody is working on, and clean up what it left."""

    def reject_kill(self, run: Run, comment_id: int, author: str) -> None: ...

    def remove_orphans(self, live_run_ids: Iterable[str]) -> None: ...

    def keep_warm(self, stopping: threading.Event) -> None:
        """Keep sandboxes started ahead of runs until ``stopping`` is set."""

    def warm_sandboxes(self) -> dict[str, int]:
        """``warm_sandboxes`` waiting now and ``warm_target``, for the health page."""


class Controller:
    """Reconciles issues toward what the forge asks for, and works on runs in worker slots."""

    def __init__(self, settings: Settings, store: Store, forges: dict[str, Forge],
                 driver: RunDriver, *, worker_id: str) -> None:
        self.settings = settings
        self.store = store
        self.forges = forges
        self.driver = driver
        self.worker_id = worker_id
        self.queue = WorkQueue()
        self.stopping = threading.Event()
        self.handles: dict[str, RunHandle] = {}
        self._handles_lock = threading.Lock()
        self._wake = threading.Condition()
        self._permissions: dict[tuple[str, str], tuple[float, Permission]] = {}
        self._threads: list[threading.Thread] = []
        self.rules = rules_for(settings)
        self.last_poll: float = 0.0
        self.witnesses = Witnesses()  # what signed deliveries showed of issue texts

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        """Start the worker slots, the bus listener and the poller; reconcile (in RECONCILERS
        threads, this one included) until stopped."""
        self.start_up()
        self._spawn("bus", self._listen)
        self._spawn("poller", self._poll_loop)
        self._spawn("warm", lambda: self.driver.keep_warm(self.stopping))
        for slot in range(self.settings.limits.max_concurrent):
            self._spawn(f"slot-{slot}", self._work_loop)
        for n in range(1, RECONCILERS):
            self._spawn(f"reconcile-{n}", self._reconcile_loop)
        self._reconcile_loop()

    def _reconcile_loop(self) -> None:
        while not self.stopping.is_set():
            key = self.queue.get(timeout=0.5)
            if key is None:
                continue
            try:
                self.reconcile(key)
            except (ForgeError, StoreError) as exc:
                log.warning("looking at %s failed (%s); trying again in 5s", key, exc)
                self.queue.add_after(key, 5.0)
            except Exception:
                log.exception("looking at %s failed; trying again in 30s", key)
                self.queue.add_after(key, 30.0)
            finally:
                self.queue.done(key)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work. Runs in flight stay resumable: their leases simply expire."""
        self.stopping.set()
        self.queue.close()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"orchestrator-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def enqueue(self, repo: str, issue: int) -> None:
        """Look at an issue again soon (a webhook, a poll, the API)."""
        self.queue.add(issue_key(repo, issue))

    # ------------------------------------------------------------ feeders

    def start_up(self) -> None:
        """Recover runs whose owner died, remove leftovers of no live run, then resync."""
        for run_id in self.store.recover_expired():
            log.info("run %s lost its owner; it will be resumed", run_id)
        live = [r.id for r in self.store.list_runs(states=ACTIVE, limit=100000)]
        self.driver.remove_orphans(live)
        self.resync()

    def resync(self) -> None:
        """Queue every issue that carries the trigger label and every issue with an active run."""
        self.last_poll = time.time()
        for repo in self.settings.repos:
            forge = self.forges.get(repo.forge)
            if forge is None:
                continue
            try:
                for issue in forge.list_issues(repo.name, self.rules.trigger_label):
                    self.enqueue(repo.name, issue.number)
            except ForgeError as exc:
                log.warning("cannot list issues of %s: %s", repo.name, exc)
        for run in self.store.list_runs(states=ACTIVE, limit=100000):
            self.enqueue(run.repo, run.issue)

    def _poll_loop(self) -> None:
        interval = self.settings.limits.poll_interval
        while not self.stopping.wait(interval):
            try:
                self.store.recover_expired()
                self.resync()
            except (ForgeError, StoreError) as exc:
                log.warning("resync failed: %s", exc)

    # ------------------------------------------------------------ reconcile

    def reconcile(self, key: str) -> Action:
        """Observe one issue, plan, execute the one action it asks for."""
        repo, number = parse_key(key)
        try:
            repo_config = self.settings.repo(repo)
        except KeyError:
            log.info("ignoring %s: repository not configured", key)
            return Nothing("repository not configured")
        forge = self.forges[repo_config.forge]
        run = self.store.latest_run(repo, number)
        view = self.observe(forge, repo, number, run)
        action = plan(view, run, self.rules)
        log.debug("%s: %s", key, action)
        if isinstance(action, Start):
            self._start(repo, number, action)
        elif isinstance(action, Cancel):
            self._cancel(action)
        elif isinstance(action, RejectKill):
            assert run is not None
            self.driver.reject_kill(run, action.comment_id, action.author)
            self.queue.add(key)  # there may be more to do for this issue
        elif isinstance(action, Decline):
            decline(self.store, forge, repo, number, action, worker=self.worker_id, ttl=self._ttl)
        return action

    def observe(self, forge: Forge, repo: str, number: int, run: Run | None) -> IssueView | None:
        """What the forge says of the issue now, with the permissions of everyone who matters."""
        try:
            issue = forge.get_issue(repo, number)
        except NotFound:
            return None
        active = run is not None and not run.terminal
        wanted = (self.rules.trigger_label, self.rules.kill_label)
        if not active and (issue.state != "open" or not issue.has_label(wanted[0])):
            return IssueView(issue=issue)  # nothing to start: spare the other requests
        events = tuple(e for e in forge.label_events(repo, number)
                       if e.label.lower() in {w.lower() for w in wanted})
        comments: tuple[Any, ...] = ()
        if active and run is not None:
            since = datetime.fromtimestamp(int(run.created_at), tz=UTC)  # forges: seconds
            comments = tuple(forge.list_comments(repo, number, since=since))
        edit, witnessed = (forge.last_text_edit(repo, number), self.witnesses.of(repo, number)) \
            if not active else (None, ())
        actors = {e.actor for e in events} | {c.author for c in comments
                                              if kill_command(c.body) is not None}
        actors |= {w.actor for w in witnessed}
        actors |= {who for who in (edit.editor, edit.title_editor) if who} if edit else set()
        permissions = {actor: self._permission(forge, repo, actor) for actor in actors}
        return IssueView(issue=issue, label_events=events, comments=comments,
                         permissions=permissions, text_edit=edit, witnessed=witnessed)

    def _permission(self, forge: Forge, repo: str, user: str) -> Permission:
        cached = self._permissions.get((repo, user))
        if cached and cached[0] > time.monotonic():
            return cached[1]
        try:
            permission = forge.permission(repo, user)
        except NotFound:
            permission = "none"
        self._permissions[(repo, user)] = (time.monotonic() + _PERMISSION_TTL, permission)
        return permission

    def _start(self, repo: str, number: int, action: Start) -> None:
        run, created = self.store.create_run(
            repo, number, trigger_actor=action.actor, issue_title=action.title,
            issue_body=action.body, issue_hash=action.text_hash, branch=branch_name(number),
            extra={"trigger_at": action.trigger_at, "trigger_count": action.trigger_count})
        if created:
            log.info("run %s queued for %s#%s (labelled by %s)", run.id, repo, number,
                     action.actor)
        self._notify_workers()

    def _cancel(self, action: Cancel) -> None:
        kill = self.store.kill_request(action.run_id)
        if kill is None:  # repeated looks at a killed issue must not repeat the kill
            try:
                kill = self.store.request_kill(action.run_id, actor=action.actor,
                                               reason=action.reason)
            except RunFinished:
                return
        self._deliver_kill(kill)
        lease = self.store.claim_run(action.run_id, self.worker_id, self._ttl)
        if lease is not None:  # nobody owns it: cancel it here and now
            run = self.store.get_run(action.run_id)
            self.driver.cancel_unowned(run, action.actor, action.reason, lease)

    # ------------------------------------------------------------ workers

    @property
    def _ttl(self) -> float:
        return self.settings.limits.lease_ttl

    def _notify_workers(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def _work_loop(self) -> None:
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
            self._work_on(lease)

    def _work_on(self, lease: Lease) -> None:
        handle = RunHandle(run_id=lease.run_id, lease=lease)
        with self._handles_lock:
            self.handles[lease.run_id] = handle
        try:
            kill = self.store.kill_request(lease.run_id)
        except StoreError:  # the store is away: drive() meets it too, and the lease lapses
            kill = None
        if kill is not None:
            handle.trigger(kill)
        beat = threading.Thread(target=self._heartbeat, args=(handle,), daemon=True,
                                name=f"orchestrator-lease-{lease.run_id}")
        beat.start()
        crashed = False
        try:
            self.driver.drive(handle)
        except LeaseLost:
            log.warning("run %s: lease lost; another process owns it now", lease.run_id)
        except Exception as exc:
            crashed = True
            log.warning("run %s stopped on an error (%s: %s); it is retried when its lease "
                        "lapses", lease.run_id, type(exc).__name__, exc)
        finally:
            with self._handles_lock:
                self.handles.pop(lease.run_id, None)
            if not crashed:  # after a crash the lease lapses by itself: a backoff for free
                with contextlib.suppress(StoreError):
                    self.store.release(handle.lease)
            try:
                run = self.store.get_run(lease.run_id)
                self.enqueue(run.repo, run.issue)  # the issue may want something else now
            except StoreError:
                pass

    def _heartbeat(self, handle: RunHandle) -> None:
        period = max(self._ttl / 3, 0.2)
        while not self.stopping.wait(period):
            with self._handles_lock:
                if self.handles.get(handle.run_id) is not handle:
                    return
            try:
                handle.lease = self.store.renew(handle.lease, self._ttl)
            except LeaseLost:
                handle.lease_lost = True
                handle.trigger(None)
                return
            except StoreError as exc:
                log.warning("run %s: cannot renew lease: %s", handle.run_id, exc)

    # ------------------------------------------------------------ the bus

    def _listen(self) -> None:
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
                for run_id in list(self.handles):
                    kill = self.store.kill_request(run_id)
                    if kill is not None:
                        self._deliver_kill(kill)
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
            except Exception as exc:
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
            self._deliver_kill(kill)
        elif kind in ("wake", "resume"):
            self._notify_workers()

    def _deliver_kill(self, kill: KillRequest) -> None:
        with self._handles_lock:
            handle = self.handles.get(kill.run_id)
        if handle is not None:
            log.info("run %s: kill by %s (%s)", kill.run_id, kill.actor, kill.reason)
            handle.trigger(kill)

    def dispatch(self, repo: str, issue: int, actor: str) -> Run:
        """Start a run without a label (the API, for other control planes); the existing
        active run if there is one."""
        forge = self.forges[self.settings.repo(repo).forge]
        found = forge.get_issue(repo, issue)
        title, body, digest = task_text(found.title, found.body)
        run, _ = self.store.create_run(repo, issue, trigger_actor=actor, issue_title=title,
                                       issue_body=body, issue_hash=digest,
                                       branch=branch_name(issue))
        self._notify_workers()
        return run

    # ------------------------------------------------------------ one run in the foreground

    def drive_in_foreground(self, run_id: str) -> bool:
        """Claim one run and work on it in this thread (``run``, ``handle-event``), with the
        bus listener running so kills from elsewhere reach it. False if someone else holds it."""
        if not any(t.name == "orchestrator-bus" for t in self._threads):
            self._spawn("bus", self._listen)
        lease = self.store.claim_run(run_id, self.worker_id, self._ttl)
        if lease is None:
            return False
        self._work_on(lease)
        return True

    def handle_one(self, repo: str, issue: int, *, trigger_event: bool | None,
                   kill_check: float = 5.0) -> str:
        """Handle one forge event in a CI job: look at the issue once; if that starts a run,
        work on it here to the end, looking at the issue again every ``kill_check`` seconds
        so a kill label, a ``/kill`` or an unlabel stops it.

        Each job may have a store of its own, so only the event that added the trigger label
        (``trigger_event``; None: read the issue's timeline to tell) may start a run: any
        other event (a comment, another label) would otherwise start a second one.
        """
        key = issue_key(repo, issue)
        if trigger_event is None:  # Forgejo's label_updated does not say which label
            forge = self.forges[self.settings.repo(repo).forge]
            events = forge.label_events(repo, issue)
            trigger_event = bool(events) and events[-1].action == "added" and \
                events[-1].label.lower() == self.rules.trigger_label.lower()
        if not trigger_event:
            if self.store.active_run(repo, issue) is not None:  # a store shared with others
                return f"{key}: {self.reconcile(key)}"
            return (f"{key}: this event starts nothing; the job working on the issue checks "
                    f"it for kill signals every {kill_check:g}s")
        action = self.reconcile(key)
        run = self.store.active_run(repo, issue)
        if run is None or not isinstance(action, Start):
            return f"{key}: {action}"

        def watch() -> None:
            while not self.stopping.wait(kill_check):
                with contextlib.suppress(ForgeError, StoreError):
                    self.reconcile(key)

        self._spawn("kill-check", watch)
        try:
            self.drive_in_foreground(run.id)
        finally:
            self.stopping.set()
        final = self.store.get_run(run.id)
        return f"{key}: run {final.id} {final.state} {final.reason} {final.pr_url}".strip()

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """Queue depth, slots in use, warm sandboxes, paused or not: for the health page and
        /healthz."""
        with self._handles_lock:
            owned = sorted(self.handles)
        return {"worker": self.worker_id, "queue": len(self.queue), "slots_in_use": len(owned),
                "slots": self.settings.limits.max_concurrent, "runs": owned,
                "paused": self.store.paused(), "last_poll": self.last_poll,
                **self.driver.warm_sandboxes()}

