"""The controller: reconcile issues toward what the forge asks for; slots work on runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from runner.clock import SYSTEM_CLOCK, Clock
from runner.config import Settings
from runner.controller.bus import BusListener
from runner.controller.ci_job import handle_one
from runner.controller.pulls import (
    announce_bound,
    observe_pull,
    record_pull,
    retry_comments,
    start_follow_up,
    tell_kill_label,
    watched,
)
from runner.controller.slots import Slots
from runner.decline import decline
from runner.follow_up import AnnounceBound, FollowUp, Gather, KillLabelHolds, RecordPull
from runner.forge.base import Forge, ForgeError, NotFound, Permission, own_logins
from runner.forge.budget import poll_every
from runner.model import ACTIVE, KillRequest, Lease, Run, RunDetails
from runner.plan import (
    Action,
    Cancel,
    Decline,
    IssueView,
    Nothing,
    RejectKill,
    Start,
    already_triggered,
    plan,
)
from runner.policy import is_priority_label, kill_command
from runner.run.handle import RunHandle
from runner.run.readers import rules_for
from runner.run_creation import create_run, create_run_for_issue
from runner.store.base import RunFinished, Store, StoreError
from runner.witness import Witnesses
from runner.workqueue import WorkQueue, issue_key, parse_key

log = logging.getLogger("orchestrator.controller")

_PERMISSION_TTL = 30.0
# Threads looking at issues. The queue never hands one key to two of them at once, so each
# issue is still observed and planned by one thread at a time; several issues labelled together
# no longer wait in line behind each other's forge requests (one thread made the 20th of 20
# wait for the 19 before it: ~2 s of the dispatch time under load; four, still up to 1.4 s).
RECONCILERS = 8
RECONCILE_BACKOFF_MAX = 300.0
BASE_LOOK_AGAIN = 30.0  # seconds after a push to the base, a second look at its open PRs


class RunDriver(Protocol):
    """Takes one claimed run through its steps (``runner.run.driver.Steps``)."""

    def drive(self, handle: RunHandle) -> bool:
        """Work until the run waits (True), ends or is left to another owner (False)."""

    def cancel_unowned(self, run: Run, actor: str, reason: str, lease: Lease) -> None:
        """Cancel a run nobody is working on, and clean up what it left."""

    def reject_kill(self, run: Run, comment_id: int, author: str) -> None: ...

    def remove_orphans(self, live_run_ids: Iterable[str]) -> None: ...

    def remove_ended(self) -> list[str]:
        """Worktrees and containers here of runs the store knows as ended."""

    def keep_warm(self, stopping: threading.Event) -> None:
        """Keep sandboxes started ahead of runs until ``stopping`` is set."""

    def warm_sandboxes(self) -> dict[str, int]:
        """``warm_sandboxes`` waiting now and ``warm_target``, for the health page."""


class Controller:
    """Reconciles issues toward what the forge asks for, and works on runs in worker slots."""

    def __init__(self, settings: Settings, store: Store, forges: dict[str, Forge],
                 driver: RunDriver, *, worker_id: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.clock = clock  # leases' heartbeats, polls, backoffs and caches go by it
        self.store = store
        self.forges = forges
        self.driver = driver
        self.worker_id = worker_id
        self.queue = WorkQueue(clock)
        self.stopping = threading.Event()
        self.slots = Slots(self)
        self.bus = BusListener(self)
        self._permissions: dict[tuple[str, str], tuple[float, Permission]] = {}
        self._failures: dict[str, int] = {}  # issue key -> failed looks in a row
        self._threads: list[threading.Thread] = []
        self.rules = rules_for(settings, own_logins(forges.values()))
        self._own = self.rules.bot_logins | {(self.rules.bot_user or "").lower()} - {""}
        self.last_poll: float = 0.0
        self.witnesses = Witnesses()  # what signed deliveries showed of issue texts

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        """Start the worker slots, the bus listener and the poller; reconcile (in RECONCILERS
        threads, this one included) until stopped."""
        self.start_up()
        self.spawn("bus", self.bus.listen)
        self.spawn("poller", self._poll_loop)
        self.spawn("warm", lambda: self.driver.keep_warm(self.stopping))
        for slot in range(self.settings.limits.max_concurrent):
            self.spawn(f"slot-{slot}", self.slots.work_loop)
        for n in range(1, RECONCILERS):
            self.spawn(f"reconcile-{n}", self._reconcile_loop)
        self._reconcile_loop()

    def _reconcile_loop(self) -> None:
        while not self.stopping.is_set():
            key = self.queue.get(timeout=0.5)
            if key is None:
                continue
            try:
                self.reconcile(key)
                self._failures.pop(key, None)
            except (ForgeError, StoreError) as exc:
                delay = self._backoff(key)
                log.warning("looking at %s failed (%s); trying again in %.0fs", key, exc, delay)
                self.queue.add_after(key, delay)
            except Exception:
                delay = self._backoff(key, first=30.0)
                log.exception("looking at %s failed; trying again in %.0fs", key, delay)
                self.queue.add_after(key, delay)
            finally:
                self.queue.done(key)

    def _backoff(self, key: str, first: float = 5.0) -> float:
        """Seconds before looking at ``key`` again after its ``n``-th failure in a row:
        ``first`` doubling to RECONCILE_BACKOFF_MAX, so one broken issue costs little."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        return float(min(first * 2 ** (failures - 1), RECONCILE_BACKOFF_MAX))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work. Runs in flight stay resumable: their leases simply expire."""
        self.stopping.set()
        self.queue.close()
        self.slots.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def spawn(self, name: str, target: Callable[[], None]) -> None:
        """Run ``target`` in a daemon thread that ``stop`` waits for."""
        thread = threading.Thread(target=target, name=f"orchestrator-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def enqueue(self, repo: str, issue: int) -> None:
        """Look at an issue again soon (a webhook, a poll, the API)."""
        self.queue.add(issue_key(repo, issue))

    def wake_runs(self, repo: str, *, sha: str | None = None, branch: str | None = None,
                  pull: int | None = None) -> list[str]:
        """A CI or pull-request event: wake the active runs it concerns, found by head SHA,
        branch or PR number (never by taking a PR number for an issue). Their ids."""
        woken = []
        for run in self.store.list_runs(states=ACTIVE, repo=repo, limit=100000):
            if (sha and run.head_sha == sha) or (branch and run.branch == branch) or \
                    (pull is not None and run.pr_number == pull):
                self.store.wake(run.id)
                woken.append(run.id)
        if woken:
            self.slots.notify()
        return woken

    def enqueue_base(self, repo: str, branch: str) -> list[int]:
        """A push to ``branch``: when it is the base the runner's PRs target, look again at
        each issue whose latest run's PR is open (the PR may conflict now). Their numbers."""
        try:
            if branch != self.settings.repo(repo).base_branch:
                return []
        except KeyError:
            return []
        issues = [n for _, n in watched(self.store, self.clock.now(), repo, retries=False)]
        for number in issues:
            self.enqueue(repo, number)
            # GitHub computes ``mergeable`` in the background (null meanwhile): look once more.
            self.queue.add_after(issue_key(repo, number), BASE_LOOK_AGAIN)
        return issues

    def enqueue_pull(self, repo: str, pull: int) -> bool:
        """A review, a comment or a change on a pull request: look again at the issue whose
        run opened it (never at an issue of the PR's number). False when no run did."""
        for run in self.store.list_runs(repo=repo, limit=100000):
            if run.pr_number == pull:
                self.enqueue(run.repo, run.issue)
                return True
        return False

    # ------------------------------------------------------------ feeders

    def start_up(self) -> None:
        """Recover runs whose owner died, remove leftovers of no live run, then resync."""
        for run_id in self.store.recover_expired():
            log.info("run %s lost its owner; it will be resumed", run_id)
        live = [r.id for r in self.store.list_runs(states=ACTIVE, limit=100000)]
        self.driver.remove_orphans(live)
        # Events that came while no process listened are lost: waiting runs look again now.
        for run in self.store.list_runs(states=ACTIVE, limit=100000):
            if run.waiting:
                self.store.wake(run.id)
        self.resync()

    def resync(self) -> None:
        """Queue every issue that carries the trigger label, every issue with an active run,
        and every issue whose ended run can still be steered from the forge (its PR open, or
        a ``/retry`` possible): ``pulls.watched``. Unchanged, each costs conditional reads."""
        self.last_poll = self.clock.now()
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
        for repo_name, number in watched(self.store, self.clock.now()):
            self.enqueue(repo_name, number)

    def _poll_loop(self) -> None:
        while not self.clock.wait(self.stopping, poll_every(self.settings.limits.poll_interval,
                                                            self.forges.values())):
            try:
                self.store.recover_expired()
                self.resync()
            except (ForgeError, StoreError) as exc:
                log.warning("resync failed: %s", exc)
            try:
                for run_id in self.driver.remove_ended():
                    log.info("removed what ended run %s left on this machine", run_id)
            except Exception as exc:  # the next resync tries again  # noqa: BLE001
                log.warning("cannot remove what ended runs left: %s", exc)

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
        pull = None
        if view is not None:
            def permission(user: str) -> str:
                return self._permission(forge, repo, user)

            pull = observe_pull(forge, run, permission, self._own)
            found, permissions = retry_comments(forge, run, permission)
            if found:
                view = replace(view, comments=view.comments + found,
                               permissions={**view.permissions, **permissions})
        action = plan(view, run, self.rules, pull, self.clock.now())
        log.debug("%s: %s", key, action)
        if isinstance(action, Start):
            self._start(repo, number, action)
        elif isinstance(action, FollowUp):
            assert run is not None  # the plan answers FollowUp only for an existing run  # noqa: S101
            start_follow_up(self.store, run, action)
            self.slots.notify()
        elif isinstance(action, Gather):
            self.queue.add_after(key, max(action.seconds, 0.1))
        elif isinstance(action, RecordPull):
            record_pull(self.store, action)
        elif isinstance(action, AnnounceBound):
            assert run is not None  # the plan answers AnnounceBound only for an existing run  # noqa: S101
            announce_bound(self.store, forge, run, action)
        elif isinstance(action, KillLabelHolds):
            assert run is not None  # the plan answers it only for an ended run  # noqa: S101
            tell_kill_label(self.store, forge, run, action)
        elif isinstance(action, Cancel):
            self._cancel(action)
        elif isinstance(action, RejectKill):
            assert run is not None  # the plan answers RejectKill only for an active run  # noqa: S101
            self.driver.reject_kill(run, action.comment_id, action.author)
            self.queue.add(key)  # there may be more to do for this issue
        elif isinstance(action, Decline):
            decline(self.store, forge, repo, number, action, worker=self.worker_id,
                    ttl=self.settings.limits.lease_ttl)
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
                       if e.label.lower() in {w.lower() for w in wanted}
                       or (not active and is_priority_label(e.label)))
        comments: tuple[Any, ...] = ()
        if active and run is not None:
            since = datetime.fromtimestamp(int(run.created_at), tz=UTC)  # forges: seconds
            comments = tuple(forge.list_comments(repo, number, since=since))
        # Who edited the text matters only for a new run: an ended run's own trigger spares
        # the request (GitHub's GraphQL, never a free 304) on every later look.
        fresh = not active and (run is None or not already_triggered(run, events, self.rules))
        edit, witnessed = (forge.last_text_edit(repo, number), self.witnesses.of(repo, number)) \
            if fresh else (None, ())
        actors = {e.actor for e in events} | {c.author for c in comments
                                              if kill_command(c.body) is not None}
        actors |= {w.actor for w in witnessed} | ({edit.editor} if edit and edit.editor else set())
        permissions = {actor: self._permission(forge, repo, actor) for actor in actors}
        return IssueView(issue=issue, label_events=events, comments=comments,
                         permissions=permissions, text_edit=edit, witnessed=witnessed)

    def _permission(self, forge: Forge, repo: str, user: str) -> Permission:
        cached = self._permissions.get((repo, user))
        if cached and cached[0] > self.clock.monotonic():
            return cached[1]
        try:
            permission = forge.permission(repo, user)
        except NotFound:
            permission = "none"
        self._permissions[(repo, user)] = (self.clock.monotonic() + _PERMISSION_TTL, permission)
        return permission

    def _start(self, repo: str, number: int, action: Start) -> None:
        priority = action.priority or self.settings.repo(repo).priority
        run, created = create_run(
            self.store, repo, number, actor=action.actor, title=action.title, body=action.body,
            text_hash=action.text_hash, priority=priority,
            details=RunDetails(trigger_at=action.trigger_at, trigger_count=action.trigger_count))
        if created:
            log.info("run %s queued for %s#%s (labelled by %s)", run.id, repo, number,
                     action.actor)
        self.slots.notify()

    def _cancel(self, action: Cancel) -> None:
        kill = self.store.kill_request(action.run_id)
        if kill is None:  # repeated looks at a killed issue must not repeat the kill
            try:
                kill = self.store.request_kill(action.run_id, actor=action.actor,
                                               reason=action.reason)
            except RunFinished:
                return
        if not self.slots.deliver_kill(kill):
            self.cancel_unowned(kill)

    def cancel_unowned(self, kill: KillRequest) -> None:
        """Carry out ``kill`` here if no process works on its run (it waits for CI, it is
        queued, or its owner died): claim it and cancel it. A no-op when it is owned (its
        owner stops it) or ended."""
        lease = self.store.claim_run(kill.run_id, self.worker_id,
                                     self.settings.limits.lease_ttl)
        if lease is None:
            return
        run = self.store.get_run(kill.run_id)
        self.driver.cancel_unowned(run, kill.actor, kill.reason, lease)

    def dispatch(self, repo: str, issue: int, actor: str) -> Run:
        """Start a run without a label (the API, for other control planes); the existing
        active run if there is one."""
        forge = self.forges[self.settings.repo(repo).forge]
        run, _ = create_run_for_issue(self.store, forge, repo, issue, actor=actor,
                                      priority=self.settings.repo(repo).priority)
        self.slots.notify()
        return run

    # ------------------------------------------------------------ one run in the foreground

    def drive_in_foreground(self, run_id: str) -> bool:
        """Claim one run and work on it in this thread (``run``, ``handle-event``) to its end,
        with the bus listener running so kills from elsewhere reach it. False if someone else
        holds it."""
        if not any(t.name == "orchestrator-bus" for t in self._threads):
            self.spawn("bus", self.bus.listen)
        return self.slots.drive_in_foreground(run_id)

    def handle_one(self, repo: str, issue: int, *, trigger_event: bool | None,
                   kill_check: float = 5.0) -> str:
        """One forge event in a CI job (see ``runner.controller.ci_job``)."""
        return handle_one(self, repo, issue, trigger_event=trigger_event,
                          kill_check=kill_check)

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """Queue depth, slots in use, warm sandboxes, paused or not: for the health page and
        /healthz."""
        owned = self.slots.owned()
        return {"worker": self.worker_id, "queue": len(self.queue), "slots_in_use": len(owned),
                "slots": self.settings.limits.max_concurrent, "runs": owned,
                "paused": self.store.paused(), "last_poll": self.last_poll,
                **self.driver.warm_sandboxes()}

