"""What a working step holds: the run's worktree and its sandbox, made when first needed."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from runner.model import Run, RunState
from runner.run.context import Cancelled, RunContext
from runner.sandbox.base import Sandbox, SandboxError

log = logging.getLogger("orchestrator.run")


def fresh_after(run: Run) -> float | None:
    """How fresh the mirror must be for the run's worktree. Until the run first pushes, a
    fetch begun after it was asked for will do (runs labelled together share one); after
    that, only a new fetch sees what an earlier owner of the run pushed."""
    never_pushed = run.state in (RunState.QUEUED, RunState.PREPARING, RunState.RUNNING) \
        and not run.head_sha
    return run.created_at if never_pushed and run.created_at else None


def worktree(ctx: RunContext) -> Any:
    """The run's worktree: the one on this machine, or a new one from its branch."""
    if ctx.worktree is None:
        run, services = ctx.run, ctx.services
        started = time.monotonic()
        ctx.worktree = services.workspaces.prepare(
            run.id, run.repo, run.issue, ctx.forge.clone_url(run.repo),
            base_branch=ctx.repo.base_branch, token=ctx.token, fresh_after=fresh_after(run),
            cancel=ctx.handle.cancel)
        ctx.event("workspace", {"path": str(ctx.worktree.path),
                                "resumed": bool(ctx.worktree.resumed),
                                "seconds": round(time.monotonic() - started, 3)})
        # The next run of this repository takes a spare checked out now, off its path.
        threading.Thread(target=_fill_spare, args=(ctx, run.repo, ctx.repo.base_branch),
                         daemon=True, name=f"spare-{run.id}").start()
    return ctx.worktree


def _fill_spare(ctx: RunContext, repo: str, base_branch: str) -> None:
    try:
        ctx.services.workspaces.fill_spare(repo, base_branch)
    except Exception as exc:  # only an optimisation: the next run checks out afresh  # noqa: BLE001
        log.info("no spare worktree for %s: %s", repo, exc)


def sandbox(ctx: RunContext) -> Sandbox:
    """The run's container, started on its worktree when first needed."""
    if ctx.sandbox is None:
        path = Path(worktree(ctx).path)
        ctx.sandbox = ctx.services.sandboxes.start(
            ctx.services.spec(ctx.run.id, ctx.run.repo, ctx.run.issue, path))
        ctx.event("sandbox", {"name": ctx.sandbox.name, "warm": ctx.warm})
        # A kill that arrived while the container was starting must still stop it.
        if ctx.handle.cancel.is_set():
            ctx.stop_sandbox()
            raise Cancelled()
    return ctx.sandbox


def release_sandbox(ctx: RunContext) -> None:
    """A run about to wait gives its container back: a wait holds no memory or processes.
    The worktree stays on disk; the next working step starts a container on it."""
    box = ctx.sandbox or ctx.find_sandbox()
    if box is None:
        return
    try:
        box.remove()
    except SandboxError as exc:  # the orphan sweep removes it later
        log.info("run %s: container not removed before waiting: %s", ctx.run.id, exc)
    ctx.sandbox = None
