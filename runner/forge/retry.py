"""One retry policy for every forge call, on tenacity.

A forge call is retried as a whole *operation*, never as a bare HTTP request: an operation
reads before it writes (find-or-create by head branch, upsert by hidden marker, a status or
review looked for before it is posted again), so running it again after a 502 or a dropped
connection (when the forge may well have acted) finds what the first attempt made instead of
making it twice. No HTTP layer under it retries anything.

What is retried: 429, 5xx, a transport error, and a rate limit (a 403 or 429 that says so, or
carries ``Retry-After``). The wait is the forge's ``Retry-After`` (seconds, or an HTTP date),
or the primary limit's ``X-RateLimit-Reset``, else exponential backoff with jitter; capped at
``max_wait`` (``rate_limit_wait`` for rate limits, so a run waits for the reset instead of
failing). A kill interrupts the sleep: see ``interrupt_on``.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

from runner.forge.base import ForgeError, RateLimited, RetryPolicy

T = TypeVar("T")

# Set by whoever drives a run (a kill sets the event): a retry's sleep ends at once.
_cancel: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "forge_retry_cancel", default=None)


# The attempt number of the operation running in this thread (0: none): an operation inside
# another runs once (its caller retries the whole), and a write can tell it is a retry.
_attempt: contextvars.ContextVar[int] = contextvars.ContextVar("forge_attempt", default=0)


# Set by whoever drives a run: hears of each wait for a rate limit (or a long one), to audit.
_audit: contextvars.ContextVar[Callable[[dict[str, object]], object] | None] = \
    contextvars.ContextVar("forge_retry_audit", default=None)


@contextlib.contextmanager
def audit_waits(record: Callable[[dict[str, object]], object]) -> Iterator[None]:
    """Within this block (this thread), ``record`` gets each rate-limit wait (and any wait
    of a second or more): what was called, how long, and why."""
    token = _audit.set(record)
    try:
        yield
    finally:
        _audit.reset(token)


def retrying() -> bool:
    """True inside a second or later attempt: the last one may have written already."""
    return _attempt.get() > 1


class Interrupted(ForgeError):
    """A forge call was waiting to retry when its run was killed."""


_guard: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "forge_write_guard", default=None)


def stop_if_cancelled() -> None:
    """Before each write a forge operation makes (each attempt of it): Interrupted when the
    run it works for was killed meanwhile (a step left behind by a kill must not write after
    it, not even the POST that follows the GET it was blocked in), and the block's guard
    (``guarded``) asked again, so that a write retried after a partition is fenced too."""
    event = _cancel.get()
    if event is not None and event.is_set():
        raise Interrupted("the run was killed: this forge write was not made")
    guard = _guard.get()
    if guard is not None:
        guard()


@contextlib.contextmanager
def guarded(check: Callable[[], None]) -> Iterator[None]:
    """Within this block, ``check`` runs before every forge write (it raises to refuse it)."""
    token = _guard.set(check)
    try:
        yield
    finally:
        _guard.reset(token)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """The kill's own record (the trigger label taken off) is written though the run's cancel
    is set."""
    token = _cancel.set(None)
    try:
        yield
    finally:
        _cancel.reset(token)


@contextlib.contextmanager
def interrupt_on(event: threading.Event) -> Iterator[None]:
    """Within this block (this thread), a retry's sleep ends when ``event`` is set."""
    token = _cancel.set(event)
    try:
        yield
    finally:
        _cancel.reset(token)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: ``"120"`` or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(at.timestamp() - (time.time() if now is None else now), 0.0)


def rate_limit_wait(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a rate-limit answer asks to wait: ``Retry-After``, else (primary limit spent)
    until ``X-RateLimit-Reset`` and a second; None when the headers do not say."""
    lowered = {k.lower(): v for k, v in headers.items()}
    after = retry_after_seconds(lowered.get("retry-after"), now)
    if after is not None:
        return after
    if lowered.get("x-ratelimit-remaining") == "0" and lowered.get("x-ratelimit-reset"):
        try:
            reset = float(lowered["x-ratelimit-reset"])
        except ValueError:
            return None
        return max(reset - (time.time() if now is None else now), 0.0) + 1.0
    return None


def is_rate_limit(status: int, message: str, headers: Mapping[str, str]) -> bool:
    """A 403/429 that is a rate limit (primary or secondary), not a permission problem."""
    if status not in (403, 429):
        return False
    lowered = {k.lower(): v for k, v in headers.items()}
    text = message.lower()
    return (status == 429 or "retry-after" in lowered
            or lowered.get("x-ratelimit-remaining") == "0" or "rate limit" in text
            or "abuse detection" in text)


def retryable(exc: BaseException) -> bool:
    """True for the failures worth another attempt (see the module docstring)."""
    if not isinstance(exc, ForgeError) or isinstance(exc, Interrupted):
        return False
    return exc.transient


class ForgeRetry:
    """Runs forge operations under a ``RetryPolicy``; ``on_wait`` hears of every wait."""

    def __init__(self, policy: RetryPolicy,
                 on_wait: Callable[[str, float, ForgeError], None] | None = None) -> None:
        self.policy = policy
        self.on_wait = on_wait

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        # Exponential backoff with jitter: retries of many workers do not arrive together.
        fallback = min(self.policy.backoff * 2.0 ** (state.attempt_number - 1)
                       # jitter, not a secret
                       + random.uniform(0, self.policy.backoff), self.policy.max_wait)  # noqa: S311
        if isinstance(exc, ForgeError) and exc.retry_after is not None:
            cap = self.policy.rate_limit_wait if isinstance(exc, RateLimited) else \
                self.policy.max_wait
            return min(exc.retry_after, cap)
        return fallback

    def _sleep(self, seconds: float) -> None:
        event = _cancel.get()
        if event is None:
            time.sleep(seconds)
        elif event.wait(seconds):
            raise Interrupted("the run was killed while a forge call waited to retry")

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()`` (an idempotent operation), retried as the policy says; the last error,
        saying how many retries were made, when it never succeeds."""
        if _attempt.get() > 0:
            return fn()  # inside another operation, which retries as a whole
        retries = max(self.policy.retries, 0)
        count = [0]

        def attempt() -> T:
            count[0] += 1
            token = _attempt.set(count[0])
            try:
                return fn()
            finally:
                _attempt.reset(token)

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if not isinstance(exc, ForgeError) or state.next_action is None:
                return
            seconds = state.next_action.sleep
            if self.on_wait is not None:
                self.on_wait(what, seconds, exc)
            record = _audit.get()
            if record is not None and (isinstance(exc, RateLimited) or seconds >= 1.0):
                with contextlib.suppress(Exception):  # auditing must not break the call
                    record({"call": what, "wait_s": round(seconds, 2), "status": exc.status,
                            "reason": str(exc)[:300],
                            "rate_limited": isinstance(exc, RateLimited)})

        policy = Retrying(stop=stop_after_attempt(retries + 1),
                          wait=self._wait, retry=retry_if_exception(retryable),
                          sleep=self._sleep, before_sleep=before_sleep, reraise=True)
        try:
            return policy(attempt)
        except ForgeError as exc:
            if retryable(exc):
                raise type(exc)(f"{exc} after {retries} retries; the forge is unavailable, "
                                "try again later", exc.status) from None
            raise
