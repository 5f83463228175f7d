"""How an outage of the model provider is waited out, and how its length is told."""

from __future__ import annotations

from runner.provider import Backoff, OutageWait, duration


def test_waits_double_from_the_base_to_the_cap_with_jitter() -> None:
    backoff = Backoff(timeout=900, base=1.0, cap=60.0)
    for attempt, full in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (30, 60.0)]:
        wait = backoff.delay(attempt)
        assert 0.75 * full <= wait <= full, (attempt, wait)


def test_the_servers_retry_after_wins_up_to_the_cap() -> None:
    backoff = Backoff(timeout=900, base=1.0, cap=60.0)
    assert backoff.delay(1, retry_after=7.0) == 7.0
    assert backoff.delay(1, retry_after=3600.0) == 60.0


def test_a_wait_is_audited_with_its_elapsed_time_and_bound() -> None:
    wait = OutageWait(3, "529 overloaded_error: Overloaded", 529, 4.12345, 2.9876, 900.0)
    assert wait.as_event() == {"attempt": 3, "reason": "529 overloaded_error: Overloaded",
                               "status": 529, "wait_s": 4.123, "elapsed_s": 2.988,
                               "timeout_s": 900.0}


def test_an_outage_is_told_in_seconds_minutes_or_hours() -> None:
    assert duration(1.6) == "2 s"
    assert duration(89) == "89 s"
    assert duration(900) == "15 min"
    assert duration(3900) == "1 h 5 min"
