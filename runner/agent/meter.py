"""What a command agent's model requests cost: usage read from replies, and the budget.

The model gateway (``runner.agent.gateway``) hands every reply through a ``ReplyReader``,
which finds the provider's own usage figures in it as the bytes pass (a JSON body or a
server-sent event stream, Messages API or OpenAI-compatible), and a ``Meter`` that turns them
into turns, tokens and cost, refuses requests once a cap is reached, and writes the same audit
events as the built-in agent (``agent.turn``, ``agent.budget_warning``).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from runner.config import Price
from runner.model import Budget, Usage

Provider = Literal["anthropic", "openai"]
EventSink = Callable[[str, dict[str, Any]], None]
MAX_TEXT = 2000  # characters of a reply's text kept for its audit event


def cost_of(usage: Usage, price: Price) -> float:
    """USD for ``usage`` at ``price`` (USD per million tokens of each kind)."""
    return (usage.tokens_in * price.input + usage.tokens_out * price.output
            + usage.cache_read * price.cache_read + usage.cache_write * price.cache_write) / 1e6


@dataclass
class Reading:
    """What one reply said about itself."""

    usage: Usage = field(default_factory=Usage)
    stop_reason: str = ""
    text: str = ""
    tools: list[str] = field(default_factory=list)
    estimated: bool = False  # no usage figure arrived (a cut stream): output estimated


class ReplyReader:
    """Reads one reply as its bytes pass through, for its usage, stop reason, text and tools.

    ``streaming`` replies are server-sent events; others are one JSON body. Unknown shapes
    are skipped, never raised on: the bytes go to the agent unchanged either way.
    """

    def __init__(self, provider: Provider, streaming: bool) -> None:
        self.provider = provider
        self.streaming = streaming
        self.body = bytearray()
        self.pending = b""
        self.reading = Reading()
        self.got_usage = False
        self.text_parts: list[str] = []
        self.text_size = 0

    def feed(self, chunk: bytes) -> None:
        """The next bytes of the reply."""
        if not self.streaming:
            if len(self.body) < 64 * 1024 * 1024:
                self.body += chunk
            return
        self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            self._line(line.rstrip(b"\r"))

    def finish(self) -> Reading:
        """The reading, once the reply has ended (or was cut)."""
        if self.streaming:
            if self.pending:
                self._line(self.pending)
                self.pending = b""
        else:
            try:
                data = json.loads(bytes(self.body))
            except ValueError:
                data = None
            if isinstance(data, dict):
                self._whole(data)
        self.reading.text = "".join(self.text_parts).strip()[:MAX_TEXT]
        if not self.got_usage:
            # A reply cut before its usage arrived: its output estimated at 4 characters a token.
            self.reading.estimated = True
            u = self.reading.usage
            self.reading.usage = Usage(u.tokens_in, max(u.tokens_out,
                                                        math.ceil(self.text_size / 4)),
                                       u.cache_read, u.cache_write)
        return self.reading

    # -------------------------------------------------------------- shapes

    def _text(self, text: Any) -> None:
        if isinstance(text, str) and text:
            self.text_size += len(text)
            if sum(len(t) for t in self.text_parts) < MAX_TEXT:
                self.text_parts.append(text)

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if not payload or payload == b"[DONE]":
            return
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if isinstance(data, dict):
            self._event(data)

    def _event(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if self.provider == "anthropic":
            if kind == "message_start":
                message = data.get("message") or {}
                self._anthropic_usage(message.get("usage"), final=False)
            elif kind == "content_block_start":
                block = data.get("content_block") or {}
                if block.get("type") == "tool_use":
                    self.reading.tools.append(str(block.get("name", "")))
                self._text(block.get("text"))
            elif kind == "content_block_delta":
                self._text((data.get("delta") or {}).get("text"))
            elif kind == "message_delta":
                self.reading.stop_reason = str((data.get("delta") or {}).get("stop_reason")
                                               or self.reading.stop_reason)
                self._anthropic_usage(data.get("usage"))
            return
        if isinstance(kind, str) and kind.startswith("response."):  # the Responses API
            if kind in ("response.completed", "response.incomplete", "response.failed"):
                self._whole(data.get("response") or {})
            elif kind == "response.output_text.delta":
                self._text(data.get("delta"))
            return
        for choice in data.get("choices") or []:  # a chat completions chunk
            delta = choice.get("delta") or {}
            self._text(delta.get("content"))
            for call in delta.get("tool_calls") or []:
                name = (call.get("function") or {}).get("name")
                if name:
                    self.reading.tools.append(str(name))
            if choice.get("finish_reason"):
                self.reading.stop_reason = str(choice["finish_reason"])
        if data.get("usage"):
            self._openai_usage(data["usage"])

    def _whole(self, data: dict[str, Any]) -> None:
        """A complete reply: a Messages API message, a chat completion or a response."""
        if self.provider == "anthropic":
            self.reading.stop_reason = str(data.get("stop_reason") or "")
            for block in data.get("content") or []:
                if block.get("type") == "tool_use":
                    self.reading.tools.append(str(block.get("name", "")))
                self._text(block.get("text"))
            self._anthropic_usage(data.get("usage"))
            return
        for choice in data.get("choices") or []:
            message = choice.get("message") or {}
            self._text(message.get("content"))
            for call in message.get("tool_calls") or []:
                self.reading.tools.append(str((call.get("function") or {}).get("name", "")))
            self.reading.stop_reason = str(choice.get("finish_reason") or "")
        for item in data.get("output") or []:  # the Responses API
            if item.get("type") == "function_call":
                self.reading.tools.append(str(item.get("name", "")))
            for part in item.get("content") or []:
                self._text(part.get("text"))
        if data.get("status") and not self.reading.stop_reason:
            self.reading.stop_reason = str(data["status"])
        if data.get("usage"):
            self._openai_usage(data["usage"])

    def _anthropic_usage(self, raw: Any, *, final: bool = True) -> None:
        """Messages API usage; a later figure (message_delta's) replaces an earlier one.
        A stream's message_start carries a placeholder output count, so it is not final."""
        if not isinstance(raw, Mapping):
            return
        u = self.reading.usage

        def pick(name: str, old: int) -> int:
            value = raw.get(name)
            return int(value) if isinstance(value, int) else old

        self.reading.usage = Usage(pick("input_tokens", u.tokens_in),
                                   pick("output_tokens", u.tokens_out),
                                   pick("cache_read_input_tokens", u.cache_read),
                                   pick("cache_creation_input_tokens", u.cache_write))
        self.got_usage = self.got_usage or final

    def _openai_usage(self, raw: Mapping[str, Any]) -> None:
        """Chat completions (prompt/completion) or Responses (input/output) usage; cached
        input is counted as a cache read."""
        prompt = int(raw.get("prompt_tokens", raw.get("input_tokens", 0)) or 0)
        output = int(raw.get("completion_tokens", raw.get("output_tokens", 0)) or 0)
        details = raw.get("prompt_tokens_details") or raw.get("input_tokens_details") or {}
        cached = int(details.get("cached_tokens", 0) or 0) if isinstance(details, Mapping) else 0
        self.reading.usage = Usage(max(prompt - cached, 0), output, cached, 0)
        self.got_usage = True


@dataclass(frozen=True)
class Refusal:
    """Why the gateway refuses a request: an HTTP status, an error type and a message."""

    status: int
    kind: str
    message: str


class Meter:
    """One run's model spending, enforcing ``budget`` as the built-in agent does.

    Turns count answered requests; a request is refused once a cap is reached (and the run is
    then to stop with ``stop_reason``). Thread-safe: the gateway's thread records, the agent's
    thread reads.
    """

    def __init__(self, budget: Budget, prices: Mapping[str, Price], emit: EventSink) -> None:
        self.budget = budget
        self.prices = dict(prices)
        self.emit = emit
        self.usage = Usage()
        self.turns = 0
        self.in_flight = 0
        self.warned = False
        self.stop_reason: str | None = None
        self.stop_message = ""
        self._lock = threading.Lock()

    def snapshot(self) -> tuple[Usage, int]:
        """Usage and turns so far."""
        with self._lock:
            return self.usage, self.turns

    def admit(self, model: str) -> Refusal | None:
        """None when a request for ``model`` may go to the provider now, else why not."""
        with self._lock:
            if model not in self.prices:
                known = ", ".join(sorted(self.prices)) or "none"
                return Refusal(400, "invalid_request_error", (
                    f"orchestrator gateway: model {model!r} has no price in agent.prices, so "
                    f"its cost cannot be metered; use one of: {known}"))
            reason = self.budget.exceeded(self.turns + self.in_flight, self.usage)
            if reason is None:
                self.in_flight += 1
                return None
            if reason == "max_turns":
                message = (f"orchestrator gateway: the run's turn cap is reached "
                           f"({self.turns} model requests; agent.max_turns = "
                           f"{self.budget.max_turns}); the run stops")
            else:
                message = (f"orchestrator gateway: the run's budget is spent "
                           f"({self.usage.tokens} of {self.budget.max_tokens} tokens, "
                           f"${self.usage.cost_usd:.4f} of ${self.budget.max_cost_usd:.2f}; "
                           f"agent.max_tokens and agent.max_cost_usd set the caps); the run "
                           f"stops")
            first = self.stop_reason is None
            if first:
                self.stop_reason, self.stop_message = reason, message
        if first:
            self.emit("agent.gateway", {"refused": reason, "model": model, "error": message})
        return Refusal(403, "permission_error", message)

    def record(self, model: str, status: int, reading: Reading, *, provider: Provider,
               stream: bool, seconds: float) -> None:
        """Account one finished (or cut) reply and write its ``agent.turn`` event."""
        price = self.prices[model]
        part = reading.usage
        part = Usage(part.tokens_in, part.tokens_out, part.cache_read, part.cache_write,
                     cost_of(part, price))
        warn = None
        with self._lock:
            self.in_flight -= 1
            self.usage = self.usage + part
            if status < 400:
                self.turns += 1
            turn, total = self.turns, self.usage
            share = self.budget.share_used(self.turns, self.usage)
            if share >= self.budget.warn_at and not self.warned:
                self.warned = True
                warn = round(share, 3)
        self.emit("agent.turn", {
            "turn": turn, "model": model, "provider": provider, "status": status,
            "stream": stream, "stop_reason": reading.stop_reason, "text": reading.text,
            "tools": reading.tools, "seconds": round(seconds, 3),
            "usage_estimated": reading.estimated, **usage_dict(part),
            "total_cost_usd": round(total.cost_usd, 6)})
        if warn is not None:
            self.emit("agent.budget_warning", {"share": warn, "turns": turn,
                                               **usage_dict(total)})


def usage_dict(usage: Usage) -> dict[str, Any]:
    """Usage as audit event fields."""
    return {"tokens_in": usage.tokens_in, "tokens_out": usage.tokens_out,
            "cache_read": usage.cache_read, "cache_write": usage.cache_write,
            "cost_usd": round(usage.cost_usd, 6)}
