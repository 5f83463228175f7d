"""RUNNING: the agent in its sandbox, then the pre-push gates; failures go back to it."""

from __future__ import annotations

import time
from pathlib import Path

from gates.checks import command_result
from gates.model import GateResult
from gates.run import check_diff
from runner.agent.base import Comment as TaskComment
from runner.agent.base import Task, load_instructions
from runner.continuation import Failure, failures_from_gates
from runner.model import Budget, RunState, Usage
from runner.run.context import Cancelled, RunContext, RunFailed
from runner.run.iteration import next_iteration
from runner.run.outcome import GoOn, Outcome
from runner.run.readers import writer_comments
from runner.run.workdir import sandbox, worktree


def step(ctx: RunContext) -> Outcome:
    """The agent, then the pre-push gates, until they pass or the iterations run out."""
    if ctx.run.iteration == 0:
        ctx.update(iteration=1)
    while True:
        box = sandbox(ctx)
        agent_cfg = ctx.settings.agent
        run = ctx.run
        # A follow-up shares the issue's cost budget with the runs it follows.
        spent = Usage(tokens_in=run.tokens_in, tokens_out=run.tokens_out,
                      cost_usd=run.cost_usd + run.details.spent_before)
        budget = Budget(max_turns=agent_cfg.max_turns,
                        max_tokens=max(agent_cfg.max_tokens - spent.tokens, 1),
                        max_cost_usd=max(agent_cfg.max_cost_usd - spent.cost_usd, 1e-6))
        task = _task(ctx)
        ctx.show_status()
        outcome = ctx.services.make_agent().run(
            task, box, budget, ctx.handle.cancel,
            lambda kind, data: ctx.event(kind, data, actor="agent"))
        usage = outcome.usage
        ctx.update(cost_usd=ctx.run.cost_usd + usage.cost_usd,
                   tokens_in=ctx.run.tokens_in + usage.tokens_in + usage.cache_read
                   + usage.cache_write, tokens_out=ctx.run.tokens_out + usage.tokens_out)
        ctx.event("agent_done", {"stop_reason": outcome.stop_reason,
                                 "summary": outcome.summary[:2000], "turns": outcome.turns,
                                 "error": outcome.error, "cost_usd": round(usage.cost_usd, 6)})
        if outcome.stop_reason == "cancelled":
            raise Cancelled()
        if not outcome.ok:
            raise RunFailed(f"the agent stopped: {outcome.stop_reason}"
                            + (f" ({outcome.error})" if outcome.error else ""))
        failures = _pre_push(ctx, outcome.summary)
        if not failures:
            ctx.move(RunState.PUSHING)
            return GoOn()
        next_iteration(ctx, failures, stay=True)


def _task(ctx: RunContext) -> Task:
    run, path = ctx.run, Path(worktree(ctx).path)
    found = load_instructions(path)
    comments = tuple(TaskComment(author=author, body=text)
                     for author, text in writer_comments(ctx))
    return Task(title=run.issue_title, body=run.issue_body, repo=run.repo, issue=run.issue,
                comments=comments, instructions=found[1] if found else None,
                instructions_file=found[0] if found else None,
                feedback=run.details.feedback or None, iteration=max(run.iteration, 1),
                follow_up=run.details.follow_up or None)


def _pre_push(ctx: RunContext, summary: str) -> list[Failure]:
    """Commit on the host, then the pre-push gates on the diff and in the sandbox.

    A failing commit is taken back (the files stay), so nothing failing is ever pushed.
    """
    workspaces = ctx.services.workspaces
    wt = worktree(ctx)
    before = workspaces.head(wt)
    title = summary.strip().splitlines()[0][:72] if summary.strip() else ""
    message = f"{title or 'Work on'} (#{ctx.run.issue})\n\nCloses #{ctx.run.issue}"
    sha = workspaces.commit(wt, message, cancel=ctx.handle.cancel)
    diff_text = workspaces.diff(wt, cancel=ctx.handle.cancel)
    if sha is None and not diff_text.strip():
        return [Failure("gate", "changes", "the branch has no changes against the base "
                        "branch: nothing was done for the issue")]
    results = check_diff(workspaces.changes(wt, cancel=ctx.handle.cancel), ctx.profile,
                         ctx.details.labels, ctx.gates)
    if not ctx.skip_gates:
        results += _sandbox_gates(ctx)
    ctx.note(gate_results=tuple(r.to_dict() for r in results))
    ctx.event("gates", {"stage": "pre-push", "results": [r.to_dict() for r in results]})
    failed = [r for r in results if not r.passed]
    secrets_found = any(r.gate == "secrets" for r in failed)
    if ctx.skip_gates and not secrets_found:
        return []  # YOLO skips quality gates, never the secret scan
    if failed and sha is not None:
        workspaces.reset_to(wt, before)
    return failures_from_gates(failed)


def _sandbox_gates(ctx: RunContext) -> list[GateResult]:
    results = []
    box = sandbox(ctx)
    for name, command in ctx.profile.fast_commands().items():
        ctx.check_cancel()
        started = time.monotonic()
        result = box.exec(command.run, timeout=command.timeout)
        results.append(command_result(name, command,
                                      None if result.timed_out else result.exit_code,
                                      result.output, time.monotonic() - started))
    return results
