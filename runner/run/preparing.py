"""PREPARING: the gate profiles the run applies, a warm sandbox if one waits, the worktree."""

from __future__ import annotations

import logging

from gates.choose import choose_profile
from gates.model import GatesError
from gates.profiles import REPO_CONFIG as REPO_GATES
from gates.profiles import GatesConfig
from gates.profiles import parse_config as parse_gates
from runner.model import Run, RunState
from runner.run.base_merge import merge_base
from runner.run.context import RunContext, RunFailed, Services
from runner.run.outcome import GoOn, Outcome
from runner.run.readers import trusted_labels
from runner.run.workdir import fresh_after, worktree

log = logging.getLogger("orchestrator.run")


def step(ctx: RunContext) -> Outcome:
    """Choose the profile, take a warm sandbox, check the worktree out."""
    if ctx.worktree is None:
        _take_warm_sandbox(ctx)
    if not ctx.details.profile:
        _choose_profile(ctx)
    wt = worktree(ctx)
    if ctx.details.follow_up_kind == "conflict":
        _merge_base(ctx, wt)
    ctx.move(RunState.RUNNING)
    return GoOn()


def _merge_base(ctx: RunContext, wt: object) -> None:
    """A conflict follow-up merges the base first; the agent is told what still conflicts."""
    conflicted = merge_base(ctx, wt)
    if conflicted and "Files with conflict markers:" not in ctx.details.follow_up:
        listed = "\n".join(f"- `{path}`" for path in conflicted)
        ctx.note(follow_up=f"{ctx.details.follow_up}\n\nFiles with conflict markers:\n"
                           f"{listed}")
    elif not conflicted and "merged cleanly" not in ctx.details.follow_up:
        ctx.note(follow_up=f"{ctx.details.follow_up}\n\nThe base merged cleanly after all: "
                           "check that the tests still pass, and change nothing else.")


def gates_of(services: Services, run: Run) -> GatesConfig:
    """The gate profiles a run applies: its repository's, kept when it started, or the
    runner's (``gates_config``)."""
    if run.details.gates_yml:
        return parse_gates(run.details.gates_yml, run.details.gates_source or "gates.yml")
    return services.gates


def _repo_gates(ctx: RunContext) -> tuple[str, str]:
    """The repository's own gate profiles (``.orchestrator/gates.yml`` on its base branch,
    where the agent cannot write), when it has them: they apply to the run, and the run keeps
    them, so that a resumed run applies the same ones. ("", "") when it has none."""
    run = ctx.run
    name = REPO_GATES.as_posix()
    text = ctx.services.workspaces.base_file(
        run.repo, ctx.forge.clone_url(run.repo), ctx.repo.base_branch, name,
        token=ctx.token, fresh_after=fresh_after(run), cancel=ctx.handle.cancel)
    if text is None:
        return "", ""
    source = f"{run.repo}@{ctx.repo.base_branch}:{name}"
    try:
        ctx.gates = parse_gates(text, source)
    except GatesError as exc:
        raise RunFailed(f"{exc} (fix it on {ctx.repo.base_branch}, then relabel)") from None
    ctx.event("gates_config", {"source": source})
    return text, source


def _choose_profile(ctx: RunContext) -> None:
    """The gate profiles the run applies (its repository's own, else the runner's) and its
    profile among them."""
    gates_yml, gates_source = _repo_gates(ctx)
    labels = list(ctx.details.labels)
    allow = ctx.gates.allow_ci_changes_label.lower()
    if allow != ctx.services.gates.allow_ci_changes_label.lower():
        # The repository names its own allow-CI-changes label: like the runner's, it counts
        # only when someone allowed to added it.
        named = [label for label in (ctx.details.issue_labels or labels)
                 if label.lower() == allow]
        labels = [label for label in labels if label.lower() != allow]
        labels += trusted_labels(ctx, named)
    try:
        profile = choose_profile(labels, ctx.repo.gate_profile, ctx.gates.profiles).name
    except Exception as exc:  # a bad gate profile (any error) fails the run with its message  # noqa: BLE001
        raise RunFailed(str(exc)) from None
    ctx.note(gates_yml=gates_yml, gates_source=gates_source, labels=tuple(labels),
             profile=profile)
    ctx.profile = ctx.gates.profile(profile)


def _take_warm_sandbox(ctx: RunContext) -> None:
    """A new run takes a sandbox started ahead of time; its worktree is then checked out
    into the directory that sandbox already has mounted."""
    services = ctx.services
    path = services.workspaces.worktree_path(ctx.run.id)
    if services.warm is None or path.exists():
        return  # no pool, or resumed: the run has its own directory (and perhaps container)
    try:
        took = services.warm.take(services.spec(ctx.run.id, ctx.run.repo, ctx.run.issue, path))
    except Exception as exc:  # only a head start: the run starts its own container  # noqa: BLE001
        log.info("run %s: no warm sandbox (%s)", ctx.run.id, exc)
        return
    ctx.warm = took
