"""The next iteration: failures (gates, CI, review) become the agent's next instruction."""

from __future__ import annotations

from runner.continuation import Failure, render_continuation
from runner.model import RunState
from runner.run.context import RunContext, RunFailed


def next_iteration(ctx: RunContext, failures: list[Failure], *, stay: bool = False) -> None:
    """Give the failures to the agent as its next instruction (back to RUNNING unless ``stay``,
    when it is running already), or fail the run when its iterations are used up."""
    limit = ctx.settings.limits.max_iterations
    iteration = ctx.run.iteration + 1
    if iteration > limit:
        names = ", ".join(f"{f.source}:{f.name}" for f in failures)
        raise RunFailed(f"still failing after {limit} iteration(s): {names}")
    feedback = render_continuation(ctx.services.continuation_template, failures, iteration,
                                   limit)
    ctx.update(iteration=iteration)
    ctx.note(feedback=feedback)
    ctx.event("iteration", {"iteration": iteration,
                            "failures": [f"{f.source}:{f.name}" for f in failures]})
    if stay:
        ctx.show_status()
    else:
        ctx.move(RunState.RUNNING, reason=f"iteration {iteration}")
