"""One run's steps, each resumable from the state the store holds:

    queued     -> acknowledge on the issue, apply the 50% rule
    preparing  -> worktree from the warm mirror
    running    -> the agent in its sandbox, then the pre-push gates (failures go back to it)
    pushing    -> commit on the host, conflict check, push as the bot, find-or-create the PR
    gating     -> wait for the forge's CI on the exact head SHA
    reviewing  -> the independent AI reviewer
    succeeded | failed | cancelled -> PR ready or failure explained; container and worktree gone

A kill, wherever it arrives, sets the run's cancel event; every wait in here watches it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gates.checks import command_result
from gates.choose import YOLO_LABEL, decide_yolo
from gates.diff import parse_unified_diff
from gates.model import Diff, GateResult, GatesError
from gates.profiles import REPO_CONFIG as REPO_GATES
from gates.profiles import GatesConfig, Profile
from gates.profiles import parse_config as parse_gates
from gates.run import check_diff
from gates.secrets import redact as redact_secrets
from runner import review
from runner.agent.base import Agent, Task, load_instructions
from runner.agent.base import Comment as TaskComment
from runner.config import RepoConfig, Settings
from runner.continuation import Failure, failures_from_gates, render_continuation
from runner.controller import RunHandle, rules_for
from runner.forge.base import (
    CIState,
    Conflict,
    Forge,
    ForgeAuthError,
    ForgeError,
    NotFound,
    ReviewComment,
)
from runner.model import Budget, Lease, Run, RunState, Usage
from runner.policy import authorised, comments_for_agent, latest_addition
from runner.sandbox import spec_limits
from runner.sandbox.base import Sandbox, SandboxBackend, SandboxError, SandboxSpec
from runner.sizing import FORCE_LABEL
from runner.sizing import decide as size_issue
from runner.store.base import LeaseLost, StaleState, Store, StoreUnavailable

log = logging.getLogger("orchestrator.pipeline")

STATUS_MARKER = "orchestrator:status"
CI_POLL_S = 2.0
MAX_ATTEMPTS = 3  # environmental failures (engine, forge, disk) before a run fails
WARM_QUIET = 2.0  # seconds without a run taking a warm sandbox before refills start
# A forge that answers 429/5xx or cannot be reached is down, not broken: such an outage is
# waited out (retried each time the lease lapses) for this long before it starts to count
# against MAX_ATTEMPTS. Without it a 30-second outage used up all three attempts (each is a
# few retried requests plus one lease period) and failed runs that had nothing wrong.
FORGE_OUTAGE_S = 600.0


class Cancelled(Exception):
    """The run's cancel event fired: stop at once."""


class RunFailed(Exception):
    """The run cannot go on; the message is the reason shown on the issue."""


class Workspace(Protocol):
    """What the pipeline needs of ``workspace.Workspaces``."""

    def prepare(self, run_id: str, repo: str, issue: int, url: str, *, base_branch: str = ...,
                token: str | None = ..., fetch: bool = ..., fresh_after: float | None = ...
                ) -> Any: ...

    def commit(self, wt: Any, message: str | None = ...) -> str | None: ...

    def head(self, wt: Any) -> str: ...

    def diff(self, wt: Any) -> str: ...

    def changes(self, wt: Any) -> Diff: ...

    def conflicts(self, wt: Any, *, url: str | None = ..., token: str | None = ...
                  ) -> list[str]: ...

    def push(self, wt: Any, url: str, *, token: str | None = ..., force: bool = ...) -> str: ...

    def reset_to(self, wt: Any, sha: str) -> None: ...

    def open(self, run_id: str, repo: str, issue: int, *, base_branch: str = ...) -> Any: ...

    def remove(self, wt: Any) -> None: ...

    def remove_orphans(self, live_run_ids: Iterable[str]) -> list[str]: ...

    def fill_spare(self, repo: str, base_branch: str = ...) -> bool: ...

    def base_file(self, repo: str, url: str, base_branch: str, name: str, *,
                  token: str | None = ..., fresh_after: float | None = ...) -> str | None: ...

    def worktree_path(self, run_id: str) -> Path: ...

    def discard(self, run_id: str) -> None: ...


@dataclass
class Services:
    """The adapters a pipeline works through, wired by ``cli.py`` from the configuration."""

    settings: Settings
    store: Store
    forges: dict[str, Forge]
    tokens: dict[str, str]  # forge name -> token (never logged, never in a container)
    workspaces: Workspace
    sandboxes: SandboxBackend
    make_agent: Callable[[], Agent]
    gates: GatesConfig
    continuation_template: str
    review_client: Any = None  # an anthropic client for the reviewer; None: no AI review
    links: Callable[[Run], str] = field(default=lambda run: "")


class _StatusComment:
    """The run's status comment, written by a background thread so that no step waits on
    the forge for it; when updates pile up, only the latest text is written."""

    def __init__(self, write: Callable[[str], None], name: str) -> None:
        self._write = write
        self._pending: str | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=f"status-{name}", daemon=True)
        self._thread.start()

    def update(self, body: str) -> None:
        with self._cond:
            self._pending = body
            self._cond.notify()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending, then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                body, self._pending = self._pending, None
                if body is None:
                    return
            try:
                self._write(body)
            except Exception as exc:  # informational: a failed update must not stop the run
                log.warning("status comment not updated: %s", exc)


@dataclass
class _Ctx:
    """What one drive of one run carries between steps."""

    handle: RunHandle
    run: Run
    repo: RepoConfig
    forge: Forge
    token: str
    gates: GatesConfig
    profile: Profile
    skip_gates: bool
    yolo_note: str
    worktree: Any = None
    sandbox: Sandbox | None = None
    warm: bool = False  # the run took a sandbox started ahead of it
    feedback: str | None = None
    gate_results: list[GateResult] = field(default_factory=list)
    last_active: RunState = RunState.QUEUED  # for the checklist of a run that ended early
    status: _StatusComment | None = None
    comments: tuple[int, list[tuple[str, str]]] | None = None  # (iteration, writers' comments)

    @property
    def fence(self) -> int:
        return self.handle.lease.token


class Pipeline:
    """Drives claimed runs through their steps (the controller's ``RunDriver``)."""

    def __init__(self, services: Services) -> None:
        self.s = services
        self.settings = services.settings
        self.store = services.store
        self.last_warm_taken = 0.0  # monotonic time a run last took a warm sandbox

    # ------------------------------------------------------------ entry points

    def drive(self, handle: RunHandle) -> None:
        """Work on the run until it ends, is killed, or this process loses its lease."""
        run = self.store.get_run(handle.run_id)
        try:
            ctx = self._context(handle, run)
        except (KeyError, GatesError) as exc:  # the configuration changed under the run
            reason = (f"{run.repo} is no longer under `repos` in the configuration"
                      if isinstance(exc, KeyError) else str(exc))
            self.store.transition(run.id, run.state, RunState.FAILED, actor="runner",
                                  reason=reason, fence=handle.lease.token)
            return
        handle.on_kill(lambda: self._on_kill(ctx))
        try:
            while not ctx.run.terminal:
                self._check_cancel(ctx)
                self._step(ctx)
                if "outage_since" in ctx.run.extra and not ctx.run.terminal:
                    # A step went through: the forge answers again, a later outage is new.
                    self._update(ctx, extra={k: v for k, v in ctx.run.extra.items()
                                             if k != "outage_since"})
        except Cancelled:
            if handle.lease_lost:
                log.warning("run %s: lease lost; leaving it to its new owner", run.id)
                return
            self._cancelled(ctx)
        except LeaseLost:
            log.warning("run %s: lease lost; leaving it to its new owner", run.id)
            return
        except RunFailed as exc:
            self._fail(ctx, str(exc))
        except StoreUnavailable:
            raise  # nothing can be recorded now; retried when the lease lapses
        except Exception as exc:
            # Environmental (engine, forge, disk, git, reviewer) or a bug: retried (by whoever
            # claims the run once the lease lapses) a bounded number of times, then the run
            # fails with the reason. Every kind counts: a git error on a full disk used to
            # escape this clause and the run was retried forever, never failing.
            if self._outage_waited_out(ctx, exc):
                raise
            attempts = int(ctx.run.extra.get("attempts", 0)) + 1
            self.store.append_event(run.id, "error", {"error": str(exc), "attempt": attempts,
                                                      "state": str(ctx.run.state)})
            if attempts < MAX_ATTEMPTS:
                with contextlib.suppress(LeaseLost, StaleState):
                    self._update(ctx, extra={**ctx.run.extra, "attempts": attempts})
                raise
            self._fail(ctx, f"gave up after {attempts} attempts: {exc}")
        finally:
            if ctx.status is not None and not ctx.run.terminal:
                ctx.status.close()  # a run left for another owner or a retry
        if ctx.run.terminal:
            self._finish(ctx)

    def _outage_waited_out(self, ctx: _Ctx, exc: Exception) -> bool:
        """True when ``exc`` is the forge being down for less than FORGE_OUTAGE_S so far:
        audited and retried without using an attempt. The outage's start is kept in the run,
        so it is measured across lease lapses and owners."""
        if not _forge_outage(exc):
            return False
        now = time.time()
        since = float(ctx.run.extra.get("outage_since") or now)
        if now - since >= FORGE_OUTAGE_S:
            return False
        self.store.append_event(ctx.run.id, "error", {
            "error": str(exc), "state": str(ctx.run.state), "outage_s": round(now - since, 1),
            "note": "the forge is unavailable; waiting it out"})
        if "outage_since" not in ctx.run.extra:
            with contextlib.suppress(LeaseLost, StaleState):
                self._update(ctx, extra={**ctx.run.extra, "outage_since": since})
        return True

    def cancel_unowned(self, run: Run, actor: str, reason: str, lease: Lease) -> None:
        """Cancel a run nobody works on (queued, or its owner died) and clean up."""
        handle = RunHandle(run_id=run.id, lease=lease)
        ctx = self._context(handle, run)
        kill = self.store.kill_request(run.id)
        handle.kill = kill
        try:
            self._cancelled(ctx, actor=actor, reason=reason)
            self._finish(ctx)
        finally:
            with contextlib.suppress(Exception):
                self.store.release(lease)

    def reject_kill(self, run: Run, comment_id: int, author: str) -> None:
        """Answer a ``/kill`` from someone without permission, once, and audit it."""
        forge = self.s.forges[self.settings.repo(run.repo).forge]
        forge.upsert_comment(
            run.repo, run.issue, f"orchestrator:rejected-kill:{comment_id}",
            f"@{author}: only users with {self.settings.limits.trigger_permission} permission "
            f"can stop this run; your `/kill` was ignored (and recorded).")
        self.store.append_event(run.id, "kill_rejected", {"author": author,
                                                          "comment": comment_id},
                                actor=author)
        rejected = [*run.extra.get("rejected_kills", []), comment_id]
        self.store.update_run(run.id, extra={**run.extra, "rejected_kills": rejected})

    def remove_orphans(self, live_run_ids: Iterable[str]) -> None:
        """Containers and worktrees of no live run, left by a crash."""
        live = list(live_run_ids)
        with contextlib.suppress(SandboxError):
            for name in self.s.sandboxes.remove_orphans(live):
                log.info("removed orphan sandbox %s", name)
        for path in self.s.workspaces.remove_orphans(live):
            log.info("removed orphan worktree %s", path)

    # ------------------------------------------------------------ plumbing

    def _context(self, handle: RunHandle, run: Run) -> _Ctx:
        repo = self.settings.repo(run.repo)
        forge = self.s.forges[repo.forge]
        gates = self._gates_of(run)
        # Until PREPARING chooses it (the repository may define the profile it names), the
        # default stands in; nothing runs gates before then.
        profile = gates.profile(run.extra.get("profile", gates.default_profile))
        yolo = decide_yolo(run.extra.get("labels", ()), repo_yolo=repo.yolo,
                           allow_label=repo.allow_yolo_label, global_yolo=self.settings.yolo)
        ctx = _Ctx(handle=handle, run=run, repo=repo, forge=forge,
                   token=self.s.tokens.get(repo.forge, ""), gates=gates, profile=profile,
                   skip_gates=yolo.skip_gates, yolo_note=yolo.banner(), last_active=run.state)
        ctx.status = _StatusComment(lambda body: self._write_status(ctx, body), run.id)
        return ctx

    def _write_status(self, ctx: _Ctx, body: str) -> None:
        run = ctx.run
        with contextlib.suppress(LeaseLost):
            if not run.terminal:  # the terminal transition was fenced; its owner writes last
                self.store.check_fence(run.id, ctx.fence)
            ctx.forge.upsert_comment(run.repo, run.issue, STATUS_MARKER, body)

    def _check_cancel(self, ctx: _Ctx) -> None:
        if ctx.handle.cancel.is_set():
            raise Cancelled()

    def _wait(self, ctx: _Ctx, seconds: float) -> None:
        if ctx.handle.cancel.wait(seconds):
            raise Cancelled()

    def _move(self, ctx: _Ctx, target: RunState, reason: str = "", actor: str = "runner") -> None:
        self._check_cancel(ctx)
        ctx.run = self.store.transition(ctx.run.id, ctx.run.state, target, actor=actor,
                                        reason=reason, fence=ctx.fence)
        if not target.terminal:
            ctx.last_active = target
            self._status(ctx)

    def _update(self, ctx: _Ctx, **fields: Any) -> None:
        ctx.run = self.store.update_run(ctx.run.id, fence=ctx.fence, **fields)

    def _event(self, ctx: _Ctx, kind: str, data: dict[str, Any] | None = None,
               actor: str = "runner") -> None:
        self.store.append_event(ctx.run.id, kind, _redacted(data or {}), actor=actor)

    def _step(self, ctx: _Ctx) -> None:
        state = ctx.run.state
        if state is RunState.QUEUED:
            self._acknowledge(ctx)
        elif state is RunState.PREPARING:
            self._prepare(ctx)
        elif state is RunState.RUNNING:
            self._run_agent(ctx)
        elif state is RunState.PUSHING:
            self._push(ctx)
        elif state is RunState.GATING:
            self._gate(ctx)
        elif state is RunState.REVIEWING:
            self._review(ctx)

    # ------------------------------------------------------------ steps

    def _acknowledge(self, ctx: _Ctx) -> None:
        run, forge = ctx.run, ctx.forge
        self.store.check_fence(run.id, ctx.fence)
        # The comments (for sizing) are read while the labels are: one round trip, not two.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"comments-{run.id}") as pool:
            reading = pool.submit(self._writer_comments, ctx)
            # Read now, not taken from the trigger: the trigger read the issue before its label
            # events, so a label changed between the two reads (force added) would be missed.
            found = list(forge.get_issue(run.repo, run.issue).labels)
            comments = reading.result()
        labels = self._trusted_labels(ctx, found)
        self._update(ctx, extra={**run.extra, "issue_labels": found, "labels": labels})
        yolo = decide_yolo(labels, repo_yolo=ctx.repo.yolo, allow_label=ctx.repo.allow_yolo_label,
                           global_yolo=self.settings.yolo)
        ctx.skip_gates, ctx.yolo_note = yolo.skip_gates, yolo.banner()
        if yolo.skip_gates:
            self._event(ctx, "yolo", {"reason": yolo.reason, "note": "quality gates disabled"})
        threading.Thread(target=self._react, args=(forge, run), daemon=True,
                         name=f"react-{run.id}").start()
        sizing = size_issue(run.issue_body, [text for _, text in comments],
                            self.settings.agent.context_window, labels=labels)
        self._event(ctx, "sizing", {"reason": sizing.reason, "tokens": sizing.estimate.tokens})
        if not sizing.allowed:
            forge.upsert_comment(run.repo, run.issue, "orchestrator:too-large", sizing.comment)
            if sizing.label:
                forge.add_label(run.repo, run.issue, sizing.label)
            raise RunFailed("too large for one run (the 50% rule): " + sizing.reason)
        self._move(ctx, RunState.PREPARING)

    @staticmethod
    def _react(forge: Forge, run: Run) -> None:
        with contextlib.suppress(ForgeError):
            forge.add_reaction(run.repo, run.issue, "eyes")

    def _repo_gates(self, ctx: _Ctx) -> dict[str, str]:
        """The repository's own gate profiles (``.orchestrator/gates.yml`` on its base branch,
        where the agent cannot write), when it has them: they apply to the run, and the run
        keeps them (``extra``) so that a resumed run applies the same ones."""
        run = ctx.run
        name = REPO_GATES.as_posix()
        text = self.s.workspaces.base_file(
            run.repo, ctx.forge.clone_url(run.repo), ctx.repo.base_branch, name,
            token=ctx.token, fresh_after=self._fresh_after(run))
        if text is None:
            return {}
        source = f"{run.repo}@{ctx.repo.base_branch}:{name}"
        try:
            ctx.gates = parse_gates(text, source)
        except GatesError as exc:
            raise RunFailed(f"{exc} (fix it on {ctx.repo.base_branch}, then relabel)") from None
        self._event(ctx, "gates_config", {"source": source})
        return {"gates_yml": text, "gates_source": source}

    def _gates_of(self, run: Run) -> GatesConfig:
        """The gate profiles a run applies: its repository's, kept when it started, or the
        runner's (``gates_config``)."""
        if "gates_yml" in run.extra:
            return parse_gates(run.extra["gates_yml"], run.extra.get("gates_source", "gates.yml"))
        return self.s.gates

    def _profile_name(self, ctx: _Ctx, labels: list[str]) -> str:
        from gates.choose import choose_profile

        try:
            return choose_profile(labels, ctx.repo.gate_profile, ctx.gates.profiles).name
        except Exception as exc:
            raise RunFailed(str(exc)) from None

    def _trusted_labels(self, ctx: _Ctx, labels: list[str]) -> list[str]:
        """The issue's labels, without the privileged ones (force, YOLO, allow CI changes)
        unless someone with the required permission added them."""
        privileged = {FORCE_LABEL, YOLO_LABEL, ctx.gates.allow_ci_changes_label}
        privileged = {p.lower() for p in privileged}
        if not any(label.lower() in privileged for label in labels):
            return labels
        events = ctx.forge.label_events(ctx.run.repo, ctx.run.issue)
        trusted = []
        for label in labels:
            if label.lower() in privileged:
                added = latest_addition(events, label)
                if added is None or not authorised(
                        ctx.forge.permission(ctx.run.repo, added.actor),
                        self.settings.limits.trigger_permission):
                    self._event(ctx, "label_ignored", {
                        "label": label, "added_by": added.actor if added else "unknown"})
                    continue
            trusted.append(label)
        return trusted

    def _writer_comments(self, ctx: _Ctx) -> list[tuple[str, str]]:
        """Comments by writers, read once per iteration (a maintainer may steer between)."""
        if ctx.comments is not None and ctx.comments[0] == max(ctx.run.iteration, 1):
            return ctx.comments[1]
        comments = ctx.forge.list_comments(ctx.run.repo, ctx.run.issue)
        authors = {c.author for c in comments}
        perms = {a: ctx.forge.permission(ctx.run.repo, a) for a in authors}
        found = comments_for_agent(comments, perms, rules_for(self.settings))
        ctx.comments = (max(ctx.run.iteration, 1), found)
        return found

    def _worktree(self, ctx: _Ctx) -> Any:
        if ctx.worktree is None:
            run = ctx.run
            started = time.monotonic()
            ctx.worktree = self.s.workspaces.prepare(
                run.id, run.repo, run.issue, ctx.forge.clone_url(run.repo),
                base_branch=ctx.repo.base_branch, token=ctx.token,
                fresh_after=self._fresh_after(run))
            self._event(ctx, "workspace", {"path": str(ctx.worktree.path),
                                           "resumed": bool(ctx.worktree.resumed),
                                           "seconds": round(time.monotonic() - started, 3)})
            # The next run of this repository takes a spare checked out now, off its path.
            threading.Thread(target=self._fill_spare, args=(run.repo, ctx.repo.base_branch),
                             daemon=True, name=f"spare-{run.id}").start()
        return ctx.worktree

    @staticmethod
    def _fresh_after(run: Run) -> float | None:
        """How fresh the mirror must be for the run's worktree. Until the run first pushes, a
        fetch begun after it was asked for will do (runs labelled together share one); after
        that, only a new fetch sees what an earlier owner of the run pushed."""
        never_pushed = run.state in (RunState.QUEUED, RunState.PREPARING, RunState.RUNNING) \
            and not run.head_sha
        return run.created_at if never_pushed and run.created_at else None

    def _fill_spare(self, repo: str, base_branch: str) -> None:
        try:
            self.s.workspaces.fill_spare(repo, base_branch)
        except Exception as exc:  # only an optimisation: the next run checks out afresh
            log.info("no spare worktree for %s: %s", repo, exc)

    def _prepare(self, ctx: _Ctx) -> None:
        if ctx.worktree is None:
            self._take_warm_sandbox(ctx)
        if "profile" not in ctx.run.extra:
            self._choose_profile(ctx)
        self._worktree(ctx)
        self._move(ctx, RunState.RUNNING)

    def _choose_profile(self, ctx: _Ctx) -> None:
        """The gate profiles the run applies (its repository's own, else the runner's) and
        its profile among them."""
        extra = {**ctx.run.extra, **self._repo_gates(ctx)}
        labels = list(extra.get("labels", []))
        allow = ctx.gates.allow_ci_changes_label.lower()
        if allow != self.s.gates.allow_ci_changes_label.lower():
            # The repository names its own allow-CI-changes label: like the runner's, it
            # counts only when someone allowed to added it.
            named = [label for label in extra.get("issue_labels", labels)
                     if label.lower() == allow]
            labels = [label for label in labels if label.lower() != allow]
            labels += self._trusted_labels(ctx, named)
        extra.update(labels=labels, profile=self._profile_name(ctx, labels))
        self._update(ctx, extra=extra)
        ctx.profile = ctx.gates.profile(extra["profile"])

    def _spec(self, run_id: str, repo: str, issue: int, worktree: Path) -> SandboxSpec:
        return SandboxSpec(run_id=run_id, repo=repo, issue=issue, worktree=worktree,
                           **spec_limits(self.settings))  # type: ignore[arg-type]

    def _take_warm_sandbox(self, ctx: _Ctx) -> None:
        """A new run takes a sandbox started ahead of time; its worktree is then checked out
        into the directory that sandbox already has mounted."""
        path = self.s.workspaces.worktree_path(ctx.run.id)
        if path.exists():
            return  # resumed: the run has its own directory (and perhaps container) already
        try:
            took = self.s.sandboxes.take_warm(self._spec(ctx.run.id, ctx.run.repo,
                                                         ctx.run.issue, path))
        except Exception as exc:  # only a head start: the run starts its own container
            log.info("run %s: no warm sandbox (%s)", ctx.run.id, exc)
            return
        if took:
            ctx.warm = True
            self.last_warm_taken = time.monotonic()

    @property
    def warm_target(self) -> int:
        """How many warm sandboxes this process keeps (``sandbox.warm``)."""
        count = self.settings.sandbox.warm
        return self.settings.limits.max_concurrent if count is None else count

    def warm_sandboxes(self) -> dict[str, int]:
        """Warm sandboxes waiting now, and how many this process keeps."""
        return {"warm_sandboxes": self.s.sandboxes.warm_ready(),
                "warm_target": self.warm_target}

    def keep_warm(self, stopping: threading.Event) -> None:
        """Keep ``sandbox.warm`` sandboxes started ahead of runs until ``stopping``, then
        remove those no run took. Refills wait for a quiet moment: starting containers while
        a burst of runs is being dispatched would slow every one of them."""
        count = self.warm_target
        if count == 0:
            return
        template = self._spec("warm", "", 0, Path(self.settings.data_dir))
        try:
            while not stopping.is_set():
                if time.monotonic() - self.last_warm_taken < WARM_QUIET:
                    stopping.wait(0.5)
                    continue
                try:
                    added = self.s.sandboxes.add_warm(template, count)
                except Exception as exc:  # engine away, disk full: runs start cold meanwhile
                    log.warning("cannot start a warm sandbox (%s); trying again in 60s", exc)
                    stopping.wait(60)
                    continue
                if not added:
                    stopping.wait(1.0)
        finally:
            try:
                self.s.sandboxes.drain_warm()
            except Exception as exc:  # left for the orphan sweep of the next start
                log.warning("cannot remove the warm sandboxes: %s", exc)

    def _sandbox(self, ctx: _Ctx) -> Sandbox:
        if ctx.sandbox is None:
            wt = self._worktree(ctx)
            spec = self._spec(ctx.run.id, ctx.run.repo, ctx.run.issue, Path(wt.path))
            ctx.sandbox = self.s.sandboxes.start(spec)
            self._event(ctx, "sandbox", {"name": ctx.sandbox.name, "warm": ctx.warm})
            # A kill that arrived while the container was starting must still stop it.
            if ctx.handle.cancel.is_set():
                self._stop_sandbox(ctx)
                raise Cancelled()
        return ctx.sandbox

    def _on_kill(self, ctx: _Ctx) -> None:
        """Runs on the bus listener's thread the moment a kill arrives: the container goes
        now (SIGTERM, a short grace, SIGKILL, removed), before the run records the kill. A
        lost lease is not a kill: the new owner may be using the container."""
        if ctx.handle.lease_lost or ctx.handle.kill is None:
            return
        sandbox = ctx.sandbox or self._find_sandbox(ctx.run.id)
        if sandbox is not None:
            with contextlib.suppress(SandboxError):
                sandbox.stop(grace=1.0)
                sandbox.remove()

    def _stop_sandbox(self, ctx: _Ctx) -> None:
        sandbox = ctx.sandbox or self.s.sandboxes.find(ctx.run.id)
        if sandbox is not None:
            sandbox.stop(grace=1.0)

    def _task(self, ctx: _Ctx) -> Task:
        run, wt = ctx.run, self._worktree(ctx)
        found = load_instructions(Path(wt.path))
        comments = tuple(TaskComment(author=author, body=text)
                         for author, text in self._writer_comments(ctx))
        return Task(title=run.issue_title, body=run.issue_body, repo=run.repo, issue=run.issue,
                    comments=comments, instructions=found[1] if found else None,
                    instructions_file=found[0] if found else None, feedback=ctx.feedback
                    or run.extra.get("feedback"), iteration=max(run.iteration, 1))

    def _run_agent(self, ctx: _Ctx) -> None:
        """The agent, then the pre-push gates; failures go back to the agent until the
        iterations run out."""
        if ctx.run.iteration == 0:
            self._update(ctx, iteration=1)
        while True:
            sandbox = self._sandbox(ctx)
            agent_cfg = self.settings.agent
            spent = Usage(tokens_in=ctx.run.tokens_in, tokens_out=ctx.run.tokens_out,
                          cost_usd=ctx.run.cost_usd)
            budget = Budget(max_turns=agent_cfg.max_turns,
                            max_tokens=max(agent_cfg.max_tokens - spent.tokens, 1),
                            max_cost_usd=max(agent_cfg.max_cost_usd - spent.cost_usd, 1e-6))
            task = self._task(ctx)
            self._status(ctx)
            outcome = self.s.make_agent().run(
                task, sandbox, budget, ctx.handle.cancel,
                lambda kind, data: self._event(ctx, kind, data, actor="agent"))
            usage = outcome.usage
            self._update(ctx, cost_usd=ctx.run.cost_usd + usage.cost_usd,
                         tokens_in=ctx.run.tokens_in + usage.tokens_in + usage.cache_read
                         + usage.cache_write, tokens_out=ctx.run.tokens_out + usage.tokens_out)
            self._event(ctx, "agent_done", {"stop_reason": outcome.stop_reason,
                                            "summary": outcome.summary[:2000],
                                            "turns": outcome.turns, "error": outcome.error,
                                            "cost_usd": round(usage.cost_usd, 6)})
            if outcome.stop_reason == "cancelled":
                raise Cancelled()
            if not outcome.ok:
                raise RunFailed(f"the agent stopped: {outcome.stop_reason}"
                                + (f" ({outcome.error})" if outcome.error else ""))
            failures = self._pre_push(ctx, outcome.summary)
            if not failures:
                self._move(ctx, RunState.PUSHING)
                return
            self._next_iteration(ctx, failures, stay=True)

    def _pre_push(self, ctx: _Ctx, summary: str) -> list[Failure]:
        """Commit on the host, then the pre-push gates on the diff and in the sandbox.

        A failing commit is taken back (the files stay), so nothing failing is ever pushed.
        """
        wt = self._worktree(ctx)
        before = self.s.workspaces.head(wt)
        title = summary.strip().splitlines()[0][:72] if summary.strip() else ""
        message = f"{title or 'Work on'} (#{ctx.run.issue})\n\nCloses #{ctx.run.issue}"
        sha = self.s.workspaces.commit(wt, message)
        diff_text = self.s.workspaces.diff(wt)
        if sha is None and not diff_text.strip():
            return [Failure("gate", "changes", "the branch has no changes against the base "
                            "branch: nothing was done for the issue")]
        results = check_diff(self.s.workspaces.changes(wt), ctx.profile,
                             ctx.run.extra.get("labels", ()), ctx.gates)
        if not ctx.skip_gates:
            results += self._sandbox_gates(ctx)
        ctx.gate_results = results
        self._event(ctx, "gates", {"stage": "pre-push",
                                   "results": [r.to_dict() for r in results]})
        failed = [r for r in results if not r.passed]
        secrets_found = any(r.gate == "secrets" for r in failed)
        if ctx.skip_gates and not secrets_found:
            return []  # YOLO skips quality gates, never the secret scan
        if failed and sha is not None:
            self.s.workspaces.reset_to(wt, before)
        return failures_from_gates(failed)

    def _sandbox_gates(self, ctx: _Ctx) -> list[GateResult]:
        results = []
        sandbox = self._sandbox(ctx)
        for name, command in ctx.profile.fast_commands().items():
            started = time.monotonic()
            result = sandbox.exec(command.run, timeout=command.timeout)
            results.append(command_result(name, command,
                                          None if result.timed_out else result.exit_code,
                                          result.output, time.monotonic() - started))
        return results

    def _next_iteration(self, ctx: _Ctx, failures: list[Failure], *, stay: bool = False) -> None:
        """Give the failures to the agent as its next instruction, or fail when out of tries."""
        limit = self.settings.limits.max_iterations
        iteration = ctx.run.iteration + 1
        if iteration > limit:
            names = ", ".join(f"{f.source}:{f.name}" for f in failures)
            raise RunFailed(f"still failing after {limit} iteration(s): {names}")
        ctx.feedback = render_continuation(self.s.continuation_template, failures, iteration,
                                           limit)
        self._update(ctx, iteration=iteration, extra={**ctx.run.extra,
                                                      "feedback": ctx.feedback})
        self._event(ctx, "iteration", {"iteration": iteration,
                                       "failures": [f"{f.source}:{f.name}" for f in failures]})
        if not stay:
            self._move(ctx, RunState.RUNNING, reason=f"iteration {iteration}")
        else:
            self._status(ctx)

    def _push(self, ctx: _Ctx) -> None:
        run, forge = ctx.run, ctx.forge
        wt = self._worktree(ctx)
        url = forge.clone_url(run.repo)
        conflicts = self.s.workspaces.conflicts(wt, url=url, token=ctx.token)
        if conflicts:
            raise RunFailed(f"the branch conflicts with {ctx.repo.base_branch} in "
                            f"{', '.join(conflicts)}; resolve them by hand or relabel to retry")
        self.store.check_fence(run.id, ctx.fence)  # a stalled old owner must not push
        sha = self.s.workspaces.push(wt, url, token=ctx.token, force=True)
        self._event(ctx, "pushed", {"branch": run.branch, "sha": sha})
        self.store.check_fence(run.id, ctx.fence)
        pull = forge.find_or_create_pull(run.repo, run.branch, ctx.repo.base_branch,
                                         title=run.issue_title or f"Fix #{run.issue}",
                                         body=self._pr_body(ctx), draft=True)
        self._update(ctx, head_sha=sha, pr_number=pull.number, pr_url=pull.url)
        self._event(ctx, "pull_request", {"number": pull.number, "url": pull.url})
        self._move(ctx, RunState.GATING)

    def _pr_body(self, ctx: _Ctx, extra: str = "") -> str:
        run = ctx.run
        parts = [f"Closes #{run.issue}", ""]
        if ctx.yolo_note:
            parts += [ctx.yolo_note, ""]
        parts += [f"Opened by the orchestrator (run `{run.id}`) for the issue as "
                  f"@{run.trigger_actor} triggered it."]
        if extra:
            parts += ["", extra]
        return "\n".join(parts)

    def _gate(self, ctx: _Ctx) -> None:
        run = ctx.run
        if ctx.skip_gates:
            self._event(ctx, "gates", {"stage": "ci", "skipped": "quality gates disabled"})
            self._move(ctx, RunState.SUCCEEDED, reason="quality gates disabled (YOLO)")
            return
        required = list(ctx.repo.required_contexts or ctx.profile.ci_contexts)
        deadline = time.monotonic() + self.settings.limits.ci_timeout
        ci: CIState | None = None
        while time.monotonic() < deadline:
            ci = ctx.forge.ci_state(run.repo, run.head_sha)
            state = ci.required_state(required)
            if state in ("success", "failure"):
                break
            self._wait(ctx, CI_POLL_S)
        else:
            seen = ", ".join(f"{c.name}={c.state}" for c in ci.contexts) if ci else "none"
            raise RunFailed(f"CI did not finish on {run.head_sha[:12]} within "
                            f"{self.settings.limits.ci_timeout:.0f}s (seen: {seen or 'none'})")
        assert ci is not None
        self._event(ctx, "ci", {"sha": run.head_sha, "state": state,
                                "contexts": {c.name: c.state for c in ci.contexts}})
        if state == "failure":
            failures = [Failure("ci", c.name, c.description or c.state,
                                details=self._ci_log(c.url)) for c in ci.failing]
            self._next_iteration(ctx, failures)
            return
        wanted = ctx.profile.review.enabled and self.settings.review.enabled and \
            self.s.review_client is not None
        self._move(ctx, RunState.REVIEWING if wanted else RunState.SUCCEEDED,
                   reason="CI green")

    def _ci_log(self, url: str) -> str:
        """The tail of a failing context's log, when its URL serves text."""
        if not url.startswith(("http://", "https://")):
            return ""
        import httpx

        try:
            reply = httpx.get(url, timeout=10, follow_redirects=True)
        except httpx.HTTPError:
            return ""
        if reply.status_code != 200 or "text" not in reply.headers.get("content-type", "text"):
            return ""
        return reply.text[-4000:]

    def _review(self, ctx: _Ctx) -> None:
        run, forge = ctx.run, ctx.forge
        diff_text = self.s.workspaces.diff(self._worktree(ctx))
        # The stricter of the profile's threshold and the runner's.
        threshold = max(ctx.profile.review.threshold, self.settings.review.threshold)
        rv = review.review(
            review.ReviewInput(issue_title=run.issue_title, issue_body=run.issue_body,
                               diff=diff_text, gate_results=tuple(ctx.gate_results),
                               repo=run.repo, issue_number=run.issue),
            client=self.s.review_client, model=self.settings.review.model, threshold=threshold,
            max_diff_chars=self.settings.review.max_diff_chars)
        self._event(ctx, "review", {"verdict": rv.verdict, "confidence": rv.output.confidence,
                                    "summary": rv.output.summary[:2000],
                                    "findings": [f.model_dump() for f in rv.findings],
                                    "usage": rv.usage})
        tokens = rv.usage
        self._update(ctx, tokens_in=run.tokens_in + tokens.get("input_tokens", 0),
                     tokens_out=run.tokens_out + tokens.get("output_tokens", 0))
        self.store.check_fence(run.id, ctx.fence)
        if run.pr_number:
            rendered = review.render_review(
                rv, review.commentable_lines(parse_unified_diff(diff_text)))
            forge.post_review(run.repo, run.pr_number, rendered.body,
                              [ReviewComment(c["path"], c["line"], c["body"])
                               for c in rendered.comments], commit_sha=run.head_sha)
        status = review.status_for(rv)
        forge.set_status(run.repo, run.head_sha, status["context"],
                         "success" if rv.approved else "failure", status["description"])
        if rv.approved:
            self._move(ctx, RunState.SUCCEEDED, reason="CI green and AI review approves")
            return
        self._next_iteration(ctx, review.review_failures(rv))

    # ------------------------------------------------------------ endings

    def _fail(self, ctx: _Ctx, reason: str) -> None:
        try:
            ctx.run = self.store.transition(ctx.run.id, ctx.run.state, RunState.FAILED,
                                            actor="runner", reason=reason, fence=ctx.fence)
        except (StaleState, LeaseLost):
            return

    def _cancelled(self, ctx: _Ctx, actor: str | None = None, reason: str | None = None) -> None:
        kill = ctx.handle.kill or self.store.kill_request(ctx.run.id)
        actor = actor or (kill.actor if kill else "runner")
        reason = reason or (kill.reason if kill else "cancelled")
        state = ctx.run.state
        self._stop_sandbox(ctx)
        ctx.run = self.store.get_run(ctx.run.id)
        if ctx.run.terminal:
            return
        ctx.run = self.store.transition(ctx.run.id, ctx.run.state, RunState.CANCELLED,
                                        actor=actor, reason=reason, fence=ctx.fence)
        self._event(ctx, "killed", {"actor": actor, "reason": reason, "state": str(state),
                                    "requested_at": kill.at if kill else None}, actor=actor)
        with contextlib.suppress(ForgeError):
            ctx.forge.remove_label(ctx.run.repo, ctx.run.issue, self.settings.labels.trigger)

    def _finish(self, ctx: _Ctx) -> None:
        """Whatever the ending: PR ready or left as draft, status comment final, cleanup."""
        run = ctx.run
        try:
            if run.state is RunState.SUCCEEDED and run.pr_number:
                ctx.forge.update_pull(run.repo, run.pr_number, draft=False,
                                      body=self._pr_body(ctx, self._cost_line(run)))
            self._status(ctx)
        except ForgeError as exc:
            log.warning("run %s: could not update the forge at the end: %s", run.id, exc)
        finally:
            if ctx.status is not None:
                ctx.status.close()
            self._cleanup(ctx)

    def _cleanup(self, ctx: _Ctx) -> None:
        sandbox = ctx.sandbox or self._find_sandbox(ctx.run.id)
        if sandbox is not None:
            with contextlib.suppress(SandboxError):
                sandbox.remove()
        wt = ctx.worktree or self.s.workspaces.open(ctx.run.id, ctx.run.repo, ctx.run.issue,
                                                   base_branch=ctx.repo.base_branch)
        if wt is not None:
            self.s.workspaces.remove(wt)
        else:
            self.s.workspaces.discard(ctx.run.id)
        self._event(ctx, "cleaned_up", {"sandbox": bool(sandbox), "worktree": wt is not None})

    def _find_sandbox(self, run_id: str) -> Sandbox | None:
        try:
            return self.s.sandboxes.find(run_id)
        except SandboxError:
            return None

    # ------------------------------------------------------------ the status comment

    @staticmethod
    def _cost_line(run: Run) -> str:
        return (f"Cost: ${run.cost_usd:.4f}, {run.tokens_in:,} tokens in, "
                f"{run.tokens_out:,} out.")

    def _status(self, ctx: _Ctx) -> None:
        """The one status comment on the issue, edited in place."""
        run = ctx.run
        order = [RunState.QUEUED, RunState.PREPARING, RunState.RUNNING, RunState.PUSHING,
                 RunState.GATING, RunState.REVIEWING, RunState.SUCCEEDED]
        labels = {RunState.QUEUED: "Acknowledged", RunState.PREPARING: "Workspace prepared",
                  RunState.RUNNING: f"Agent working (iteration {max(run.iteration, 1)} of "
                                    f"{self.settings.limits.max_iterations})",
                  RunState.PUSHING: "Pushed" + (f", PR #{run.pr_number}" if run.pr_number
                                                else ""),
                  RunState.GATING: "CI green" + (" (skipped: quality gates disabled)"
                                                 if ctx.skip_gates else ""),
                  RunState.REVIEWING: "AI review",
                  RunState.SUCCEEDED: "Done: PR ready for review"}
        reached = order.index(run.state if run.state in order else ctx.last_active)
        lines = [f"### orchestrator run `{run.id}`: **{run.state}**", ""]
        if ctx.yolo_note:
            lines += [ctx.yolo_note, ""]
        for i, state in enumerate(order):
            mark = "x" if i < reached or run.state is RunState.SUCCEEDED else " "
            lines.append(f"- [{mark}] {labels[state]}")
        lines.append("")
        if run.state is RunState.CANCELLED:
            lines.append(f"**Killed by @{run.killed_by}**: {run.reason}")
        elif run.state is RunState.FAILED:
            lines.append(f"**Failed**: {run.reason}")
        if run.pr_url:
            lines.append(f"Pull request: {run.pr_url}")
        lines.append(self._cost_line(run))
        link = self.s.links(run)
        if link:
            lines.append(f"Live log: {link}")
        if ctx.status is not None:
            ctx.status.update("\n".join(lines))


def _forge_outage(exc: Exception) -> bool:
    """A forge error that says "try again later": rate limited (429), a 5xx after the
    adapter's own retries, or unreachable (no status). Not 404, auth or conflicts."""
    if not isinstance(exc, ForgeError) or isinstance(exc, NotFound | ForgeAuthError | Conflict):
        return False
    return exc.status is None or exc.status == 429 or exc.status >= 500


def _redacted(value: Any) -> Any:
    """Audit data with every credential-looking string hidden: what the agent types or
    prints may hold a secret it planted or found, and the audit log is shown on dashboards."""
    if isinstance(value, str):
        return redact_secrets(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value
