"""Before a run starts: today's spend against the daily budgets (global and the repository's).

A run held by a spent budget waits queued, holding nothing, and looks again every minute (a
limit raised by a restart with a new configuration is noticed) and at the next UTC midnight.
Runs that already started are never stopped by the budget: they finish.
"""

from __future__ import annotations

import time

from runner import spend as budget
from runner.config import Settings
from runner.run.context import RunContext
from runner.run.outcome import Wait
from runner.store.base import Store

MARKER = "orchestrator:budget"


def hold(ctx: RunContext, now: float | None = None) -> Wait | None:
    """A Wait while today's spend has reached a budget; None when the run may start."""
    limits = ctx.settings.limits
    if limits.daily_cost_usd is None and ctx.repo.daily_cost_usd is None:
        return None
    now = ctx.clock.now() if now is None else now
    today = budget.day_name(now)
    state = budget.check(ctx.store.spend_by_repo(budget.day_start(now)), ctx.run.repo,
                         daily=limits.daily_cost_usd, repo_daily=ctx.repo.daily_cost_usd)
    warning = state.warning
    if warning is not None and ctx.store.mark_once(f"spend-warning:{warning.scope}:{today}"):
        ctx.event("budget-warning", _figures(warning, today))
    blocking = state.blocking
    if blocking is None:
        if ctx.details.budget_told:
            ctx.before_write()
            ctx.forge.upsert_comment(ctx.run.repo, ctx.run.issue, MARKER,
                                     budget.resumed_comment())
            ctx.note(budget_told="")
        return None
    until = min(budget.next_day(now), now + budget.RECHECK)
    if ctx.details.budget_told != today:
        ctx.before_write()
        ctx.forge.upsert_comment(ctx.run.repo, ctx.run.issue, MARKER,
                                 budget.waiting_comment(blocking, budget.next_day(now)))
        ctx.event("budget-spent", _figures(blocking, today))
        ctx.note(budget_told=today)
    return Wait(until, f"the {blocking.scope} spend budget is spent")


def spend_today(store: Store, settings: Settings, now: float | None = None) -> budget.Today:
    """Today's spend (UTC day, all processes) against the configured budgets."""
    now = time.time() if now is None else now
    return budget.today(store.spend_by_repo(budget.day_start(now)),
                        settings.limits.daily_cost_usd,
                        {repo.name: repo.daily_cost_usd for repo in settings.repos})


def _figures(spent: budget.Budget, today: str) -> dict[str, object]:
    return {"scope": spent.scope, "day": today, "spent_usd": round(spent.spent, 6),
            "limit_usd": spent.limit}
