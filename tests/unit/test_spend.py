"""The daily spend budget's decisions: which UTC day, when a budget is spent, what people read."""

from __future__ import annotations

from datetime import UTC, datetime

from runner import spend

NOON = datetime(2026, 12, 3, 12, 30, tzinfo=UTC).timestamp()


def test_the_day_is_the_utc_day() -> None:
    assert spend.day_start(NOON) == datetime(2026, 12, 3, tzinfo=UTC).timestamp()
    assert spend.next_day(NOON) == datetime(2026, 12, 4, tzinfo=UTC).timestamp()
    assert spend.day_name(NOON) == "2026-12-03"


def test_no_limit_never_blocks_or_warns() -> None:
    state = spend.check({"a/b": 1000.0}, "a/b", daily=None, repo_daily=None)
    assert state.blocking is None and state.warning is None


def test_the_global_budget_counts_every_repository() -> None:
    state = spend.check({"a/b": 3.0, "c/d": 2.0}, "a/b", daily=5.0, repo_daily=None)
    assert state.blocking is not None and state.blocking.scope == "daily"
    assert spend.check({"a/b": 3.0, "c/d": 1.9}, "a/b", daily=5.0, repo_daily=None).blocking \
        is None


def test_a_repository_budget_counts_only_its_runs() -> None:
    busy = spend.check({"a/b": 1.0, "c/d": 50.0}, "a/b", daily=None, repo_daily=1.0)
    assert busy.blocking is not None and busy.blocking.scope == "daily for a/b"
    assert spend.check({"a/b": 0.5, "c/d": 50.0}, "a/b", daily=None, repo_daily=1.0).blocking \
        is None


def test_the_warning_starts_at_ninety_percent() -> None:
    assert spend.check({"a/b": 0.89}, "a/b", daily=1.0, repo_daily=None).warning is None
    state = spend.check({"a/b": 0.9}, "a/b", daily=1.0, repo_daily=None)
    assert state.warning is not None and state.blocking is None


def test_the_issue_is_told_the_limit_and_when_the_run_starts() -> None:
    state = spend.check({"a/b": 5.2}, "a/b", daily=5.0, repo_daily=None)
    assert state.blocking is not None
    text = spend.waiting_comment(state.blocking, spend.next_day(NOON))
    assert "$5.00" in text and "$5.20" in text and "2026-12-04 00:00 UTC" in text
    assert "raised" in text


def test_todays_spend_for_people() -> None:
    today = spend.today({"a/b": 4.5, "c/d": 0.004}, 5.0, {"a/b": None, "c/d": 1.0})
    assert today.lines() == ["today's spend (UTC): $4.50 of $5.00 (90%) - nearly spent",
                             "today's spend for c/d (UTC): $0.0040 of $1.00 (0%)"]
    assert [b.scope for b in today.warnings] == ["daily"]
    assert spend.today({}, None, {}).lines() == ["today's spend (UTC): $0.00 (no daily budget)"]


def test_the_dashboard_shows_todays_spend_and_warns_at_ninety_percent() -> None:
    from runner import dashboard

    calm = dashboard.runs_page([], state="", repo="", repos=[], paused=None,
                               spend=spend.today({"a/b": 1.0}, 5.0, {}))
    import html

    assert "today's spend (UTC): $1.00 of $5.00 (20%)" in html.unescape(calm)
    assert "nearly or fully spent" not in calm
    hot = dashboard.runs_page([], state="", repo="", repos=[], paused=None,
                              spend=spend.today({"a/b": 4.6}, 5.0, {}))
    assert "nearly or fully spent" in hot
