"""The model gateway: how a command agent reaches its model without holding the key.

One gateway serves one run of a command agent, for as long as that run's agent works::

    agent in the container -> 127.0.0.1:<port> (forwarder.py, in the container)
        -> unix socket, bind-mounted into the container -> this gateway, in the runner
        -> the provider (Messages API; an OpenAI-compatible API when configured), with the key

The container keeps ``network: none``: its only way out is the socket of its own run's
gateway, a file in a directory mounted for that sandbox alone (see ``runner.sandbox.docker``).
No host, no port of the runner, no forge is reachable; nothing depends on firewall rules, and
gVisor's ``--network=none`` does not stand in the way. The agent gets a base URL and a
per-run credential (``token``) that only this gateway accepts and that dies with it; the
gateway checks it in constant time, puts the real key in its place, and meters each reply
(``runner.agent.meter``): a request over a cap is refused with a clear error and the run stops.
``close`` removes the socket and closes every connection, both ways, at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from runner.agent.meter import EventSink, Meter, Provider, Reading, Refusal, ReplyReader

log = logging.getLogger(__name__)

ANTHROPIC_URL = "https://api.anthropic.com"
MAX_BODY = 32 * 1024 * 1024  # bytes of one request; a conversation is far smaller
# (method, path under the provider's root) -> whether the request is a metered model turn.
ANTHROPIC_ROUTES = {("POST", "v1/messages"): True, ("POST", "v1/messages/count_tokens"): False,
                    ("GET", "v1/models"): False}
OPENAI_ROUTES = {("POST", "chat/completions"): True, ("POST", "responses"): True,
                 ("GET", "models"): False}
# Never forwarded: the hop's own headers, the agent's credential, and anything that could
# choose whose account pays.
_DROP_REQUEST = frozenset({
    "host", "content-length", "connection", "keep-alive", "transfer-encoding", "te",
    "trailer", "upgrade", "proxy-authorization", "proxy-connection", "authorization",
    "x-api-key", "cookie", "accept-encoding", "openai-organization", "openai-project"})
_DROP_RESPONSE = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer",
                            "upgrade", "set-cookie", "content-length"})
MAX_REFUSAL_EVENTS = 10  # bad-credential attempts audited per gateway


@dataclass(frozen=True)
class Upstream:
    """A provider the gateway forwards to: its API root and the key it adds."""

    provider: Provider
    base_url: str
    key: str


class Gateway:
    """One run's model gateway (see the module docstring). ``start``, then ``close``."""

    def __init__(self, anthropic: Upstream, meter: Meter, emit: EventSink, *,
                 openai: Upstream | None = None, verify: Any = True) -> None:
        self.upstreams: dict[Provider, Upstream] = {"anthropic": anthropic}
        if openai is not None:
            self.upstreams["openai"] = openai
        self.meter = meter
        self.emit = emit
        self.verify = verify
        self.token = "orch-gw-" + secrets.token_urlsafe(32)
        self.socket_path: Path | None = None
        self.closed = False
        self.refusals = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._open: set[httpx.Response] = set()
        self._sending: set[asyncio.Task[Any]] = set()  # requests waiting for the provider

    # -------------------------------------------------------------- lifetime

    def start(self, directory: Path) -> Path:
        """Serve on a new socket in ``directory`` (the sandbox's channel); its path."""
        path = directory / f"gw-{secrets.token_hex(6)}.sock"
        sock = _bind_unix(path)
        app = Starlette(routes=[
            Route("/healthz", self._health, methods=["GET"]),
            Route("/v1/{path:path}", self._anthropic, methods=["GET", "POST"]),
            Route("/openai/v1/{path:path}", self._openai, methods=["GET", "POST"]),
        ])
        config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False,
                                timeout_graceful_shutdown=0)
        self._server = server = uvicorn.Server(config)
        started = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=15.0),
                                             verify=self.verify)
            started.set()
            try:
                loop.run_until_complete(server.serve(sockets=[sock]))
            finally:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(self._client.aclose())
                loop.close()

        self._thread = threading.Thread(target=serve, name="model-gateway", daemon=True)
        self._thread.start()
        started.wait(10)
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                sock.close()
                raise RuntimeError("the model gateway did not start within 10 s")
            time.sleep(0.01)
        self.socket_path = path
        return path

    def close(self) -> None:
        """Stop at once: the socket goes, open connections (to the agent and to the
        provider) are closed, and the credential is refused from now on. Safe to call twice."""
        self.closed = True
        if self.socket_path is not None:
            with contextlib.suppress(OSError):
                self.socket_path.unlink()
        loop, server = self._loop, self._server
        if loop is not None and server is not None and not loop.is_closed():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(server), loop).result(2)
        # Everything is cut already; the server's thread winds down on its own (a tick).
        self._server = self._thread = None

    async def _shutdown(self, server: uvicorn.Server) -> None:
        for task in list(self._sending):  # a reply not begun yet: its request is dropped
            task.cancel()
        for response in list(self._open):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(response.aclose(), 0.5)
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()
        server.should_exit = True
        server.force_exit = True

    # -------------------------------------------------------------- HTTP

    async def _health(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def _anthropic(self, request: Request) -> Response:
        path = "v1/" + request.path_params["path"]
        return await self._forward(request, "anthropic", path, ANTHROPIC_ROUTES)

    async def _openai(self, request: Request) -> Response:
        if "openai" not in self.upstreams:
            return _error("openai", Refusal(404, "not_found_error", (
                "orchestrator gateway: no OpenAI-compatible API is configured for this run "
                "(agent.gateway.openai_base_url)")))
        return await self._forward(request, "openai", request.path_params["path"],
                                   OPENAI_ROUTES)

    def _authorised(self, request: Request) -> bool:
        bearer = request.headers.get("authorization", "")
        sent = request.headers.get("x-api-key") or (
            bearer[7:] if bearer[:7].lower() == "bearer " else "")
        return not self.closed and hmac.compare_digest(sent.encode(), self.token.encode())

    async def _forward(self, request: Request, provider: Provider, path: str,
                       routes: dict[tuple[str, str], bool]) -> Response:
        if not self._authorised(request):
            self.refusals += 1
            if self.refusals <= MAX_REFUSAL_EVENTS:
                self.emit("agent.gateway", {"refused": "credential", "path": f"/{path}"})
            return _error(provider, Refusal(401, "authentication_error", (
                "orchestrator gateway: this credential is not valid for this run; use the "
                "key the runner put in the agent's environment")))
        route = (request.method, path)
        if route not in routes:
            allowed = ", ".join(f"{m} /{p}" for m, p in routes)
            return _error(provider, Refusal(404, "not_found_error", (
                f"orchestrator gateway: {request.method} /{path} is not forwarded; it "
                f"forwards {allowed}")))
        metered = routes[route]
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error(provider, Refusal(413, "request_too_large",
                                            "orchestrator gateway: the request is too large"))
        model, stream = "", False
        if metered:
            parsed = _json_object(body)
            if parsed is None:
                return _error(provider, Refusal(400, "invalid_request_error",
                                                "the request body must be a JSON object"))
            model, stream = str(parsed.get("model", "")), bool(parsed.get("stream"))
            if provider == "openai" and stream and path == "chat/completions":
                # Usage reaches a chat stream only when asked for; the gateway always asks.
                options = parsed.get("stream_options")
                parsed["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                            "include_usage": True}
                body = json.dumps(parsed).encode()
            refusal = self.meter.admit(model)
            if refusal is not None:
                return _error(provider, refusal)
        return await self._send(request, provider, path, body, model if metered else None,
                                stream)

    async def _send(self, request: Request, provider: Provider, path: str, body: bytes,
                    model: str | None, stream: bool) -> Response:
        upstream = self.upstreams[provider]
        url = f"{upstream.base_url.rstrip('/')}/{path}"
        if request.url.query:
            url += f"?{request.url.query}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
        headers["accept-encoding"] = "identity"  # the meter reads the bytes as they pass
        if provider == "anthropic":
            headers["x-api-key"] = upstream.key
        else:
            headers["authorization"] = f"Bearer {upstream.key}"
        started = time.monotonic()
        assert self._client is not None  # started before any request is served  # noqa: S101
        task = asyncio.current_task()
        if task is not None:
            self._sending.add(task)
        try:
            outgoing = self._client.build_request(request.method, url, headers=headers,
                                                  content=body)
            response = await self._client.send(outgoing, stream=True)
        except asyncio.CancelledError:  # the gateway is closing: the run has ended
            if model is not None:
                self.meter.record(model, 499, Reading(), provider=provider, stream=stream,
                                  seconds=time.monotonic() - started)
            return _error(provider, Refusal(503, "api_error",
                                            "orchestrator gateway: the run has ended"))
        except httpx.HTTPError as exc:
            if model is not None:
                self.meter.record(model, 502, Reading(), provider=provider, stream=stream,
                                  seconds=time.monotonic() - started)
            host = httpx.URL(upstream.base_url).host
            return _error(provider, Refusal(502, "api_error", (
                f"orchestrator gateway: cannot reach the {provider} API at {host} "
                f"({type(exc).__name__})")))
        finally:
            if task is not None:
                self._sending.discard(task)
        self._open.add(response)
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        reader = ReplyReader(provider, streaming) if model is not None else None

        async def relay() -> Any:
            try:
                async for chunk in response.aiter_raw():
                    if reader is not None:
                        reader.feed(chunk)
                    yield chunk
            finally:
                self._open.discard(response)
                with contextlib.suppress(Exception):
                    await response.aclose()
                if reader is not None and model is not None:
                    self.meter.record(model, response.status_code, reader.finish(),
                                      provider=provider, stream=stream,
                                      seconds=time.monotonic() - started)

        out_headers = {k: v for k, v in response.headers.items()
                       if k.lower() not in _DROP_RESPONSE}
        return StreamingResponse(relay(), status_code=response.status_code,
                                 headers=out_headers)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _error(provider: Provider, refusal: Refusal) -> JSONResponse:
    """A refusal in the provider's own error shape, so the agent's SDK shows the message."""
    if provider == "anthropic":
        body: dict[str, Any] = {"type": "error", "error": {"type": refusal.kind,
                                                           "message": refusal.message}}
    else:
        body = {"error": {"message": refusal.message, "type": refusal.kind,
                          "code": refusal.kind}}
    return JSONResponse(body, status_code=refusal.status)


def _bind_unix(path: Path) -> socket.socket:
    """A listening unix socket at ``path``, connectable by the sandbox's user.

    A socket path may hold at most 107 bytes; a deep data directory is reached through the
    directory's descriptor (``/proc/self/fd/N/name``) instead.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(path)) < 100:
            sock.bind(str(path))
        else:
            fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                sock.bind(f"/proc/self/fd/{fd}/{path.name}")
            finally:
                os.close(fd)
        os.chmod(path, 0o666)  # the sandbox runs as another uid; the token guards the door  # noqa: S103
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
