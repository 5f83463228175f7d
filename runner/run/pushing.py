"""PUSHING: conflict check, push as the bot, find-or-create the (draft) pull request."""

from __future__ import annotations

from runner.model import Event, Run, RunState
from runner.run.context import RunContext, RunFailed
from runner.run.outcome import GoOn, Outcome
from runner.run.pull_text import pull_body, pull_title
from runner.run.workdir import worktree
from runner.store.base import RunNotFound


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
    events = ctx.store.events(run.id, limit=100_000)
    earlier = runs_followed(ctx)
    title, body = pull_title(ctx.run, events, earlier), pr_body(ctx, events)
    pull = forge.find_or_create_pull(run.repo, run.branch, ctx.repo.base_branch,
                                     title=title, body=body, draft=True)
    if run.pr_number == pull.number:  # a later iteration: the description follows it
        ctx.before_write()
        forge.update_pull(run.repo, pull.number, title=title, body=body)
    ctx.update(pr_number=pull.number, pr_url=pull.url)
    ctx.event("pull_request", {"number": pull.number, "url": pull.url})
    ctx.move(RunState.GATING)
    return GoOn()


def pr_body(ctx: RunContext, events: list[Event] | None = None, cost: str = "") -> str:
    """The pull request's description, from the audit events of the run and the runs it
    follows."""
    if events is None:
        events = ctx.store.events(ctx.run.id, limit=100_000)
    return pull_body(ctx.run, events, yolo_note=ctx.yolo_note, cost=cost,
                     earlier=runs_followed(ctx))


MAX_CHAIN = 20  # earlier runs shown in a PR's history


def runs_followed(ctx: RunContext) -> list[tuple[Run, list[Event]]]:
    """The runs this one follows (a follow-up's), oldest first, with their audit events."""
    chain: list[tuple[Run, list[Event]]] = []
    follows = ctx.run.details.follows
    while follows and len(chain) < MAX_CHAIN:
        try:
            earlier = ctx.store.get_run(follows)
        except RunNotFound:
            break
        chain.append((earlier, ctx.store.events(earlier.id, limit=100_000)))
        follows = earlier.details.follows
    return chain[::-1]
