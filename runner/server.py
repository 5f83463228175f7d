"""The HTTP face of ``orchestrator serve``: webhooks, the control API, metrics, the dashboard.

Webhooks are verified and answered 202 before any work: they only put an issue key on the
controller's queue. The API and ``/metrics`` need the bearer token named by
``server.api_token_env`` (or the dashboard's session cookie, see ``webauth``); the API is
described by ``/openapi.json``. The dashboard's pages live in ``webpages``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner import eventstream, openapi
from runner.forge import webhooks
from runner.forge.base import ForgeError
from runner.forge.base import NotFound as ForgeNotFound
from runner.forge.budget import metric_lines as forge_metric_lines
from runner.metrics import CONTENT_TYPE, Metrics
from runner.model import ACTIVE, RunState, is_run_id
from runner.store.base import RunFinished, RunNotFound, StoreError
from runner.store.base import kill_all as kill_every_run
from runner.text import UnreadableText
from runner.webauth import Auth, Caller
from runner.webpages import Pages

if TYPE_CHECKING:
    from runner.wiring import Runner

log = logging.getLogger("orchestrator.server")

MAX_BODY = webhooks.MAX_BODY
# Pull-request events that say nothing a reviewer did (the runner's own opening and pushes).
_QUIET_PULL_ACTIONS = frozenset({"opened", "synchronize", "synchronized", "edited",
                                 "ready_for_review", "converted_to_draft"})
MAX_ISSUE = 2**31 - 1
MAX_SEQ = 2**53


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Api:
    """Route handlers bound to one wired runner."""

    def __init__(self, runner: Runner, metrics: Metrics | None = None) -> None:
        self.runner = runner
        self.store = runner.store
        self.settings = runner.settings
        self.deliveries = webhooks.DeliveryDedup()
        self.auth = Auth(self.settings.server.api_token_env)
        self.metrics = metrics or Metrics()
        self.closing = threading.Event()  # set on shutdown: live streams end

    def close(self) -> None:
        """End live streams and stop following the bus for metrics."""
        self.closing.set()
        self.metrics.stop()

    # ------------------------------------------------------------ webhooks

    def _secrets(self, kind: str) -> list[str]:
        return [os.environ.get(f.webhook_secret_env, "") for f in self.settings.forges.values()
                if f.kind == kind and f.webhook_secret_env]

    async def webhook(self, request: Request) -> Response:
        kind: webhooks.ForgeKind = request.path_params["forge"]
        if kind not in ("github", "forgejo"):
            self.metrics.webhook_delivery("unknown", "unknown_forge")
            return _error(404, f"no webhook endpoint for {kind!r} (github or forgejo)")
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY:
            self.metrics.webhook_delivery(kind, "too_large")
            return _error(413, f"body over {MAX_BODY} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                self.metrics.webhook_delivery(kind, "too_large")
                return _error(413, f"body over {MAX_BODY} bytes")
        # Each forge of this kind may have its own secret: the first that verifies wins.
        result = webhooks.WebhookResult(401, f"no webhook secret is configured for {kind} "
                                             "forges (set webhook_secret_env)")
        for secret in [s for s in self._secrets(kind) if s]:
            result = webhooks.handle_delivery(request.headers, body, secret,
                                              seen=self.deliveries, expect=kind)
            if result.status != 401:
                break
        event = result.event
        if event is not None and event.kind == "push" and event.branch:
            try:
                self.settings.repo(event.repo)
            except KeyError:
                self.metrics.webhook_delivery(kind, "unconfigured")
                return JSONResponse({"ignored": f"{event.repo} is not configured"},
                                    status_code=202)
            # The base moved: the runner's open PRs into it may conflict now.
            await run_in_threadpool(self.runner.controller.enqueue_base, event.repo,
                                    event.branch)
        elif event is not None and (event.number is not None or event.kind == "ci"):
            try:
                self.settings.repo(event.repo)
            except KeyError:
                self.metrics.webhook_delivery(kind, "unconfigured")
                return JSONResponse({"ignored": f"{event.repo} is not configured"},
                                    status_code=202)
            if event.kind == "review" or (event.kind == "comment" and event.on_pull) or (
                    event.kind == "pull" and event.action not in _QUIET_PULL_ACTIONS):
                # Reviews, PR comments, a PR labelled, closed or merged: they concern the
                # issue whose run opened the PR; a PR number is never taken for an issue.
                # handle_delivery sets a number on every review and PR comment event
                assert event.number is not None  # noqa: S101
                await run_in_threadpool(self.runner.controller.enqueue_pull, event.repo,
                                        event.number)
            if event.kind in ("ci", "pull"):
                # Concerns a run (by head SHA, branch or PR), never an issue of that number.
                # Only news can move a waiting run: a CI job that finished, a PR closed or
                # reopened by someone (the runner's own opening or push says nothing new).
                if (event.finished if event.kind == "ci"
                        else event.action in ("closed", "reopened")):
                    await run_in_threadpool(
                        self.runner.controller.wake_runs, event.repo, sha=event.sha,
                        branch=event.branch,
                        pull=event.number if event.kind == "pull" else None)
            elif not (event.kind == "review" or event.on_pull):
                # handle_delivery sets a number on every issue and comment event
                assert event.number is not None  # noqa: S101
                self.metrics.webhook_accepted(event.repo, event.number)
                if event.issue_body is not None:  # before the look it leads to
                    self.runner.controller.witnesses.saw(event.repo, event.number, event.actor,
                                                         event.action, event.issue_title or "",
                                                         event.issue_body)
                self.runner.controller.enqueue(event.repo, event.number)
        self.metrics.webhook_delivery(kind, _delivery_result(result.status, event is not None))
        return JSONResponse({"message": result.message}, status_code=result.status)

    # ------------------------------------------------------------ API

    def guarded(self, handler: Callable[[Request, str], Awaitable[Response]]
                ) -> Callable[[Request], Awaitable[Response]]:
        """Run ``handler`` with the caller's audit name; 401 without the token, 403 for a
        dashboard state change without the CSRF header or from another origin."""
        async def wrapper(request: Request) -> Response:
            caller: Caller | None = self.auth.caller(request)
            if caller is None:
                if not self.auth.configured():
                    return _error(401, f"no API token is configured: set "
                                       f"${self.settings.server.api_token_env} and restart")
                return _error(401, "missing or wrong bearer token (Authorization: Bearer "
                                   f"${self.settings.server.api_token_env})")
            problem = self.auth.csrf_problem(request, caller)
            if problem:
                return _error(403, problem)
            try:
                return await handler(request, caller.actor)
            except RunNotFound as exc:
                return _error(404, str(exc))
            except RunFinished as exc:
                return _error(409, str(exc))
            except StoreError as exc:
                return _error(503, str(exc))
        return wrapper

    async def healthz(self, request: Request) -> Response:
        """Healthy or not, for anyone (a probe); the details (worker, runs, queue, slots, the
        store's error) only with the API token: run ids and host names are not public."""
        trusted = self.auth.caller(request) is not None
        try:
            await run_in_threadpool(self.store.ping)
        except StoreError as exc:
            return JSONResponse({"ok": False, **({"store": str(exc)} if trusted else {})},
                                status_code=503)
        if not trusted:
            return JSONResponse({"ok": True})
        status = await run_in_threadpool(self.runner.controller.status)
        return JSONResponse({"ok": True, **status})

    async def list_runs(self, request: Request, actor: str) -> Response:
        state = request.query_params.get("state")
        states = None
        if state == "active":
            states = ACTIVE
        elif state:
            try:
                states = frozenset({RunState(state)})
            except ValueError:
                return _error(400, f"unknown state {state!r}")
        runs = await run_in_threadpool(self.store.list_runs, states=states,
                                       repo=request.query_params.get("repo"), limit=200)
        return JSONResponse([r.to_dict() for r in runs])

    async def get_run(self, request: Request, actor: str) -> Response:
        run_id = request.path_params["run_id"]
        if not is_run_id(run_id):
            raise RunNotFound(run_id)
        run = await run_in_threadpool(self.store.get_run, run_id)
        return JSONResponse(run.to_dict())

    async def events(self, request: Request, actor: str) -> Response:
        run_id = request.path_params["run_id"]
        if not is_run_id(run_id):
            raise RunNotFound(run_id)
        await run_in_threadpool(self.store.get_run, run_id)
        if "text/event-stream" in request.headers.get("accept", ""):
            return eventstream.response(eventstream.follow(
                self.store, run_id, eventstream.start_after(request), eventstream.json_render,
                self.closing))
        try:
            after = int(request.query_params.get("after", "0"))
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            return _error(400, "after and limit are whole numbers")
        if not 0 <= after <= MAX_SEQ or not 1 <= limit <= 1000:
            return _error(400, "after must be 0 or more and limit between 1 and 1000")
        events = await run_in_threadpool(self.store.events, run_id, after=after, limit=limit)
        return JSONResponse([e.to_dict() for e in events])

    async def _reason(self, request: Request) -> str:
        try:
            data = await request.json()
        except ValueError:
            data = {}
        reason = data.get("reason") if isinstance(data, dict) else None
        return str(reason or "killed through the API").strip()[:500] or "killed through the API"

    async def kill(self, request: Request, actor: str) -> Response:
        run_id = request.path_params["run_id"]
        if not is_run_id(run_id):
            raise RunNotFound(run_id)
        reason = await self._reason(request)
        kill = await run_in_threadpool(self.store.request_kill, run_id, actor=actor,
                                       reason=reason)
        return JSONResponse({"run": run_id, "actor": kill.actor, "reason": kill.reason},
                            status_code=202)

    async def kill_all(self, request: Request, actor: str) -> Response:
        reason = await self._reason(request)

        killed = await run_in_threadpool(kill_every_run, self.store, actor=actor,
                                         reason=reason)
        return JSONResponse({"killed": killed, "paused": True}, status_code=202)

    async def resume(self, request: Request, actor: str) -> Response:
        await run_in_threadpool(self.store.resume, actor=actor)
        return JSONResponse({"paused": False})

    async def dispatch(self, request: Request, actor: str) -> Response:
        usage = 'body must be {"repo": "owner/name", "issue": N} with 1 <= N < 2**31'
        try:
            data = await request.json()
            repo, issue = data["repo"], data["issue"]
        except (ValueError, KeyError, TypeError):
            return _error(400, usage)
        if not isinstance(repo, str) or isinstance(issue, bool) or not isinstance(issue, int) \
                or not 1 <= issue <= MAX_ISSUE:
            return _error(400, usage)
        try:
            self.settings.repo(repo)
        except KeyError:
            return _error(404, f"{repo} is not configured")
        try:
            run = await run_in_threadpool(self.runner.controller.dispatch, repo, issue, actor)
        except ForgeNotFound:
            return _error(404, f"{repo} has no issue #{issue}")
        except ForgeError as exc:
            return _error(502, f"the forge failed: {exc}")
        except UnreadableText as exc:
            return _error(422, str(exc))
        return JSONResponse(run.to_dict(), status_code=201)

    async def metrics_text(self, request: Request, actor: str) -> Response:
        text = await run_in_threadpool(self.metrics.render, self.store)
        budget = forge_metric_lines(self.runner.forges)  # requests, 304s, budget, waits
        if budget:
            text += "\n".join(budget) + "\n"
        return Response(text, media_type=CONTENT_TYPE)

    async def openapi_json(self, request: Request) -> Response:
        return JSONResponse(openapi.document())


def _delivery_result(status: int, accepted: bool) -> str:
    """A webhook delivery's outcome as the metrics label."""
    if status == 202:
        return "accepted" if accepted else "ignored"
    return {200: "duplicate", 400: "invalid", 401: "rejected", 413: "too_large"}.get(
        status, str(status))


def create_app(runner: Runner, metrics: Metrics | None = None) -> Starlette:
    """The Starlette application for one wired runner (``app.state.api`` is its ``Api``)."""
    api = Api(runner, metrics)
    pages = Pages(runner, api.auth, api.closing)
    routes = [
        Route("/webhooks/{forge}", api.webhook, methods=["POST"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/openapi.json", api.openapi_json, methods=["GET"]),
        Route("/metrics", api.guarded(api.metrics_text), methods=["GET"]),
        Route("/api/runs", api.guarded(api.list_runs), methods=["GET"]),
        Route("/api/runs", api.guarded(api.dispatch), methods=["POST"]),
        Route("/api/runs/{run_id}", api.guarded(api.get_run), methods=["GET"]),
        Route("/api/runs/{run_id}/events", api.guarded(api.events), methods=["GET"]),
        Route("/api/runs/{run_id}/kill", api.guarded(api.kill), methods=["POST"]),
        Route("/api/kill-all", api.guarded(api.kill_all), methods=["POST"]),
        Route("/api/resume", api.guarded(api.resume), methods=["POST"]),
        *pages.routes(),
    ]
    app = Starlette(routes=routes)
    app.state.api = api
    return app


@dataclass
class ServerHandle:
    """A server running in a thread; ``stop()`` ends it."""

    host: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread
    on_stop: list[Callable[[], None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        for callback in self.on_stop:
            callback()
        self.server.should_exit = True
        self.thread.join(5)


def serve_in_thread(runner: Runner, host: str, port: int) -> ServerHandle:
    """Serve the app in a background thread; returns once it listens (port 0: any free one)."""
    app = create_app(runner)
    api: Api = app.state.api
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="orchestrator-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise OSError(f"cannot listen on {host}:{port} (in use? set server.port)")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    api.metrics.follow(runner.store)
    return ServerHandle(host, int(bound), server, thread, [api.close])

