"""Every ending of a run: failed, cancelled (a kill), succeeded; then the cleanup.

After a kill nothing more is written to the forge for the run but the kill's own record:
the status comment saying who killed it, and the trigger label taken off.
"""

from __future__ import annotations

import contextlib
import logging

from runner.forge.base import ForgeError
from runner.forge.retry import uninterrupted
from runner.model import RunState
from runner.run.context import RunContext
from runner.run.pushing import pr_body
from runner.run.replies import answer
from runner.run.status import cost_line
from runner.sandbox.base import SandboxError
from runner.store.base import LeaseLost, StaleState

log = logging.getLogger("orchestrator.run")


def fail(ctx: RunContext, reason: str) -> None:
    """The run fails with ``reason`` (unless it ended meanwhile or another process owns it)."""
    with contextlib.suppress(StaleState, LeaseLost):
        ctx.run = ctx.store.transition(ctx.run.id, ctx.run.state, RunState.FAILED,
                                       actor="runner", reason=reason, fence=ctx.fence)


def cancelled(ctx: RunContext, actor: str | None = None, reason: str | None = None) -> None:
    """Record the kill: container stopped, the run cancelled with who, why and in which state."""
    kill = ctx.handle.kill or ctx.store.kill_request(ctx.run.id)
    actor = actor or (kill.actor if kill else "runner")
    reason = reason or (kill.reason if kill else "cancelled")
    ctx.status.drop()  # a progress update not written yet must not follow the kill
    with contextlib.suppress(SandboxError):
        ctx.stop_sandbox()
    ctx.run = ctx.store.get_run(ctx.run.id)
    if ctx.run.terminal:
        return
    state = ctx.run.state
    ctx.run = ctx.store.transition(ctx.run.id, state, RunState.CANCELLED, actor=actor,
                                   reason=reason, fence=ctx.fence)
    ctx.event("killed", {"actor": actor, "reason": reason, "state": str(state),
                         "requested_at": kill.at if kill else None}, actor=actor)
    with contextlib.suppress(ForgeError), uninterrupted():  # the kill's own record
        ctx.forge.remove_label(ctx.run.repo, ctx.run.issue, ctx.settings.labels.trigger)


def finish(ctx: RunContext) -> None:
    """Whatever the ending: PR ready (on success), status comment final, cleanup."""
    run = ctx.run
    try:
        if run.state is RunState.SUCCEEDED and run.pr_number:
            ctx.forge.update_pull(run.repo, run.pr_number, draft=False,
                                  body=pr_body(ctx, cost=cost_line(run)))
        answer(ctx)  # a follow-up's replies to the threads it answered
        ctx.show_status()
    except ForgeError as exc:
        log.warning("run %s: could not update the forge at the end: %s", run.id, exc)
    finally:
        ctx.status.close()
        cleanup(ctx)


def cleanup(ctx: RunContext) -> None:
    """The run's container and worktree go, wherever the run ended."""
    workspaces = ctx.services.workspaces
    box = ctx.sandbox or ctx.find_sandbox()
    if box is not None:
        with contextlib.suppress(SandboxError):
            box.remove()
    run = ctx.run
    wt = ctx.worktree or workspaces.open(run.id, run.repo, run.issue,
                                         base_branch=ctx.repo.base_branch)
    if wt is not None:
        workspaces.remove(wt)
    else:
        workspaces.discard(run.id)
    ctx.event("cleaned_up", {"sandbox": bool(box), "worktree": wt is not None})
