"""GATING: the forge's CI on the exact head SHA. A run waiting for CI holds nothing.

The first look at a new head comes after ``limits.ci_poll_interval`` without webhooks, or
when a CI event wakes the run with them. Until CI is done the run waits, owned by no process,
for the next event or the next look on a backoff (``ci_poll_interval`` doubling to
``ci_poll_max``; with webhooks, only ``ci_poll_max`` as a fallback). The deadline is kept with
the run, so it holds across restarts and owners.
"""

from __future__ import annotations

import httpx

from runner.continuation import Failure
from runner.model import RunState
from runner.run.context import RunContext, RunFailed
from runner.run.iteration import next_iteration
from runner.run.outcome import GoOn, Outcome, Wait

_LOG_TAIL = 4000


def step(ctx: RunContext) -> Outcome:
    """Look at CI once: wait again, go on to the review, or back to the agent."""
    run, limits = ctx.run, ctx.settings.limits
    if ctx.skip_gates:
        ctx.event("gates", {"stage": "ci", "skipped": "quality gates disabled"})
        ctx.move(RunState.SUCCEEDED, reason="quality gates disabled (YOLO)")
        return GoOn()
    now = ctx.clock.now()
    webhooks = ctx.repo.forge in ctx.services.webhooks
    if not run.details.ci_deadline:
        # CI has only just started on a new head: the first look waits for its event or the
        # first poll (a CI event that came meanwhile makes the run claimable at once).
        ctx.note(ci_deadline=now + limits.ci_timeout, ci_looks=0)
        first = limits.ci_poll_max if webhooks else limits.ci_poll_interval
        return Wait(now + first, f"waiting for CI on {run.head_sha[:12]}")
    deadline = ctx.details.ci_deadline
    required = list(ctx.repo.required_contexts or ctx.profile.ci_contexts)
    ci = ctx.forge.ci_state(run.repo, run.head_sha)
    state = ci.required_state(required)
    if state not in ("success", "failure"):
        if now >= deadline:
            seen = ", ".join(f"{c.name}={c.state}" for c in ci.contexts) or "none"
            raise RunFailed(f"CI did not finish on {run.head_sha[:12]} within "
                            f"{limits.ci_timeout:.0f}s (seen: {seen})")
        looks = ctx.details.ci_looks + 1
        ctx.note(ci_looks=looks)
        return Wait(min(now + poll_delay(looks, limits.ci_poll_interval, limits.ci_poll_max,
                                         webhooks=webhooks), deadline),
                    f"CI {state} on {run.head_sha[:12]}")
    ctx.note(ci_deadline=0.0, ci_looks=0)
    ctx.event("ci", {"sha": run.head_sha, "state": state,
                     "contexts": {c.name: c.state for c in ci.contexts},
                     "links": {c.name: c.url for c in ci.contexts if c.url}})
    if state == "failure":
        failures = [Failure("ci", c.name, c.description or c.state, details=ci_log(c.url))
                    for c in ci.failing]
        next_iteration(ctx, failures)
        return GoOn()
    wanted = ctx.profile.review.enabled and ctx.settings.review.enabled and \
        ctx.services.review_client is not None
    ctx.move(RunState.REVIEWING if wanted else RunState.SUCCEEDED, reason="CI green")
    return GoOn()


def poll_delay(looks: int, first: float, longest: float, *, webhooks: bool) -> float:
    """Seconds until the next look at CI after ``looks`` looks: doubling from ``first`` to
    ``longest``; always ``longest`` when webhooks wake the run."""
    if webhooks:
        return longest
    return float(min(first * 2 ** max(looks - 1, 0), longest))


def ci_log(url: str) -> str:
    """The tail of a failing context's log, when its URL serves text."""
    if not url.startswith(("http://", "https://")):
        return ""
    try:
        reply = httpx.get(url, timeout=10, follow_redirects=True)
    except httpx.HTTPError:
        return ""
    if reply.status_code != 200 or "text" not in reply.headers.get("content-type", "text"):
        return ""
    return reply.text[-_LOG_TAIL:]
