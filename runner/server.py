"""The HTTP face of ``orchestrator serve``: webhooks, the control API, health.

Webhooks are verified and answered 202 before any work: they only put an issue key on the
controller's queue. The API needs the bearer token named by ``server.api_token_env``.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.forge import webhooks
from runner.model import ACTIVE, RunState, is_run_id
from runner.store.base import RunFinished, RunNotFound, StoreError

if TYPE_CHECKING:
    from runner.wiring import Runner

log = logging.getLogger("orchestrator.server")

MAX_BODY = webhooks.MAX_BODY


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Api:
    """Route handlers bound to one wired runner."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.store = runner.store
        self.settings = runner.settings
        self.deliveries = webhooks.DeliveryDedup()

    # ------------------------------------------------------------ webhooks

    def _secrets(self, kind: str) -> list[str]:
        return [os.environ.get(f.webhook_secret_env, "") for f in self.settings.forges.values()
                if f.kind == kind and f.webhook_secret_env]

    async def webhook(self, request: Request) -> Response:
        kind: webhooks.ForgeKind = request.path_params["forge"]
        if kind not in ("github", "forgejo"):
            return _error(404, f"no webhook endpoint for {kind!r} (github or forgejo)")
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY:
            return _error(413, f"body over {MAX_BODY} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
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
        if event is not None and event.number is not None:
            try:
                self.settings.repo(event.repo)
            except KeyError:
                return JSONResponse({"ignored": f"{event.repo} is not configured"},
                                    status_code=202)
            self.runner.controller.enqueue(event.repo, event.number)
        return JSONResponse({"message": result.message}, status_code=result.status)

    # ------------------------------------------------------------ API

    def _authorised(self, request: Request) -> str | None:
        """The token's name when the request carries the API token, else None."""
        expected = os.environ.get(self.settings.server.api_token_env, "")
        given = request.headers.get("authorization", "")
        if not expected or not given.lower().startswith("bearer "):
            return None
        if hmac.compare_digest(given[7:].strip().encode(), expected.encode()):
            return f"api:{self.settings.server.api_token_env.lower()}"
        return None

    def guarded(self, handler: Callable[[Request, str], Awaitable[Response]]
                ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapper(request: Request) -> Response:
            actor = self._authorised(request)
            if actor is None:
                return _error(401, "missing or wrong bearer token (Authorization: Bearer "
                                   f"${self.settings.server.api_token_env})")
            try:
                return await handler(request, actor)
            except RunNotFound as exc:
                return _error(404, str(exc))
            except RunFinished as exc:
                return _error(409, str(exc))
            except StoreError as exc:
                return _error(503, str(exc))
        return wrapper

    async def healthz(self, request: Request) -> Response:
        try:
            await run_in_threadpool(self.store.ping)
        except StoreError as exc:
            return JSONResponse({"ok": False, "store": str(exc)}, status_code=503)
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
        try:
            after = int(request.query_params.get("after", "0"))
            limit = min(int(request.query_params.get("limit", "100")), 1000)
        except ValueError:
            return _error(400, "after and limit are whole numbers")
        events = await run_in_threadpool(self.store.events, run_id, after=after, limit=limit)
        return JSONResponse([e.to_dict() for e in events])

    async def _reason(self, request: Request) -> str:
        try:
            data = await request.json()
        except ValueError:
            data = {}
        reason = data.get("reason") if isinstance(data, dict) else None
        return str(reason or "killed through the API")[:500]

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

        def work() -> list[str]:
            self.store.pause(actor=actor, reason=reason)
            killed = []
            for run in self.store.list_runs(states=ACTIVE, limit=100000):
                try:
                    self.store.request_kill(run.id, actor=actor, reason=reason)
                    killed.append(run.id)
                except RunFinished:
                    pass
            return killed

        killed = await run_in_threadpool(work)
        return JSONResponse({"killed": killed, "paused": True}, status_code=202)

    async def resume(self, request: Request, actor: str) -> Response:
        await run_in_threadpool(self.store.resume, actor=actor)
        return JSONResponse({"paused": False})

    async def dispatch(self, request: Request, actor: str) -> Response:
        try:
            data = await request.json()
            repo, issue = str(data["repo"]), int(data["issue"])
        except (ValueError, KeyError, TypeError):
            return _error(400, 'body must be {"repo": "owner/name", "issue": N}')
        try:
            self.settings.repo(repo)
        except KeyError:
            return _error(404, f"{repo} is not configured")
        run = await run_in_threadpool(self.runner.controller.dispatch, repo, issue, actor)
        return JSONResponse(run.to_dict(), status_code=201)


def create_app(runner: Runner) -> Starlette:
    """The Starlette application for one wired runner."""
    api = Api(runner)
    routes = [
        Route("/webhooks/{forge}", api.webhook, methods=["POST"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/api/runs", api.guarded(api.list_runs), methods=["GET"]),
        Route("/api/runs", api.guarded(api.dispatch), methods=["POST"]),
        Route("/api/runs/{run_id}", api.guarded(api.get_run), methods=["GET"]),
        Route("/api/runs/{run_id}/events", api.guarded(api.events), methods=["GET"]),
        Route("/api/runs/{run_id}/kill", api.guarded(api.kill), methods=["POST"]),
        Route("/api/kill-all", api.guarded(api.kill_all), methods=["POST"]),
        Route("/api/resume", api.guarded(api.resume), methods=["POST"]),
    ]
    return Starlette(routes=routes)


@dataclass
class ServerHandle:
    host: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


def serve_in_thread(runner: Runner, host: str, port: int) -> ServerHandle:
    """Serve the app in a background thread; returns once it listens (port 0: any free one)."""
    config = uvicorn.Config(create_app(runner), host=host, port=port, log_level="warning",
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
    return ServerHandle(host, int(bound), server, thread)

