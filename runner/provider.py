"""The model provider (the Messages API) as the agent and the reviewer call it.

    with Session(endpoint, cancel=run_cancel, on_wait=audit) as session:
        message = session.create({"model": ..., "max_tokens": ..., "messages": [...]})

Each request runs as an asyncio task on the session's private event loop; a set cancel
event cancels the task, which closes the HTTP connection, so a kill never waits for a slow
model (``Cancelled``). An outage (429, 529, 408, 409, 5xx, or no connection at all) is a
wait, not a failure: the request is tried again with exponential backoff and jitter,
honouring ``retry-after``, each wait reported to ``on_wait``, until the provider answers or
the outage has lasted ``Backoff.timeout`` seconds (``Unavailable``, saying for how long
and what it answered). Any other API error is raised as the SDK's ``APIStatusError``.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anthropic
import httpx

log = logging.getLogger(__name__)

# 408/409 are the API's "try again" answers too; 529 is "overloaded".
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
RETRY_ERROR_TYPES = frozenset({"overloaded_error", "rate_limit_error", "api_error"})
POLL_S = 0.05  # how often a request in flight looks at the cancel event
CLOSE_GRACE_S = 0.5  # what a cancelled request gets to close its connection


class Cancel(Protocol):
    """Anything shaped like ``threading.Event``: set by a kill."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Cancelled(Exception):
    """The cancel event was set: the request in flight (or the wait) was abandoned."""


class Unavailable(Exception):
    """The provider kept failing (429/529/5xx or unreachable) for the whole outage bound."""

    def __init__(self, message: str, *, status: int | None, elapsed_s: float,
                 attempts: int) -> None:
        super().__init__(message)
        self.status = status  # the last HTTP status, None when it could not be reached
        self.elapsed_s = elapsed_s
        self.attempts = attempts


@dataclass(frozen=True)
class Backoff:
    """How an outage is waited out: ``base * 2**n`` seconds capped at ``cap``, jittered (or
    what ``retry-after`` asks), for at most ``timeout`` seconds from the first failure."""

    timeout: float = 900.0
    base: float = 1.0
    cap: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.cap)
        wait = min(self.cap, self.base * 2.0 ** (attempt - 1))
        return wait * random.uniform(0.75, 1.0)  # jitter, so parallel runs spread out  # noqa: S311


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach the model: the key (kept in the runner), the API root, the
    per-request timeout and how long an outage is waited out."""

    api_key: str = field(repr=False)
    base_url: str | None = None
    timeout: float = 600.0
    backoff: Backoff = field(default_factory=Backoff)


@dataclass(frozen=True)
class OutageWait:
    """One wait in an outage, as reported to ``on_wait`` before it begins."""

    attempt: int  # failed attempts so far in this outage
    reason: str  # "529 overloaded_error: Overloaded", "connection: ..."
    status: int | None  # None: the provider could not be reached
    wait_s: float
    elapsed_s: float  # since the outage's first failure
    timeout_s: float  # the bound, after which the call fails

    def as_event(self) -> dict[str, Any]:
        """The audit payload of a ``model_unavailable`` event."""
        return {"attempt": self.attempt, "reason": self.reason, "status": self.status,
                "wait_s": round(self.wait_s, 3), "elapsed_s": round(self.elapsed_s, 3),
                "timeout_s": self.timeout_s}


OnWait = Callable[[OutageWait], None]


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every client: making one loads the CA bundle, some 50 ms of CPU
    that each run would otherwise spend before its first request."""
    return httpx.create_ssl_context()


class Session:
    """A private event loop and client for the requests of one agent run or one review.

    ``cancel`` aborts a request in flight and any wait (``Cancelled``); ``on_wait`` hears of
    each wait in an outage. Use as a context manager, or call ``close``.
    """

    def __init__(self, endpoint: Endpoint, *, cancel: Cancel | None = None,
                 on_wait: OnWait | None = None) -> None:
        self.endpoint = endpoint
        self.cancel: Cancel = cancel if cancel is not None else threading.Event()
        self.on_wait = on_wait
        self._loop = asyncio.new_event_loop()
        self._client = anthropic.AsyncAnthropic(
            api_key=endpoint.api_key, base_url=endpoint.base_url, max_retries=0,
            timeout=endpoint.timeout,
            http_client=anthropic.DefaultAsyncHttpxClient(verify=_tls_context()))

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the client's connections and the loop. Safe to call twice."""
        if self._loop.is_closed():
            return
        try:
            self._loop.run_until_complete(asyncio.wait_for(self._client.close(), 2))
        except Exception:  # best effort: the connections die with the loop
            log.debug("closing the Messages API client failed", exc_info=True)
        self._loop.close()

    def create(self, params: dict[str, Any], *, stream: bool = True) -> Any:
        """One Messages API reply (an ``anthropic.types.Message``), waiting out an outage.

        Raises ``Cancelled``, ``Unavailable``, or ``anthropic.APIStatusError`` for an answer
        that is no outage (400, 401, 403, 404, 413...).
        """
        backoff = self.endpoint.backoff
        began: float | None = None  # when this outage's first failure came
        attempt = 0
        while True:
            if self.cancel.is_set():
                raise Cancelled("cancelled before a model request")
            try:
                return self._loop.run_until_complete(self._call(params, stream))
            except anthropic.APIStatusError as exc:
                if not retryable(exc):
                    raise
                status: int | None = exc.status_code
                reason = f"{exc.status_code} {error_type(exc)}: {error_message(exc)}"
                asked = retry_after(exc.response.headers) if exc.response is not None else None
            except anthropic.APIConnectionError as exc:
                status, reason, asked = None, f"connection: {exc}", None
            now = time.monotonic()
            began = now if began is None else began
            attempt += 1
            elapsed, left = now - began, backoff.timeout - (now - began)
            if left <= 0:
                raise Unavailable(self._explain(status, reason, elapsed, attempt),
                                  status=status, elapsed_s=elapsed, attempts=attempt)
            # The last wait ends at the bound, for one more try there.
            wait = min(backoff.delay(attempt, asked), left)
            if self.on_wait is not None:
                self.on_wait(OutageWait(attempt, reason, status, wait, elapsed, backoff.timeout))
            if self.cancel.wait(wait):
                raise Cancelled("cancelled while waiting out a model provider outage")

    async def _call(self, params: dict[str, Any], stream: bool) -> Any:
        """The request as a task; a cancel cancels it, which closes its connection."""
        task = asyncio.ensure_future(self._request(params, stream))
        while not task.done():
            if self.cancel.is_set():
                task.cancel()
                await asyncio.wait({task}, timeout=CLOSE_GRACE_S)
                raise Cancelled("cancelled during a model request")
            await asyncio.wait({task}, timeout=POLL_S)
        return task.result()

    async def _request(self, params: dict[str, Any], stream: bool) -> Any:
        if not stream:
            return await self._client.messages.create(**params)
        async with self._client.messages.stream(**params) as events:
            return await events.get_final_message()

    def _explain(self, status: int | None, reason: str, elapsed: float, attempts: int) -> str:
        where = self.endpoint.base_url or "api.anthropic.com"
        span = duration(elapsed)
        if status is None:
            return (f"the model provider at {where} could not be reached for {span} "
                    f"({attempts} attempts; last: {reason}); check agent.base_url and the "
                    f"runner's network, or try again later")
        return (f"the model provider answered {status} for {span} ({attempts} attempts; "
                f"last: {reason}); try again later (agent.outage_timeout bounds the wait)")


def duration(seconds: float) -> str:
    """``42 s``, ``15 min``, ``1 h 5 min``: a wait as a person says it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def error_type(exc: anthropic.APIStatusError) -> str:
    """The API's error type (``overloaded_error``...), or ``error``."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else body
    return str((error or {}).get("type") or "error")


def error_message(exc: anthropic.APIStatusError, limit: int = 500) -> str:
    """The API's error message, cut to ``limit`` characters."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else body
    text = str((error or {}).get("message") or exc.message)
    return text if len(text) <= limit else text[:limit] + "..."


def retryable(exc: anthropic.APIStatusError) -> bool:
    """An answer that means "try again later" rather than "this request is wrong"."""
    # An error event inside a 200 stream carries the real cause only in its body.
    return exc.status_code in RETRY_STATUSES or exc.status_code >= 500 or \
        error_type(exc) in RETRY_ERROR_TYPES


def retry_after(headers: Any) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, retry-after as seconds or date)."""
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None
