"""PUSHING: conflict check, push as the bot, find-or-create the (draft) pull request."""

from __future__ import annotations

from runner.model import RunState
from runner.run.context import RunContext, RunFailed
from runner.run.outcome import GoOn, Outcome
from runner.run.workdir import worktree


def step(ctx: RunContext) -> Outcome:
    """Push the branch and open its PR; every write is fenced and follows no kill."""
    run, forge = ctx.run, ctx.forge
    wt = worktree(ctx)
    url = forge.clone_url(run.repo)
    cancel = ctx.handle.cancel
    conflicts = ctx.services.workspaces.conflicts(wt, url=url, token=ctx.token, cancel=cancel)
    if conflicts:
        raise RunFailed(f"the branch conflicts with {ctx.repo.base_branch} in "
                        f"{', '.join(conflicts)}; resolve them by hand or relabel to retry")
    ctx.before_write()  # a stalled old owner, or a killed run, must not push
    sha = ctx.services.workspaces.push(wt, url, token=ctx.token, force=True, cancel=cancel)
    # Recorded at once: a CI event for the new head finds the run by it from now on.
    ctx.update(head_sha=sha)
    ctx.note(ci_deadline=0.0, ci_looks=0)  # a new head: its CI is waited for afresh
    ctx.event("pushed", {"branch": run.branch, "sha": sha})
    ctx.before_write()
    pull = forge.find_or_create_pull(run.repo, run.branch, ctx.repo.base_branch,
                                     title=run.issue_title or f"Fix #{run.issue}",
                                     body=pr_body(ctx), draft=True)
    ctx.update(pr_number=pull.number, pr_url=pull.url)
    ctx.event("pull_request", {"number": pull.number, "url": pull.url})
    ctx.move(RunState.GATING)
    return GoOn()


def pr_body(ctx: RunContext, extra: str = "") -> str:
    """The pull request's description."""
    run = ctx.run
    parts = [f"Closes #{run.issue}", ""]
    if ctx.yolo_note:
        parts += [ctx.yolo_note, ""]
    parts += [f"Opened by the orchestrator (run `{run.id}`) for the issue as "
              f"@{run.trigger_actor} triggered it."]
    if extra:
        parts += ["", extra]
    return "\n".join(parts)
