"""The pull request a reviewer reads: a title that says what the change does, and a
description of what changed, how it was checked and how the run got there. Pure: it renders
from the run and its audit events, so it can be rewritten in place after every iteration.

The agent's words are hostile input: they are quoted, cut to a length, and their @mentions
and links to images are neutralised, so that a summary cannot ping people or load a remote
image in every reviewer's browser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from runner.model import Event, Run

TITLE_MAX = 72
SUMMARY_MAX = 3000
COMMANDS_MAX = 8

_MENTION = re.compile(r"(?<![\w`])@([A-Za-z0-9][\w.-]*(?:/[\w.-]+)?)")
_IMAGE = re.compile(r"!\[")


def _inert(text: str) -> str:
    """Agent text that renders as text: no mention pings, no remote images."""
    return _IMAGE.sub("[", _MENTION.sub(r"`@\1`", text))


def _summary(events: Iterable[Event]) -> str:
    done = [e for e in events if e.kind == "agent_done" and e.data.get("summary")]
    return str(done[-1].data["summary"]).strip() if done else ""


def pull_title(run: Run, events: Iterable[Event]) -> str:
    """The first line of the agent's summary (what the change does), else the issue's title."""
    first = _summary(events).splitlines()[0].strip() if _summary(events) else ""
    first = first.lstrip("#").strip().removesuffix(".")
    if not first:
        return run.issue_title or f"Fix #{run.issue}"
    return first if len(first) <= TITLE_MAX else first[:TITLE_MAX - 1].rstrip() + "…"


def _commands(events: list[Event]) -> list[str]:
    """The shell commands the agent ran in its last iteration, with their exit codes; the
    last run of each command counts."""
    starts = [i for i, e in enumerate(events) if e.kind == "agent.start"]
    tail = events[starts[-1]:] if starts else events
    last: dict[str, Any] = {}
    for event in tail:
        if event.kind == "agent.tool" and event.data.get("tool") == "bash":
            command = str((event.data.get("input") or {}).get("command", "")).strip()
            if command:
                last.pop(command, None)
                last[command] = event.data.get("exit_code")
    lines = []
    for command, code in list(last.items())[-COMMANDS_MAX:]:
        shown = command.splitlines()[0][:120]
        verdict = "ok" if code == 0 else f"exit {code}" if code is not None else "no exit code"
        lines.append(f"- `{shown.replace('`', chr(39))}`: {verdict}")
    return lines


def _checks(events: list[Event]) -> list[str]:
    lines = _commands(events)
    gates = [e for e in events if e.kind == "gates" and e.data.get("stage") == "pre-push"]
    if gates:
        results = gates[-1].data.get("results") or []
        passed = [r.get("gate") or r.get("name") for r in results if r.get("passed")]
        failed = [r.get("gate") or r.get("name") for r in results if not r.get("passed")]
        text = "passed: " + (", ".join(str(p) for p in passed) or "none")
        if failed:
            text += "; failed: " + ", ".join(str(f) for f in failed)
        lines.append(f"- Pre-push gates {text}")
    ci = [e for e in events if e.kind == "ci"]
    if ci:
        contexts = ci[-1].data.get("contexts") or {}
        shown = ", ".join(f"`{name}` {state}" for name, state in contexts.items())
        lines.append(f"- CI on `{str(ci[-1].data.get('sha', ''))[:12]}`: {shown or 'none'}")
    reviews = [e for e in events if e.kind == "review"]
    if reviews:
        data = reviews[-1].data
        lines.append(f"- AI review: {data.get('verdict')} (confidence "
                     f"{float(data.get('confidence') or 0):.2f})")
    return lines


def _history(events: list[Event]) -> list[str]:
    lines = []
    for event in events:
        if event.kind == "iteration":
            failures = ", ".join(str(f) for f in event.data.get("failures") or []) or "none"
            lines.append(f"- Iteration {event.data.get('iteration')}: after {failures}")
        elif event.kind == "pushed":
            lines.append(f"- Pushed `{str(event.data.get('sha', ''))[:12]}`")
    return lines


def pull_body(run: Run, events: Iterable[Event], *, yolo_note: str = "", cost: str = "") -> str:
    """The PR's description: the agent's summary, the checks that ran, the history."""
    events = list(events)
    summary = _summary(events)
    parts = [f"Closes #{run.issue}", ""]
    if yolo_note:
        parts += [yolo_note, ""]
    parts += ["## What changed", ""]
    if summary:
        text = summary if len(summary) <= SUMMARY_MAX else summary[:SUMMARY_MAX] + " […]"
        parts += ["> " + line if line else ">" for line in _inert(text).splitlines()]
    else:
        parts.append("The agent gave no summary.")
    checks = _checks(events)
    parts += ["", "## How it was checked", "", *(checks or ["- Nothing has been checked yet."])]
    history = _history(events)
    if history:
        parts += ["", "## History", "", *history]
    parts += ["", f"Opened by the orchestrator (run `{run.id}`) for the issue as "
                  f"@{run.trigger_actor} triggered it."]
    if cost:
        parts += ["", cost]
    return "\n".join(parts)
