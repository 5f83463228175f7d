"""The built-in agent: a Messages API tool loop in the runner, its tools run in the sandbox.

    task prompt -> [model turn -> tool calls in the sandbox -> tool results] * n -> finish

The loop runs in the runner process so the API key never enters the container; the model
only ever acts through ``bash``, ``editor`` and ``finish`` (see ``runner.agent.tools``).

Prompt caching: tools and the system prompt carry ``cache_control``, and a third breakpoint
sits on the last block of the newest user message. It moves with the conversation, so each
turn reads everything up to the previous turn's breakpoint from the cache and only the
newest exchange is paid at the full input price.

Requests go through ``runner.provider`` (shared with the reviewer): a cancel closes the
request in flight, so a kill does not wait for a slow model to answer, and an outage of the
provider (429/529/5xx, unreachable) is waited out, each wait a ``model_unavailable`` event,
for up to ``agent.outage_timeout``. The conversation stays in memory meanwhile (see
docs/agent.md, "Outages").
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anthropic

from runner.agent.base import (
    AgentError,
    CancelToken,
    EventSink,
    Outcome,
    StopReason,
    Task,
    clip,
)
from runner.agent.meter import cost_of, usage_dict
from runner.agent.tools import TOOL_SPECS, ToolResult, run_bash, run_editor
from runner.config import AgentConfig
from runner.model import Budget, Usage
from runner.paths import CONFIG_DIR
from runner.provider import (
    Backoff,
    Cancelled,
    Endpoint,
    OutageWait,
    Session,
    Unavailable,
    error_message,
    error_type,
)
from runner.sandbox.base import Sandbox

log = logging.getLogger(__name__)

PROMPT_FILE = CONFIG_DIR / "prompts" / "agent-system.md"
EPHEMERAL = {"type": "ephemeral"}
REQUEST_TIMEOUT_S = 600.0  # one model reply; a slower one counts as an outage


class _Stop(Exception):
    """Ends the loop early with a stop reason and a message for the user."""

    def __init__(self, reason: StopReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def load_system_prompt(path: Path = PROMPT_FILE) -> str:
    """The agent's system prompt; AgentError naming the file when it is missing."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AgentError(f"cannot read the agent's system prompt {path}: {exc.strerror}; "
                         f"restore config/prompts/agent-system.md from the repository") from None


class ClaudeAgent:
    """The Messages API tool loop (see the module docstring).

    ``environ`` is where the key is looked up (``config.api_key_env``), by default the
    runner's environment; it is read at each run, so a rotated key is picked up. ``backoff``
    says how an outage is waited out (default: ``config.outage_timeout``, from 1 s to 60 s).
    """

    def __init__(self, config: AgentConfig, *, system_prompt: str | None = None,
                 command_timeout: float = 600.0, max_output_tokens: int = 8192,
                 backoff: Backoff | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        price = config.prices.get(config.model)
        if price is None:
            raise AgentError(
                f"agent.prices has no entry for model {config.model!r}, so its cost cap "
                f"cannot be enforced: add agent.prices.{config.model} with input, output, "
                f"cache_read and cache_write (USD per million tokens) to orchestrator.yml")
        self.config = config
        self.price = price
        self.system_prompt = system_prompt if system_prompt is not None else load_system_prompt()
        self.command_timeout = command_timeout
        self.max_output_tokens = max_output_tokens
        self.backoff = backoff if backoff is not None else Backoff(config.outage_timeout)
        self.environ = environ if environ is not None else os.environ

    # -------------------------------------------------------------- the loop

    def run(self, task: Task, sandbox: Sandbox, budget: Budget, cancel: CancelToken,
            on_event: EventSink) -> Outcome:
        """Work on ``task`` until the model calls finish, a cap is reached, a cancel, or an
        error the loop cannot retry. Never raises for those; see ``Outcome``."""
        key = self.environ.get(self.config.api_key_env, "")
        if not key:
            return Outcome("error", error=f"no API key: set {self.config.api_key_env} in the "
                                          f"runner's environment (agent.api_key_env names it)")
        run = _Run(self, task, sandbox, budget, cancel, on_event, key)
        return run.go()


class _Run:
    """The state of one agent run: conversation, usage, turns."""

    def __init__(self, agent: ClaudeAgent, task: Task, sandbox: Sandbox, budget: Budget,
                 cancel: CancelToken, on_event: EventSink, key: str) -> None:
        self.agent, self.cfg = agent, agent.config
        self.task, self.sandbox, self.budget = task, sandbox, budget
        self.cancel, self.sink, self.key = cancel, on_event, key
        self.usage = Usage()
        self.turns = 0
        self.prompt_tokens = 0  # the size of the last request's prompt
        self.warned = False
        self.last_text = ""
        self.messages: list[dict[str, Any]] = [
            {"role": "user", "content": [{"type": "text", "text": task.prompt()}]}]
        self.tools = [dict(spec) for spec in TOOL_SPECS]
        self.tools[-1] = {**self.tools[-1], "cache_control": EPHEMERAL}
        self.system = [{"type": "text", "text": agent.system_prompt, "cache_control": EPHEMERAL}]

    def event(self, kind: str, data: dict[str, Any]) -> None:
        """Emit an audit event: strings truncated, the API key scrubbed, sink errors logged."""
        payload = _scrub(clip(data), self.key)
        try:
            self.sink(kind, payload)
        except Exception:  # an audit sink failing must not take the run down with it
            log.exception("audit sink failed on %s", kind)

    def go(self) -> Outcome:
        endpoint = Endpoint(self.key, self.cfg.base_url, REQUEST_TIMEOUT_S, self.agent.backoff)
        session = Session(endpoint, cancel=self.cancel, on_wait=self.unavailable)
        self.event("agent.start", {"model": self.cfg.model, "iteration": self.task.iteration,
                                   "max_turns": self.budget.max_turns,
                                   "max_tokens": self.budget.max_tokens,
                                   "max_cost_usd": self.budget.max_cost_usd})
        try:
            outcome = self.loop(session)
        except _Stop as stop:
            outcome = self.outcome(stop.reason, stop.message)
        finally:
            session.close()
        self.event("agent.stop", {"reason": outcome.stop_reason, "turns": outcome.turns,
                                  "summary": outcome.summary, "error": outcome.error,
                                  **usage_dict(outcome.usage)})
        return outcome

    def outcome(self, reason: StopReason, message: str = "", summary: str = "") -> Outcome:
        return Outcome(reason, summary=summary or self.last_text, usage=self.usage,
                       turns=self.turns, error=_scrub(message, self.key))

    def check_caps(self) -> None:
        """Stop at a cap (100 %); say so once at ``budget.warn_at`` (90 %)."""
        share = self.budget.share_used(self.turns, self.usage)
        if share >= self.budget.warn_at and not self.warned:
            self.warned = True
            self.event("agent.budget_warning", {"share": round(share, 3), "turns": self.turns,
                                                **usage_dict(self.usage)})
        reason = self.budget.exceeded(self.turns, self.usage)
        # The next prompt is at least the last one: stop before the API refuses it as too long.
        if reason is None and self.prompt_tokens + self.agent.max_output_tokens > \
                self.cfg.context_window:
            raise _Stop("budget", f"stopped after {self.turns} turns: the conversation "
                                  f"({self.prompt_tokens} tokens) fills the model's context "
                                  f"window (agent.context_window = {self.cfg.context_window})"
                                  f"; split the issue into smaller ones")
        if reason == "max_turns":
            raise _Stop("max_turns", f"stopped after {self.turns} turns: the turn cap "
                                     f"(agent.max_turns = {self.budget.max_turns}) is reached")
        if reason == "budget":
            raise _Stop("budget", f"stopped after {self.turns} turns: the budget is spent "
                                  f"({self.usage.tokens} of {self.budget.max_tokens} tokens, "
                                  f"${self.usage.cost_usd:.4f} of "
                                  f"${self.budget.max_cost_usd:.2f}; agent.max_tokens and "
                                  f"agent.max_cost_usd set the caps)")

    def loop(self, session: Session) -> Outcome:
        while True:
            self.check_caps()
            if self.cancel.is_set():
                raise _Stop("cancelled", "cancelled")
            started = time.monotonic()
            message = self.request(session)
            self.turns += 1
            turn_usage = self.account(message.usage)
            blocks = _assistant_blocks(message.content)
            text = "\n".join(b["text"] for b in blocks if b["type"] == "text").strip()
            if text:
                self.last_text = text
            calls = [b for b in blocks if b["type"] == "tool_use"]
            self.event("agent.turn", {
                "turn": self.turns, "stop_reason": message.stop_reason, "text": text,
                "tools": [c["name"] for c in calls], "seconds": round(time.monotonic() -
                                                                      started, 3),
                **usage_dict(turn_usage), "total_cost_usd": round(self.usage.cost_usd, 6)})
            self.messages.append({"role": "assistant",
                                  "content": blocks or [{"type": "text", "text": "(no reply)"}]})
            finish = next((c for c in calls if c["name"] == "finish"), None)
            if finish is not None and finish is calls[0]:
                return self.finish(finish)
            if not calls:
                if message.stop_reason == "max_tokens":
                    self.check_caps()
                    self.messages.append({"role": "user", "content": [{"type": "text", "text": (
                        "Your reply was cut off at the output token limit. Continue with "
                        "smaller steps: one tool call at a time, shorter files.")}]})
                    continue
                # A model that stops talking without finish is done; its text is the summary.
                return self.outcome("done", summary=text or "The agent stopped without a "
                                                            "summary.")
            self.check_caps()
            results: list[dict[str, Any]] = []
            for call in calls:
                if call["name"] == "finish":
                    return self.finish(call)
                result = self.execute(call)
                if result.cancelled:
                    raise _Stop("cancelled", "cancelled during a tool call")
                results.append({"type": "tool_result", "tool_use_id": call["id"],
                                "content": result.content, "is_error": result.is_error})
            self.messages.append({"role": "user", "content": results})

    def finish(self, call: dict[str, Any]) -> Outcome:
        summary = str((call.get("input") or {}).get("summary") or self.last_text or "")
        self.event("agent.tool", {"turn": self.turns, "tool": "finish",
                                  "input": call.get("input") or {}})
        return self.outcome("done", summary=summary.strip() or "Done (no summary given).")

    def execute(self, call: dict[str, Any]) -> ToolResult:
        """Run one tool call in the sandbox; every call is an audit event."""
        started = time.monotonic()
        args = call.get("input") if isinstance(call.get("input"), dict) else {}
        assert isinstance(args, dict)  # narrows the type checked on the line above  # noqa: S101
        try:
            if call["name"] == "bash":
                result = run_bash(self.sandbox, args, self.cancel, self.agent.command_timeout)
            elif call["name"] == "editor":
                result = run_editor(self.sandbox, args, self.cancel)
            else:
                result = ToolResult(f"there is no tool {call['name']!r}; use bash, editor or "
                                    f"finish", is_error=True)
        except Exception as exc:  # the sandbox broke: tell the model and the audit log  # noqa: BLE001
            result = ToolResult(f"the sandbox could not run the tool: {exc}", is_error=True)
        self.event("agent.tool", {"turn": self.turns, "tool": call["name"], "input": args,
                                  "is_error": result.is_error, "exit_code": result.exit_code,
                                  "output": result.content,
                                  "seconds": round(time.monotonic() - started, 3)})
        return result

    def account(self, raw: Any) -> Usage:
        """Add one response's usage (and its cost) to the run's."""
        part = Usage(tokens_in=int(getattr(raw, "input_tokens", 0) or 0),
                     tokens_out=int(getattr(raw, "output_tokens", 0) or 0),
                     cache_read=int(getattr(raw, "cache_read_input_tokens", 0) or 0),
                     cache_write=int(getattr(raw, "cache_creation_input_tokens", 0) or 0))
        part = Usage(part.tokens_in, part.tokens_out, part.cache_read, part.cache_write,
                     cost_of(part, self.agent.price))
        self.usage = self.usage + part
        self.prompt_tokens = part.tokens_in + part.cache_read + part.cache_write
        return part

    # -------------------------------------------------------------- one request

    def params(self) -> dict[str, Any]:
        """The request, with the moving cache breakpoint on the newest user block."""
        last = self.messages[-1]
        content = list(last["content"])
        content[-1] = {**content[-1], "cache_control": EPHEMERAL}
        messages = [*self.messages[:-1], {**last, "content": content}]
        return {"model": self.cfg.model, "max_tokens": self.agent.max_output_tokens,
                "system": self.system, "tools": self.tools, "messages": messages}

    def request(self, session: Session) -> Any:
        """One model turn; an outage is waited out, anything else ends the run (_Stop)."""
        try:
            return session.create(self.params())
        except Cancelled as exc:
            raise _Stop("cancelled", str(exc)) from None
        except Unavailable as exc:
            raise _Stop("error", str(exc)) from None
        except anthropic.APIStatusError as exc:
            raise _Stop("error", self.explain(exc)) from None

    def unavailable(self, wait: OutageWait) -> None:
        """Audit one wait in a provider outage (the run holds its slot meanwhile)."""
        self.event("model_unavailable", {"who": "agent", "turn": self.turns + 1,
                                         **wait.as_event()})

    def explain(self, exc: anthropic.APIStatusError) -> str:
        """An API error that is no outage, as a message the user can act on."""
        status, kind = exc.status_code, error_type(exc)
        detail = error_message(exc)
        env, model = self.cfg.api_key_env, self.cfg.model
        if status == 401:
            return (f"the Messages API refused the API key (401 {kind}: {detail}): set "
                    f"{env} in the runner's environment to a valid key")
        if status == 403:
            return (f"the key in {env} may not use this model or endpoint (403 {kind}: "
                    f"{detail}): check agent.model ({model!r}) and the key's permissions")
        if status == 404:
            return (f"the Messages API does not know this model or path (404 {kind}: "
                    f"{detail}): check agent.model ({model!r}) and agent.base_url")
        if status == 400 and "too long" in detail:
            return (f"the conversation outgrew the model's context window (400 {kind}: "
                    f"{detail}): split the issue into smaller ones, or check "
                    f"agent.context_window")
        if status == 400:
            return (f"the Messages API rejected the request (400 {kind}: {detail}): check "
                    f"agent.model ({model!r}) in orchestrator.yml; if the message is about "
                    f"the conversation itself, report it with this run's audit log")
        if status == 413:
            return (f"the conversation is too large for the Messages API (413: {detail}): "
                    f"split the issue into smaller ones")
        return f"the Messages API failed ({status} {kind}: {detail})"


# ---------------------------------------------------------------- helpers


def _assistant_blocks(content: Any) -> list[dict[str, Any]]:
    """The reply's blocks as plain dicts to send back (only the fields the API takes)."""
    out: list[dict[str, Any]] = []
    for block in content or []:
        kind = getattr(block, "type", None)
        if kind == "text":
            if block.text:
                out.append({"type": "text", "text": block.text})
        elif kind == "tool_use":
            out.append({"type": "tool_use", "id": block.id, "name": block.name,
                        "input": block.input if isinstance(block.input, dict) else {}})
        elif kind in {"thinking", "redacted_thinking"}:
            out.append(block.model_dump(exclude_none=True))
    return out




def _scrub(value: Any, secret: str) -> Any:
    """``value`` with ``secret`` replaced wherever it appears in a string."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, "[redacted]")
    if isinstance(value, dict):
        return {k: _scrub(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secret) for v in value]
    return value
