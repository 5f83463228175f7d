"""The daily spend budget: pure decisions (no I/O) over today's recorded model cost.

A run's cost counts on the UTC day the run was created. The sums come from the store
(``Store.spend_by_repo``), so every runner process sharing it sees the same spend.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

WARN_AT = 0.9  # the share of a budget at which the audit log and the dashboard warn
RECHECK = 60.0  # a run held by the budget looks again this often (a raised limit is noticed)


def day_start(now: float) -> float:
    """The epoch seconds of the UTC midnight that began the day of ``now``."""
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


def next_day(now: float) -> float:
    """The epoch seconds of the next UTC midnight after ``now``."""
    start = datetime.fromtimestamp(day_start(now), UTC)
    return (start + timedelta(days=1)).timestamp()


def day_name(now: float) -> str:
    """The UTC date of ``now``, e.g. ``2026-12-03``."""
    return datetime.fromtimestamp(now, UTC).date().isoformat()


@dataclass(frozen=True)
class Budget:
    """One budget's state today: what was spent against which limit (None: no limit)."""

    scope: str  # "daily" or "daily for owner/name"
    spent: float
    limit: float | None

    @property
    def share(self) -> float:
        return self.spent / self.limit if self.limit else 0.0

    @property
    def spent_out(self) -> bool:
        return self.limit is not None and self.spent >= self.limit

    @property
    def warning(self) -> bool:
        return self.limit is not None and self.share >= WARN_AT


@dataclass(frozen=True)
class Check:
    """Whether a run of a repository may start now, given today's spend."""

    budgets: tuple[Budget, ...]

    @property
    def blocking(self) -> Budget | None:
        """The first budget that is spent, if any: no new run starts."""
        return next((b for b in self.budgets if b.spent_out), None)

    @property
    def warning(self) -> Budget | None:
        """The first budget at 90 % or more (spent or not)."""
        return next((b for b in self.budgets if b.warning), None)


def check(spend_by_repo: dict[str, float], repo: str, *, daily: float | None,
          repo_daily: float | None) -> Check:
    """Today's global and per-repository budgets for a run of ``repo``."""
    return Check((Budget("daily", sum(spend_by_repo.values()), daily),
                  Budget(f"daily for {repo}", spend_by_repo.get(repo, 0.0), repo_daily)))


def usd(amount: float) -> str:
    """An amount for people: two decimals, more when it is under a cent."""
    return f"${amount:.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.4f}"


def waiting_comment(budget: Budget, until: float) -> str:
    """What the issue is told when its run waits for the budget."""
    assert budget.limit is not None  # only a budget with a limit can be spent  # noqa: S101
    return (f"The {budget.scope} spend budget of {usd(budget.limit)} is spent "
            f"({usd(budget.spent)} today, UTC). This run waits queued and starts at the "
            f"next UTC day ({datetime.fromtimestamp(until, UTC):%Y-%m-%d %H:%M} UTC) or as "
            "soon as the limit is raised.")


def resumed_comment() -> str:
    """What the waiting comment becomes once the run may start."""
    return "The daily spend budget allows this run now; it has started."


@dataclass(frozen=True)
class Today:
    """Today's spend for people (``orchestrator runs``, the dashboard): all repositories,
    and each repository that has a budget of its own."""

    overall: Budget
    repos: tuple[Budget, ...] = ()

    def lines(self) -> list[str]:
        """One line per budget, e.g. ``today's spend (UTC): $4.52 of $5.00 (90 %)``."""
        return [_line(b) for b in (self.overall, *self.repos)]

    @property
    def warnings(self) -> tuple[Budget, ...]:
        """The budgets at 90 % or more."""
        return tuple(b for b in (self.overall, *self.repos) if b.warning)


def today(spend_by_repo: dict[str, float], daily: float | None,
          repo_limits: dict[str, float | None]) -> Today:
    """Today's spend against the global budget and each repository's own."""
    return Today(Budget("daily", sum(spend_by_repo.values()), daily),
                 tuple(Budget(f"daily for {name}", spend_by_repo.get(name, 0.0), limit)
                       for name, limit in sorted(repo_limits.items()) if limit is not None))


def _line(b: Budget) -> str:
    where = "" if b.scope == "daily" else " " + b.scope.removeprefix("daily ")
    if b.limit is None:
        return f"today's spend{where} (UTC): {usd(b.spent)} (no daily budget)"
    note = " - spent, new runs wait" if b.spent_out else (
        " - nearly spent" if b.warning else "")
    return (f"today's spend{where} (UTC): {usd(b.spent)} of {usd(b.limit)} "
            f"({b.share:.0%}){note}")
