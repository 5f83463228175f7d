"""Audit events in words: one short line per event, shared by the CLI and the dashboard.

Pure functions of an event's data (written partly by an AI agent: never trusted, never
assumed to have the keys it should). Nothing here escapes HTML: the dashboard's templates
do that.
"""

from __future__ import annotations

import json
from typing import Any

from runner.model import Event


def one_line(text: object, width: int) -> str:
    """``text`` on one line, cut at a word boundary with an ellipsis when longer than
    ``width`` (multi-line text keeps its first line and says how many more there are)."""
    lines = str(text or "").strip().splitlines() or [""]
    head = " ".join(lines[0].split())
    more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
    room = max(8, width - len(more))
    if len(head) > room:
        cut = head[: room - 1]
        space = cut.rfind(" ")
        head = (cut[:space] if space > room // 2 else cut) + "…"
    return head + more


def _args(data: dict[str, Any]) -> dict[str, Any]:
    value = data.get("input")
    return value if isinstance(value, dict) else {}


def tool_call(data: dict[str, Any], width: int = 100) -> str:
    """What a tool call did, in a line: ``$ make test``, ``edit calc.py (replace 1 line)``."""
    tool, args = str(data.get("tool") or "?"), _args(data)
    if tool == "bash":
        return "$ " + one_line(args.get("command"), width - 2)
    if tool == "editor":
        command, path = str(args.get("command") or "?"), str(args.get("path") or "?")
        if command == "str_replace":
            old, new = str(args.get("old_str") or ""), str(args.get("new_str") or "")
            what = (f"replace {_count(old)} with {_count(new)}")
        elif command == "create":
            what = f"write {_count(str(args.get('file_text') or ''))}"
        elif command == "insert":
            what = f"insert {_count(str(args.get('new_str') or ''))} after line " \
                   f"{args.get('insert_line')}"
        else:
            what = command
        return one_line(f"edit {path} ({what})" if command != "view" else f"view {path}",
                        width)
    if tool == "finish":
        return "finish: " + one_line(args.get("summary"), width - 8)
    return one_line(f"{tool} {json.dumps(args, default=str)}", width)


def _count(text: str) -> str:
    lines = len(text.splitlines()) or (1 if text else 0)
    return f"{lines} line" + ("" if lines == 1 else "s")


def tool_change(data: dict[str, Any]) -> str:
    """An editor call's change as -/+ lines (empty for other tools)."""
    args = _args(data)
    if data.get("tool") != "editor":
        return ""
    command = args.get("command")
    if command == "str_replace":
        old = [f"- {line}" for line in str(args.get("old_str") or "").splitlines()]
        new = [f"+ {line}" for line in str(args.get("new_str") or "").splitlines()]
        return "\n".join(old + new)
    if command in ("create", "insert"):
        text = str(args.get("file_text" if command == "create" else "new_str") or "")
        return "\n".join(f"+ {line}" for line in text.splitlines())
    return ""


def tool_result(data: dict[str, Any]) -> str:
    """``exit 1 · 0.3s``, ``ok · 0.0s`` or ``error``."""
    code = data.get("exit_code")
    status = f"exit {code}" if code is not None else ("error" if data.get("is_error") else "ok")
    seconds = data.get("seconds")
    return status + (f" · {float(seconds):.1f}s" if isinstance(seconds, int | float) else "")


def gate_results(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The gate results of a ``gates`` event (only the well-formed ones)."""
    return [r for r in data.get("results") or [] if isinstance(r, dict)]


def gates_line(data: dict[str, Any]) -> str:
    """``gates (pre-push): 3 passed, 1 failed: diff-size (412 lines, at most 400)``."""
    if data.get("skipped"):
        return f"gates ({data.get('stage')}): skipped, {data.get('skipped')}"
    results = gate_results(data)
    failed = [r for r in results if not r.get("passed")]
    line = f"gates ({data.get('stage')}): {len(results) - len(failed)} passed, " \
           f"{len(failed)} failed"
    if failed:
        line += ": " + "; ".join(f"{r.get('gate')} ({r.get('message')})" for r in failed)
    return line


def summary(event: Event, width: int = 100) -> str:
    """One line saying what ``event`` was, for any kind of event."""
    d = event.data
    if event.kind == "transition":
        reason = f": {d.get('reason')}" if d.get("reason") else ""
        return one_line(f"{d.get('from')} → {d.get('to')}{reason}", width)
    if event.kind == "agent.turn":
        tools = ", ".join(str(t) for t in d.get("tools") or []) or "no tool"
        return (f"model turn {d.get('turn')}: {tools} · {d.get('tokens_in')} in / "
                f"{d.get('tokens_out')} out · ${float(d.get('cost_usd') or 0):.4f}")
    if event.kind == "agent.tool":
        result = tool_result(d)
        return f"{tool_call(d, max(20, width - len(result) - 3))}  {result}"
    if event.kind == "gates":
        return one_line(gates_line(d), width)
    if event.kind == "ci":
        contexts = d.get("contexts") if isinstance(d.get("contexts"), dict) else {}
        parts = ", ".join(f"{k} {v}" for k, v in (contexts or {}).items())
        return one_line(f"CI on {str(d.get('sha', ''))[:12]}: {d.get('state')}"
                        + (f" ({parts})" if parts else ""), width)
    if event.kind == "review":
        findings = d.get("findings") if isinstance(d.get("findings"), list) else []
        return one_line(f"AI review: {d.get('verdict')} (confidence {d.get('confidence')}), "
                        f"{len(findings or [])} finding(s)", width)
    if event.kind in ("kill_requested", "killed"):
        verb = "kill requested" if event.kind == "kill_requested" else "killed"
        return one_line(f"{verb} by {d.get('actor') or event.actor}: {d.get('reason')}", width)
    if event.kind == "pull_request":
        return one_line(f"pull request #{d.get('number')} {d.get('url') or ''}", width)
    if event.kind == "pushed":
        return f"pushed {d.get('branch')} at {str(d.get('sha', ''))[:12]}"
    if event.kind == "agent.output":
        return one_line(f"agent said: {d.get('text')}", width)
    fields = " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}"
                      for k, v in d.items())
    return one_line(f"{event.kind} {fields}".strip(), width)


def detail(event: Event) -> str:
    """What ``summary`` leaves out: a tool's output, an editor's change, a turn's text."""
    d = event.data
    if event.kind == "agent.tool":
        change = tool_change(d)
        command = _args(d).get("command") if d.get("tool") == "bash" else None
        parts = [str(command) if command and "\n" in str(command) else "", change,
                 str(d.get("output") or "")]
        return "\n".join(p for p in parts if p).rstrip()
    if event.kind in ("agent.turn", "agent.output"):
        return str(d.get("text") or "").rstrip()
    if event.kind == "review":
        return str(d.get("summary") or "").rstrip()
    return ""
