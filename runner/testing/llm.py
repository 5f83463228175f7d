"""An emulator of the Anthropic Messages API, served over loopback HTTP.

No model can be reached from our machines, so tests and ``orchestrator demo`` talk to this
instead, through the real anthropic SDK::

    def policy(req: Request) -> Reply:
        if "reviewer" in req.system:
            return Reply.text('{"verdict": "approve"}')
        return Script([Reply.bash("pytest -q"), Reply.finish("done")])(req)

    with LLMEmulator(policy=policy) as llm:
        client = anthropic.Anthropic(base_url=llm.base_url, api_key=llm.api_key)

What it speaks: ``POST /v1/messages`` as JSON and as an SSE stream (message_start,
content_block_start/delta/stop, message_delta, message_stop), ``POST
/v1/messages/count_tokens``, tool_use and tool_result, stop reasons, the key checked
(``x-api-key`` or bearer), errors in the API's shape (``llm.fail(429, retry_after=1)``,
529, 500), an outage (``llm.fail_for(180, 529)``: every request refused for 3 minutes) and
slow replies.

Usage figures follow the real prompt cache: the request is a sequence of blocks (each tool,
each system block, each message content block); a block's tokens are ``ceil(len(json)/4)``
of its JSON without ``cache_control``. Each ``cache_control`` breakpoint writes the prefix up
to it to the cache (when the prefix has at least ``min_cache_tokens``); a later request reads
the longest cached prefix found at one of its breakpoints or up to 20 blocks before one. So
``cache_read_input_tokens`` + ``cache_creation_input_tokens`` + ``input_tokens`` is the whole
prompt, as with the real API.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

DEFAULT_KEY = "sk-emulator-key"
LOOKBACK_BLOCKS = 20  # the real cache checks this many blocks before each breakpoint
MAX_BREAKPOINTS = 4
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


def count_tokens(value: Any) -> int:
    """The emulator's token estimate of one block: a quarter of its JSON length, rounded up."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True,
                                                          separators=(",", ":"))
    return max(1, math.ceil(len(text) / 4))


# ---------------------------------------------------------------- what a policy sees and says


@dataclass(frozen=True)
class Request:
    """One Messages API request as a policy sees it."""

    body: dict[str, Any]
    headers: dict[str, str]  # without the API key

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def system(self) -> str:
        """The system prompt as one string (block texts joined)."""
        system = self.body.get("system") or ""
        if isinstance(system, str):
            return system
        return "\n".join(str(b.get("text", "")) for b in system if isinstance(b, dict))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def turn(self) -> int:
        """How many assistant replies the conversation already holds (0 on the first call).

        A retried request has the same turn, so a script answers it the same way.
        """
        return sum(1 for m in self.messages if m.get("role") == "assistant")

    @property
    def tools(self) -> list[str]:
        return [str(t.get("name")) for t in self.body.get("tools") or []]

    def first_user_text(self) -> str:
        """The text of the first user message (the task, for an agent)."""
        for message in self.messages:
            if message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""

    def tool_results(self) -> list[dict[str, Any]]:
        """The tool_result blocks of the last user message."""
        if not self.messages:
            return []
        content = self.messages[-1].get("content")
        if not isinstance(content, list):
            return []
        return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]

    def last_tool_output(self) -> str:
        """The text of the last tool_result sent (empty when there is none)."""
        results = self.tool_results()
        return _text_of(results[-1].get("content")) if results else ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content
                         if isinstance(b, dict) and b.get("type") == "text")
    return ""


@dataclass(frozen=True)
class Reply:
    """What the emulated model answers: content blocks, a stop reason, a delay, or an error.

    ``content`` holds API-shaped blocks: ``{"type": "text", "text": ...}`` and
    ``{"type": "tool_use", "name": ..., "input": {...}}`` (ids are filled in).
    """

    content: tuple[dict[str, Any], ...] = ()
    stop_reason: str | None = None  # default: tool_use when a tool is used, else end_turn
    delay: float = 0.0  # seconds before the response starts
    error_status: int | None = None
    error_message: str = ""
    retry_after: float | None = None

    @staticmethod
    def text(text: str, *, stop_reason: str | None = None, delay: float = 0.0) -> Reply:
        return Reply(({"type": "text", "text": text},), stop_reason=stop_reason, delay=delay)

    @staticmethod
    def tool(name: str, text: str | None = None, delay: float = 0.0, **tool_input: Any
             ) -> Reply:
        """One tool call, with an optional line of text before it."""
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        blocks.append({"type": "tool_use", "name": name, "input": tool_input})
        return Reply(tuple(blocks), delay=delay)

    @staticmethod
    def bash(command: str, text: str | None = None) -> Reply:
        return Reply.tool("bash", text, command=command)

    @staticmethod
    def edit(command: str, path: str, text: str | None = None, **fields: Any) -> Reply:
        return Reply.tool("editor", text, command=command, path=path, **fields)

    @staticmethod
    def finish(summary: str) -> Reply:
        return Reply.tool("finish", summary=summary)

    @staticmethod
    def error(status: int, message: str = "", retry_after: float | None = None) -> Reply:
        return Reply(error_status=status, error_message=message, retry_after=retry_after)


Policy = Callable[[Request], Reply]
Step = Reply | Callable[[Request], Reply]


class Script:
    """A policy that answers turn ``n`` of a conversation with step ``n``.

    A step is a ``Reply`` or a function of the request (to look at the last tool output).
    The turn is counted from the conversation itself, so retries and parallel
    conversations each get the right step. Past the end it answers a 400 saying so.
    """

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)

    def __call__(self, request: Request) -> Reply:
        if request.turn >= len(self.steps):
            return Reply.error(400, f"emulator script exhausted: it has {len(self.steps)} "
                                    f"steps and the conversation asks for turn "
                                    f"{request.turn + 1}")
        step = self.steps[request.turn]
        return step(request) if callable(step) else step


def by_system(routes: dict[str, Policy], default: Policy | None = None) -> Policy:
    """A policy choosing by system prompt: the first route whose key occurs in it.

    Lets one emulator serve the agent and the AI reviewer, each with its own prompt.
    """

    def policy(request: Request) -> Reply:
        for needle, route in routes.items():
            if needle in request.system:
                return route(request)
        if default is None:
            return Reply.error(400, "emulator: no policy matches this system prompt")
        return default(request)

    return policy


def fix_failing_test(*, test_command: str, path: str, old: str, new: str,
                     summary: str = "Fixed the failing test.") -> Script:
    """A script that plays a careful agent fixing one bug.

    Run the tests (they fail), view the file, replace ``old`` with ``new`` in ``path``, run
    the tests again and finish, saying whether they pass now.
    """

    def finish(request: Request) -> Reply:
        output = request.last_tool_output()
        if "[exit code 0]" in output:
            return Reply.finish(f"{summary}.\n\n`{test_command}` passes now.")
        return Reply.finish(f"Tried to fix it, but `{test_command}` still fails:\n"
                            f"{output[-500:]}")

    return Script([
        Reply.bash(test_command, "Let me run the tests first to see what fails."),
        Reply.edit("view", path, "Let me look at the code under test."),
        Reply.edit("str_replace", path, "Found the bug; fixing it.", old_str=old,
                   new_str=new),
        Reply.bash(test_command, "Running the tests again."),
        finish,
    ])


# ---------------------------------------------------------------- the prompt cache


@dataclass
class _Block:
    tokens: int
    digest: str  # of the prefix up to and including this block
    breakpoint: bool


def _blocks(body: dict[str, Any]) -> list[_Block]:
    """The request as the cache sees it: tools, system, then message content, in order."""
    items: list[tuple[str, Any, bool]] = []
    for tool in body.get("tools") or []:
        items.append(("tool", tool, "cache_control" in tool))
    system = body.get("system")
    if isinstance(system, str):
        items.append(("system", system, False))
    elif isinstance(system, list):
        for block in system:
            items.append(("system", block, "cache_control" in block))
    for message in body.get("messages") or []:
        content = message.get("content")
        role = str(message.get("role"))
        if isinstance(content, str):
            items.append((role, {"type": "text", "text": content}, False))
        else:
            for block in content or []:
                items.append((role, block, isinstance(block, dict) and "cache_control" in block))
    out: list[_Block] = []
    running = hashlib.sha256(str(body.get("model")).encode())
    for role, value, marked in items:
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "cache_control"}
        text = json.dumps([role, value], sort_keys=True, separators=(",", ":"))
        running.update(text.encode())
        out.append(_Block(count_tokens(value), running.copy().hexdigest(), marked))
    return out


@dataclass
class CacheUsage:
    input_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int

    @property
    def total(self) -> int:
        return (self.input_tokens + self.cache_read_input_tokens
                + self.cache_creation_input_tokens)


class PromptCache:
    """Prefixes written at cache breakpoints, per API key and model."""

    def __init__(self, min_tokens: int = 1024) -> None:
        self.min_tokens = min_tokens
        self._entries: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def account(self, key: str, body: dict[str, Any]) -> CacheUsage:
        """Usage of one request; writes its breakpoints' prefixes to the cache."""
        blocks = _blocks(body)
        prefix = list(itertools.accumulate(b.tokens for b in blocks))
        total = prefix[-1] if prefix else 0
        marks = [i for i, b in enumerate(blocks) if b.breakpoint]
        with self._lock:
            hit = -1
            for mark in marks:
                for i in range(mark, max(-1, mark - LOOKBACK_BLOCKS - 1), -1):
                    if (key, blocks[i].digest) in self._entries:
                        hit = max(hit, i)
                        break
            writable = [m for m in marks if prefix[m] >= self.min_tokens]
            for mark in writable:
                self._entries.add((key, blocks[mark].digest))
        read = prefix[hit] if hit >= 0 else 0
        cached_to = max(hit, writable[-1] if writable else -1)
        written = (prefix[cached_to] - read) if cached_to >= 0 else 0
        return CacheUsage(total - read - written, read, written)


# ---------------------------------------------------------------- the server


@dataclass
class Exchange:
    """One request the emulator answered (the API key is never recorded)."""

    request: Request
    status: int
    usage: dict[str, int] = field(default_factory=dict)
    stream: bool = False
    aborted: bool = False  # the client hung up before the reply was complete


class LLMEmulator:
    """The Messages API on ``127.0.0.1:<port>``, in a background thread.

    ``policy`` answers each request (a function of ``Request``, e.g. a ``Script``);
    ``script`` is the shorthand for ``policy=Script(script)``. ``fail`` and ``delay`` inject
    faults into the next requests regardless of the policy.
    """

    def __init__(self, policy: Policy | None = None, *, script: Sequence[Step] | None = None,
                 api_key: str = DEFAULT_KEY, min_cache_tokens: int = 1024,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        if policy is None and script is None:
            raise ValueError("LLMEmulator needs a policy or a script")
        self.policy: Policy = policy if policy is not None else Script(script or [])
        self.api_key = api_key
        self.cache = PromptCache(min_cache_tokens)
        self.exchanges: list[Exchange] = []
        self._faults: list[Reply] = []
        self._delays: list[float] = []
        self._outage: tuple[float, Reply] | None = None  # (until, monotonic; the answer)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._host, self._port = host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- control

    @property
    def base_url(self) -> str:
        """The API root to give the SDK (``base_url=``)."""
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        if self._server is None or not self._server.servers:
            raise RuntimeError("the emulator is not running; use `with LLMEmulator(...)`")
        sock = self._server.servers[0].sockets[0]
        return int(sock.getsockname()[1])

    def fail(self, status: int, *, times: int = 1, retry_after: float | None = None,
             message: str = "") -> None:
        """Answer the next ``times`` requests with an API error (429, 529, 500, 400...)."""
        with self._lock:
            self._faults += [Reply.error(status, message, retry_after)] * times

    def fail_for(self, seconds: float, status: int = 529, *, retry_after: float | None = None,
                 message: str = "") -> None:
        """An outage: answer every request with ``status`` (529 overloaded, 429 rate
        limited, 500...) for the next ``seconds``, whatever the policy says."""
        with self._lock:
            self._outage = (time.monotonic() + seconds,
                            Reply.error(status, message or "emulated outage", retry_after))

    def refused(self) -> int:
        """How many requests were answered with an error status (faults, outages, policy)."""
        return sum(1 for e in self.exchanges if e.status >= 400)

    def delay(self, seconds: float, *, times: int = 1) -> None:
        """Make the next ``times`` replies wait ``seconds`` before they start."""
        with self._lock:
            self._delays += [seconds] * times

    def usage_totals(self) -> dict[str, int]:
        """Summed usage of every answered request."""
        totals: dict[str, int] = {}
        for exchange in self.exchanges:
            for name, value in exchange.usage.items():
                totals[name] = totals.get(name, 0) + value
        return totals

    def start(self) -> LLMEmulator:
        """Start serving; returns once the port accepts connections."""
        app = Starlette(routes=[
            Route("/v1/messages", self._messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
        ])
        config = uvicorn.Config(app, host=self._host, port=self._port, log_level="warning",
                                lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="llm-emulator",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the LLM emulator did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving (open connections get a second to finish)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
        self._server, self._thread = None, None

    def __enter__(self) -> LLMEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- HTTP

    def _error(self, status: int, message: str, retry_after: float | None = None
               ) -> JSONResponse:
        headers = {"request-id": f"req_emu_{next(self._ids):06d}"}
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
            headers["retry-after-ms"] = str(int(retry_after * 1000))
        kind = _ERROR_TYPES.get(status, "api_error")
        return JSONResponse({"type": "error", "error": {"type": kind, "message": message}},
                            status_code=status, headers=headers)

    async def _read(self, http: HttpRequest, *, counting: bool = False
                    ) -> tuple[Request | None, Response | None]:
        """The parsed request, or the error response the real API would give."""
        # The SDK sends the key as x-api-key or, in recent versions, as a bearer token.
        bearer = http.headers.get("authorization", "")
        sent = http.headers.get("x-api-key") or (bearer[7:] if bearer[:7].lower() == "bearer "
                                                 else None)
        if sent != self.api_key:
            return None, self._error(401, "invalid x-api-key")
        try:
            body = json.loads(await http.body())
        except ValueError:
            return None, self._error(400, "the request body is not valid JSON")
        if not isinstance(body, dict):
            return None, self._error(400, "the request body must be a JSON object")
        headers = {k: v for k, v in http.headers.items()
                   if k.lower() not in {"x-api-key", "authorization"}}
        problem = _validate(body, counting=counting)
        request = Request(body, headers)
        if problem:
            self.exchanges.append(Exchange(request, 400))
            return None, self._error(400, problem)
        return request, None

    async def _count_tokens(self, http: HttpRequest) -> Response:
        request, error = await self._read(http, counting=True)
        if error is not None or request is None:
            return error or self._error(400, "bad request")
        return JSONResponse({"input_tokens": sum(b.tokens for b in _blocks(request.body))})

    async def _messages(self, http: HttpRequest) -> Response:
        request, error = await self._read(http)
        if error is not None or request is None:
            return error or self._error(400, "bad request")
        with self._lock:
            reply = self._faults.pop(0) if self._faults else None
            delay = self._delays.pop(0) if self._delays else 0.0
            if reply is None and self._outage is not None:
                until, refusal = self._outage
                if time.monotonic() < until:
                    reply = refusal
                else:
                    self._outage = None
        if reply is None:
            try:
                reply = self.policy(request)
            except Exception as exc:  # noqa: BLE001 (a broken policy is the test's bug: say so)
                reply = Reply.error(500, f"emulator policy raised {type(exc).__name__}: {exc}")
        exchange = Exchange(request, reply.error_status or 200,
                            stream=bool(request.body.get("stream")))
        self.exchanges.append(exchange)
        # A slow reply waits before anything is sent, and notices a client that gives up.
        wait = delay + reply.delay
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if await http.is_disconnected():
                exchange.aborted = True
                return Response(status_code=499)
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        if reply.error_status:
            return self._error(reply.error_status, reply.error_message or "emulated error",
                               reply.retry_after)
        message = self._message(request, reply)
        exchange.usage = dict(message["usage"])
        if exchange.stream:
            return StreamingResponse(self._sse(message, exchange), media_type="text/event-stream",
                                     headers={"request-id": f"req_emu_{message['id'][4:]}"})
        return JSONResponse(message, headers={"request-id": f"req_emu_{message['id'][4:]}"})

    def _message(self, request: Request, reply: Reply) -> dict[str, Any]:
        number = next(self._ids)
        content: list[dict[str, Any]] = []
        for i, block in enumerate(reply.content):
            block = dict(block)
            if block.get("type") == "tool_use":
                block.setdefault("id", f"toolu_emu{number:06d}{i:02d}")
                block.setdefault("input", {})
            content.append(block)
        stop = reply.stop_reason or (
            "tool_use" if any(b.get("type") == "tool_use" for b in content) else "end_turn")
        output_tokens = sum(count_tokens(b) for b in content) or 1
        max_tokens = int(request.body.get("max_tokens") or 0)
        if output_tokens > max_tokens:  # the model is cut off: text is cut, tools are dropped
            content = [b for b in content if b.get("type") == "text"]
            for b in content:
                b["text"] = b["text"][: max_tokens * 4]
            output_tokens, stop = max_tokens, "max_tokens"
        usage = self.cache.account(self.api_key, request.body)
        return {
            "id": f"msg_{number:06d}", "type": "message", "role": "assistant",
            "model": request.model, "content": content, "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": output_tokens,
                      "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                      "cache_read_input_tokens": usage.cache_read_input_tokens},
        }

    async def _sse(self, message: dict[str, Any], exchange: Exchange) -> AsyncIterator[bytes]:
        def event(kind: str, data: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None,
                 "usage": {**usage, "output_tokens": 1}}
        try:
            yield event("message_start", {"message": start})
            yield event("ping", {})
            for index, block in enumerate(message["content"]):
                if block["type"] == "text":
                    yield event("content_block_start",
                                {"index": index, "content_block": {"type": "text", "text": ""}})
                    for piece in _chunks(block["text"]):
                        yield event("content_block_delta", {
                            "index": index, "delta": {"type": "text_delta", "text": piece}})
                elif block["type"] == "tool_use":
                    yield event("content_block_start", {"index": index, "content_block": {
                        "type": "tool_use", "id": block["id"], "name": block["name"],
                        "input": {}}})
                    for piece in _chunks(json.dumps(block["input"])):
                        yield event("content_block_delta", {"index": index, "delta": {
                            "type": "input_json_delta", "partial_json": piece}})
                yield event("content_block_stop", {"index": index})
                await asyncio.sleep(0)
            yield event("message_delta", {
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]}})
            yield event("message_stop", {})
        except (asyncio.CancelledError, GeneratorExit):
            exchange.aborted = True
            raise


def _chunks(text: str, size: int = 40) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _validate(body: dict[str, Any], *, counting: bool = False) -> str | None:
    """The checks of the real API that catch a broken agent loop, phrased like it does."""
    for key in ("model", "messages") if counting else ("model", "max_tokens", "messages"):
        if key not in body:
            return f"{key}: Field required"
    if not counting and (not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1):
        return "max_tokens: must be a positive integer"
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    expected = "user"
    pending: set[str] = set()
    for n, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role != expected:
            return f"messages.{n}.role: expected {expected!r} (roles must alternate, " \
                   f"starting with 'user'), got {role!r}"
        content = message.get("content")
        blocks = [] if isinstance(content, str) else (content or [])
        if not isinstance(blocks, list) or (not blocks and not isinstance(content, str)):
            return f"messages.{n}.content: must be a string or a non-empty list of blocks"
        if role == "user":
            answered = {b.get("tool_use_id") for b in blocks
                        if isinstance(b, dict) and b.get("type") == "tool_result"}
            if pending - answered:
                return (f"messages.{n}: tool_use ids were found without tool_result blocks "
                        f"immediately after: {', '.join(sorted(pending - answered))}")
            if answered - pending:
                return f"messages.{n}: unexpected tool_use_id in tool_result blocks: " \
                       f"{', '.join(sorted(str(a) for a in answered - pending))}"
            pending = set()
        else:
            pending = {str(b.get("id")) for b in blocks
                       if isinstance(b, dict) and b.get("type") == "tool_use"}
        expected = "assistant" if role == "user" else "user"
    marks = sum(1 for b in _blocks(body) if b.breakpoint)
    if marks > MAX_BREAKPOINTS:
        return (f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
                f"Found {marks}.")
    return None
