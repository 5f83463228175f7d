"""The driver: maps a claimed run's state to its step, and a step's answer to what follows.

    claim -> context -> step(state) -> GoOn: the next step now, in the same claim
                                    -> Wait: container given back, lease released; the run
                                             waits in the store for an event or its time
                                    -> RunFailed / Cancelled: the ending, then cleanup

One module per state: ``queued``, ``preparing``, ``running``, ``pushing``, ``gating``,
``reviewing``; the endings are in ``ending``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace

from gates.choose import decide_yolo
from gates.model import GatesError
from runner.forge.base import Conflict, ForgeAuthError, ForgeError, NotFound
from runner.forge.retry import guarded
from runner.model import Lease, Run, RunState
from runner.run import (
    ending,
    gating,
    preparing,
    pushing,
    queued,
    reviewing,
    running,
)
from runner.run.context import Cancelled, RunContext, RunFailed, Services
from runner.run.handle import RunHandle
from runner.run.outcome import Outcome, Wait
from runner.run.status import STATUS_MARKER, StatusWriter
from runner.run.workdir import release_sandbox
from runner.sandbox.base import SandboxError
from runner.store.base import LeaseLost, RunNotFound, StaleState, StoreUnavailable

log = logging.getLogger("orchestrator.run")

STEPS: dict[RunState, Callable[[RunContext], Outcome]] = {
    RunState.QUEUED: queued.step,
    RunState.PREPARING: preparing.step,
    RunState.RUNNING: running.step,
    RunState.PUSHING: pushing.step,
    RunState.GATING: gating.step,
    RunState.REVIEWING: reviewing.step,
}
MAX_ATTEMPTS = 3  # environmental failures (engine, forge, disk) before a run fails
# A forge that answers 429/5xx or cannot be reached is down, not broken: the run waits such an
# outage out (holding nothing, looking again on a backoff) for this long before it starts to
# count against MAX_ATTEMPTS.
FORGE_OUTAGE_S = 600.0
KILL_GRACE_S = 0.5  # how long a killed step may take to stop before it is left behind


class Steps:
    """Takes claimed runs through their steps (the controller's ``RunDriver``)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = services.store
        self.settings = services.settings

    # ------------------------------------------------------------ entry points

    def drive(self, handle: RunHandle) -> bool:
        """Take the run's steps until it waits, ends, is killed, or this process loses its
        lease. True when the run now waits (owned by nobody)."""
        run = self.store.get_run(handle.run_id)
        try:
            ctx = self.context(handle, run)
        except (KeyError, GatesError) as exc:  # the configuration changed under the run
            reason = (f"{run.repo} is no longer under `repos` in the configuration"
                      if isinstance(exc, KeyError) else str(exc))
            self.store.transition(run.id, run.state, RunState.FAILED, actor="runner",
                                  reason=reason, fence=handle.lease.token)
            return False
        handle.on_kill(lambda: self._on_kill(ctx))
        try:
            if self._steps_unless_killed(ctx, run.wakes):
                return True
        except Cancelled:
            if handle.lease_lost:
                log.warning("run %s: lease lost; leaving it to its new owner", run.id)
                return False
            ending.cancelled(ctx)
        except LeaseLost:
            log.warning("run %s: lease lost; leaving it to its new owner", run.id)
            return False
        except RunFailed as exc:
            ending.fail(ctx, str(exc))
        except StoreUnavailable:
            raise  # nothing can be recorded now; retried when the lease lapses
        except Exception as exc:
            # Environmental (engine, forge, disk, git, reviewer) or a bug: retried (by whoever
            # claims the run once the lease lapses) a bounded number of times, then the run
            # fails with the reason.
            outage = self._outage_wait(ctx, exc)
            if outage is not None:
                self._park(ctx, outage, run.wakes)
                return True
            attempts = ctx.details.attempts + 1
            self.store.append_event(run.id, "error", {"error": str(exc), "attempt": attempts,
                                                      "state": str(ctx.run.state)})
            if attempts < MAX_ATTEMPTS:
                with contextlib.suppress(LeaseLost, StaleState):
                    ctx.note(attempts=attempts)
                raise
            ending.fail(ctx, f"gave up after {attempts} attempts: {exc}")
        finally:
            if not ctx.run.terminal:
                ctx.status.close()  # a run left waiting, for another owner or a retry
        if ctx.run.terminal:
            ending.finish(ctx)
        return False

    def _steps_unless_killed(self, ctx: RunContext, wakes: int) -> bool:
        """``_take_steps`` in a thread of its own, so that a kill lands even while a step is
        blocked in something the kill cannot cut short (a forge request up to its timeout):
        after KILL_GRACE_S the step is left behind, and whatever it would still write is
        refused by the fence and the cancel check before every forge write."""
        outcome: list[bool] = []
        failure: list[BaseException] = []
        over = threading.Event()

        def work() -> None:
            try:
                outcome.append(self._take_steps(ctx, wakes))
            except BaseException as exc:  # handed to the slot's thread below  # noqa: BLE001
                failure.append(exc)
            finally:
                over.set()

        ctx.handle.on_kill(over.set)
        # The slot's context (a kill ends a forge retry's wait; rate-limit waits are audited)
        # holds in the steps' thread too.
        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(work,), name=f"steps-{ctx.run.id}",
                                  daemon=True)
        worker.start()
        over.wait()
        worker.join(KILL_GRACE_S)
        if worker.is_alive():  # the kill came, and the step is still blocked
            log.warning("run %s: a step did not stop within %.1fs of the kill; left behind",
                        ctx.run.id, KILL_GRACE_S)
            raise Cancelled()
        if failure:
            raise failure[0]
        return outcome[0]

    def _take_steps(self, ctx: RunContext, wakes: int) -> bool:
        """The run's steps until it ends (False) or waits (True, parked)."""
        try:
            while not ctx.run.terminal:
                ctx.check_cancel()
                outcome = STEPS[ctx.run.state](ctx)
                if ctx.details.outage_since and not ctx.run.terminal:
                    ctx.note(outage_since=0.0)  # a step went through: a later outage is new
                if isinstance(outcome, Wait):
                    self._park(ctx, outcome, wakes)
                    return True
        except (Cancelled, LeaseLost, RunFailed, StoreUnavailable):
            raise
        except Exception as exc:
            if ctx.handle.cancel.is_set():
                # The kill (or the lost lease) landed mid-step: the git command, model call
                # or sandbox command it stopped failed because of it.
                raise Cancelled() from exc
            raise
        return False

    def cancel_unowned(self, run: Run, actor: str, reason: str, lease: Lease) -> None:
        """Cancel a run nobody works on (queued, waiting, or its owner died) and clean up."""
        handle = RunHandle(run_id=run.id, lease=lease, kill=self.store.kill_request(run.id))
        ctx = self.context(handle, run)
        try:
            ending.cancelled(ctx, actor=actor, reason=reason)
            ending.finish(ctx)
        finally:
            with contextlib.suppress(Exception):
                self.store.release(lease)

    def reject_kill(self, run: Run, comment_id: int, author: str) -> None:
        """Answer a ``/kill`` from someone without permission, once, and audit it."""
        forge = self.services.forges[self.settings.repo(run.repo).forge]
        forge.upsert_comment(
            run.repo, run.issue, f"orchestrator:rejected-kill:{comment_id}",
            f"@{author}: only users with {self.settings.limits.trigger_permission} permission "
            f"can stop this run; your `/kill` was ignored (and recorded).")
        self.store.append_event(run.id, "kill_rejected", {"author": author,
                                                          "comment": comment_id},
                                actor=author)
        details = run.details
        self.store.update_run(run.id, details=replace(
            details, rejected_kills=(*details.rejected_kills, comment_id)))

    def remove_orphans(self, live_run_ids: Iterable[str]) -> None:
        """Containers and worktrees of no live run, left by a crash."""
        live = list(live_run_ids)
        with contextlib.suppress(SandboxError):
            for name in self.services.sandboxes.remove_orphans(live):
                log.info("removed orphan sandbox %s", name)
        for path in self.services.workspaces.remove_orphans(live):
            log.info("removed orphan worktree %s", path)

    def remove_ended(self) -> list[str]:
        """Worktrees and containers on this machine of runs that have ended elsewhere (a run
        whose last steps another process took) or whose cleanup a crash cut short. Only runs
        the store knows as ended are touched, so this is safe beside runs starting now."""
        removed = []
        for info in self.services.workspaces.list_worktrees():
            try:
                run = self.store.get_run(info.run_id)
            except RunNotFound:
                continue  # not a run of this store
            if not run.terminal:
                continue
            try:
                base = self.settings.repo(run.repo).base_branch
            except KeyError:
                base = "main"
            with contextlib.suppress(SandboxError):
                box = self.services.sandboxes.find(run.id)
                if box is not None:
                    box.remove()
            worktree = self.services.workspaces.open(run.id, run.repo, run.issue,
                                                     base_branch=base)
            if worktree is not None:
                self.services.workspaces.remove(worktree)
            else:
                self.services.workspaces.discard(run.id)
            removed.append(run.id)
        return removed

    def keep_warm(self, stopping: threading.Event) -> None:
        """Keep sandboxes started ahead of runs until ``stopping`` is set."""
        if self.services.warm is not None:
            self.services.warm.run(stopping)

    def warm_sandboxes(self) -> dict[str, int]:
        """Warm sandboxes waiting now, and how many this process keeps."""
        if self.services.warm is None:
            return {"warm_sandboxes": 0, "warm_target": 0}
        return self.services.warm.status()

    # ------------------------------------------------------------ plumbing

    def context(self, handle: RunHandle, run: Run) -> RunContext:
        """What the run's steps work with while this claim lasts."""
        repo = self.settings.repo(run.repo)
        forge = self.services.forges[repo.forge]
        gates = preparing.gates_of(self.services, run)
        # Until PREPARING chooses it (the repository may define the profile it names), the
        # default stands in; nothing runs gates before then.
        profile = gates.profile(run.details.profile or gates.default_profile)
        yolo = decide_yolo(run.details.labels, repo_yolo=repo.yolo,
                           allow_label=repo.allow_yolo_label, global_yolo=self.settings.yolo)
        made: list[RunContext] = []
        status = StatusWriter(lambda body: _write_status(made[0], body), run.id)
        ctx = RunContext(services=self.services, handle=handle, run=run, repo=repo,
                         forge=forge,
                         gates=gates, profile=profile, skip_gates=yolo.skip_gates,
                         yolo_note=yolo.banner(), status=status, last_active=run.state)
        made.append(ctx)
        return ctx

    def _park(self, ctx: RunContext, wait: Wait, wakes: int) -> None:
        """The run waits: its container goes, its status is written, its lease released."""
        release_sandbox(ctx)
        ctx.status.close()
        ctx.event("waiting", {"state": str(ctx.run.state), "reason": wait.reason,
                              "seconds": round(max(wait.until - ctx.clock.now(), 0.0), 1)})
        if not self.store.park(ctx.run.id, wait.until, fence=ctx.fence, wakes=wakes):
            log.debug("run %s: woken while it parked; claimable now", ctx.run.id)

    def _outage_wait(self, ctx: RunContext, exc: Exception) -> Wait | None:
        """A wait when ``exc`` is the forge being down for less than FORGE_OUTAGE_S so far,
        audited; None otherwise. The outage's start is kept in the run, so it is measured
        across waits and owners."""
        if not _forge_outage(exc):
            return None
        now = ctx.clock.now()
        since = ctx.details.outage_since or now
        if now - since >= FORGE_OUTAGE_S:
            return None
        self.store.append_event(ctx.run.id, "error", {
            "error": str(exc), "state": str(ctx.run.state), "outage_s": round(now - since, 1),
            "note": "the forge is unavailable; waiting it out"})
        if not ctx.details.outage_since:
            with contextlib.suppress(LeaseLost, StaleState):
                ctx.note(outage_since=since)
        return Wait(now + min(max(5.0, (now - since) / 4), 60.0), "the forge is unavailable")

    def _on_kill(self, ctx: RunContext) -> None:
        """Runs on the bus listener's thread the moment a kill arrives: the container goes
        now (SIGTERM, a short grace, SIGKILL, removed), before the run records the kill. A
        lost lease is not a kill: the new owner may be using the container."""
        if ctx.handle.lease_lost or ctx.handle.kill is None:
            return
        box = ctx.sandbox or ctx.find_sandbox()
        if box is not None:
            with contextlib.suppress(SandboxError):
                box.stop(grace=1.0)
                box.remove()


def _write_status(ctx: RunContext, body: str) -> None:
    """Upsert the status comment, unless the run was killed or is owned elsewhere now: only
    the terminal text (written after the fenced final transition) follows a kill."""
    run = ctx.run

    def still_ours() -> None:  # before each attempt's write: a retry is fenced too
        if not ctx.run.terminal:
            if ctx.handle.cancel.is_set():
                raise Cancelled()
            ctx.store.check_fence(run.id, ctx.fence)

    try:
        still_ours()
        with guarded(still_ours):
            ctx.forge.upsert_comment(run.repo, run.issue, STATUS_MARKER, body)
    except (Cancelled, LeaseLost):
        return


def _forge_outage(exc: Exception) -> bool:
    """A forge error that says "try again later": rate limited (429), a 5xx after the
    adapter's own retries, or unreachable (no status). Not 404, auth or conflicts."""
    if not isinstance(exc, ForgeError) or isinstance(exc, NotFound | ForgeAuthError | Conflict):
        return False
    return exc.status is None or exc.status == 429 or exc.status >= 500
