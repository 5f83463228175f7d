"""The one retry policy of forge calls: what is retried, how long it waits, and that a kill
ends the wait."""

from __future__ import annotations

import threading
import time
from email.utils import formatdate

import pytest

from runner.forge.base import Conflict, ForgeError, RateLimited, RetryPolicy
from runner.forge.retry import (
    ForgeRetry,
    Interrupted,
    interrupt_on,
    is_rate_limit,
    rate_limit_wait,
    retry_after_seconds,
    retrying,
)


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds(formatdate(now + 90, usegmt=True), now) == pytest.approx(90, abs=1)
    assert retry_after_seconds(formatdate(now - 90, usegmt=True), now) == 0.0  # already past
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None) is None


def test_rate_limits_primary_and_secondary() -> None:
    now = 1_700_000_000.0
    primary = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(now) + 600)}
    assert rate_limit_wait(primary, now) == 601.0  # until the reset, and a second
    assert rate_limit_wait({"retry-after": "60"}, now) == 60.0  # secondary
    assert rate_limit_wait({"x-ratelimit-remaining": "12"}, now) is None
    abuse = ("You have triggered an abuse detection mechanism. Please wait a few minutes "
             "before you try again.")
    assert is_rate_limit(403, abuse, {"retry-after": "60"})  # as recorded, 2018
    assert is_rate_limit(403, "API Rate Limit Exceeded for 1.2.3.4", primary)
    assert is_rate_limit(429, "", {})
    assert not is_rate_limit(403, "Resource not accessible by integration", {})


def _flaky(errors: list[ForgeError]):  # type: ignore[no-untyped-def]
    calls: list[bool] = []

    def fn() -> str:
        calls.append(retrying())
        if errors:
            raise errors.pop(0)
        return "done"
    return fn, calls


def test_transient_failures_are_retried_and_the_retry_knows_it_is_one() -> None:
    waits: list[float] = []
    retry = ForgeRetry(RetryPolicy(retries=3, backoff=0.01, max_wait=0.05),
                       on_wait=lambda what, s, exc: waits.append(s))
    fn, calls = _flaky([ForgeError("502", 502, transient=True),
                        RateLimited("limit", retry_after=0.02)])
    assert retry.call("op", fn) == "done"
    assert calls == [False, True, True] and len(waits) == 2
    assert waits[1] == 0.02  # the forge's own wait, not our backoff


def test_what_another_attempt_cannot_cure_is_not_retried() -> None:
    retry = ForgeRetry(RetryPolicy(retries=3, backoff=0.01))
    fn, calls = _flaky([Conflict("exists", 422)])
    with pytest.raises(Conflict):
        retry.call("op", fn)
    assert len(calls) == 1


def test_giving_up_says_how_often_it_tried() -> None:
    retry = ForgeRetry(RetryPolicy(retries=2, backoff=0.01))
    fn, calls = _flaky([ForgeError("GitHub answered 500 on x", 500, transient=True)
                        for _ in range(5)])
    with pytest.raises(ForgeError, match="500 on x after 2 retries") as caught:
        retry.call("op", fn)
    assert caught.value.status == 500 and len(calls) == 3


def test_a_kill_ends_the_wait_at_once() -> None:
    retry = ForgeRetry(RetryPolicy(retries=2, rate_limit_wait=600))
    fn, _ = _flaky([RateLimited("limit", retry_after=300)])
    killed = threading.Event()
    threading.Timer(0.2, killed.set).start()
    started = time.monotonic()
    with interrupt_on(killed), pytest.raises(Interrupted):
        retry.call("op", fn)
    assert time.monotonic() - started < 5


def test_polling_stretches_while_a_forge_budget_runs_low() -> None:
    from types import SimpleNamespace

    from runner.forge.budget import ForgeStats, poll_every

    plenty, low = ForgeStats(), ForgeStats()
    plenty.budget(4000, 5000, time.time() + 600)
    low.budget(300, 5000, time.time() + 600)
    assert poll_every(60, [SimpleNamespace(stats=plenty)]) == 60
    assert poll_every(60, [SimpleNamespace(stats=plenty), SimpleNamespace(stats=low)]) == 240
    low.budget(300, 5000, time.time() - 1)  # the window has reset since
    assert poll_every(60, [SimpleNamespace(stats=low)]) == 60


def test_the_budget_line_of_the_health_page() -> None:
    from runner.forge.budget import ForgeStats, budget_line

    stats = ForgeStats()
    for _ in range(3):
        stats.request()
    stats.hit()
    assert budget_line(stats) == "3 requests, 1 unchanged (304)"
    stats.budget(120, 5000, 1_700_000_000.0)
    stats.waited(12.4)
    line = budget_line(stats)
    assert line.startswith("budget 120 of 5,000 left until ") and "(low: polling slowed)" in line
    assert line.endswith("1 rate-limit waits (12 s)")
