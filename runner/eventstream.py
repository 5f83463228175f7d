"""A run's audit events as a Server-Sent Events stream, for the API and the dashboard.

The stream reads the store (so it works the same with SQLite and Redis, and whichever
process owns the run): first the events after ``after``, then new ones as they are
recorded. Each SSE message has ``id: <seq>``, so a reconnecting ``EventSource`` resumes
where it stopped (``Last-Event-ID``). When the run has ended and nothing new arrived for a
short grace period, an ``end`` message says its final state and the stream closes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import StreamingResponse

from runner.model import Event
from runner.store.base import Store, StoreError

POLL_S = 0.25
END_GRACE_S = 2.0
KEEPALIVE_S = 15.0

# (SSE event name, one-line data) for one audit event
Render = Callable[[Event], tuple[str, str]]


def start_after(request: Request) -> int:
    """Where to start: the larger of ``?after=`` and the ``Last-Event-ID`` header."""
    values = [request.query_params.get("after", "0"), request.headers.get("last-event-id", "0")]
    return max((int(v) for v in values if v.isdigit() and len(v) < 12), default=0)


async def follow(store: Store, run_id: str, after: int, render: Render,
                 closing: threading.Event) -> AsyncIterator[str]:
    """SSE text for the run's events after ``after``, live, until the run is over."""
    last, quiet_since, sent_at = after, 0.0, time.monotonic()
    yield "retry: 2000\n\n"
    while not closing.is_set():
        try:
            events = await run_in_threadpool(store.events, run_id, after=last, limit=200)
            run = None if events else await run_in_threadpool(store.get_run, run_id)
        except StoreError as exc:
            yield f"event: error\ndata: {json.dumps({'error': str(exc)})}\n\n"
            return
        for event in events:
            name, data = render(event)
            yield f"id: {event.seq}\nevent: {name}\ndata: {data}\n\n"
            last = event.seq
        now = time.monotonic()
        if events:
            quiet_since, sent_at = 0.0, now
            continue
        if run is not None and run.terminal:
            quiet_since = quiet_since or now
            if now - quiet_since >= END_GRACE_S:
                yield f"event: end\ndata: {json.dumps({'state': str(run.state)})}\n\n"
                return
        if now - sent_at >= KEEPALIVE_S:
            yield ": keepalive\n\n"
            sent_at = now
        await asyncio.sleep(POLL_S)


def response(stream: AsyncIterator[str]) -> StreamingResponse:
    """An SSE response that proxies do not buffer."""
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def json_render(event: Event) -> tuple[str, str]:
    """The API's rendering: the event as JSON."""
    return "event", json.dumps(event.to_dict(), default=str)
