"""The pull request a reviewer reads: a title that says what the change does, and a
description of what changed, how it was checked and how the run got there. Pure: it renders
from the run and its audit events, so it can be rewritten in place after every iteration.

The agent's words are hostile input: they are quoted, cut to a length, and their @mentions
and links to images are neutralised, so that a summary cannot ping people or load a remote
image in every reviewer's browser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from runner.model import Event, Run

TITLE_MAX = 72
SUMMARY_MAX = 3000
COMMANDS_MAX = 8

_MENTION = re.compile(r"(?<![\w`])@([A-Za-z0-9][\w.-]*(?:/[\w.-]+)?)")
_IMAGE = re.compile(r"!\[")


def inert(text: str) -> str:
    """Agent text that renders as text: no mention pings, no remote images."""
    return _IMAGE.sub("[", _MENTION.sub(r"`@\1`", text))


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters at a word boundary, with an ellipsis, and a code
    span it cut open closed again (an unclosed backtick swallows the rest of the line)."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    if " " in cut[limit // 2:]:
        cut = cut[:cut.rindex(" ")]
    cut = cut.rstrip()
    if cut.count("`") % 2:
        cut += "`"
    return cut + "…"


def _summary(events: Iterable[Event]) -> str:
    done = [e for e in events if e.kind == "agent_done" and e.data.get("summary")]
    return str(done[-1].data["summary"]).strip() if done else ""


def pull_title(run: Run, events: Iterable[Event],
               earlier: Sequence[tuple[Run, list[Event]]] = ()) -> str:
    """The first line of the agent's summary (what the change does), else the issue's title.
    A follow-up keeps the first run's title: the change is still what that run made."""
    if earlier:
        run, events = earlier[0]
    first = _summary(events).splitlines()[0].strip() if _summary(events) else ""
    first = first.lstrip("#").strip().removesuffix(".")
    if not first:
        return run.issue_title or f"Fix #{run.issue}"
    return clip(first, TITLE_MAX)


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


def _left_out(events: list[Event]) -> list[str]:
    """What the run did not do: the AI reviewer's findings on its last look (its approval
    does not require them), each with its place."""
    reviews = [e for e in events if e.kind == "review"]
    findings = reviews[-1].data.get("findings") or [] if reviews else []
    lines = []
    for finding in findings[:10]:
        if not isinstance(finding, dict):
            continue
        path = finding.get("path")
        where = (f"`{path}`" if path else "the change") + (
            f" line {finding.get('line')}" if path and finding.get("line") else "")
        text = str(finding.get("message") or finding.get("body") or "").splitlines()
        lines.append(f"- {inert(where)}: {inert(text[0][:200]) if text else '(no text)'}")
    return lines


def _follow_up_line(run: Run, events: list[Event]) -> str:
    details = run.details
    what = {"review": f"the review by @{run.trigger_actor}",
            "retry": f"`/retry` by @{run.trigger_actor}",
            "conflict": "a conflict with the base branch"}.get(details.follow_up_kind, "")
    said = clip(_summary(events).splitlines()[0], 120) if _summary(events) else ""
    return (f"- Follow-up {details.follow_ups} (run `{run.id}`), answering {what}: {run.state}"
            + (f": {inert(said)}" if said else ""))


def pull_body(run: Run, events: Iterable[Event], *, yolo_note: str = "", cost: str = "",
              earlier: Sequence[tuple[Run, list[Event]]] = ()) -> str:
    """The PR's description: the agent's summary, the checks that ran, what was left out, the
    history. ``earlier``: the runs this one follows (a follow-up's), oldest first, with
    their events: the summary is the first run's, the history covers them all."""
    events = list(events)
    first_run, first_events = earlier[0] if earlier else (run, events)
    summary = _summary(first_events)
    parts = [f"Closes #{run.issue}", ""]
    if yolo_note:
        parts += [yolo_note, ""]
    parts += ["## What changed", ""]
    if summary:
        text = summary if len(summary) <= SUMMARY_MAX else summary[:SUMMARY_MAX] + " […]"
        parts += ["> " + line if line else ">" for line in inert(text).splitlines()]
    else:
        parts.append("The agent gave no summary.")
    checks = _checks(events)
    parts += ["", "## How it was checked", "", *(checks or ["- Nothing has been checked yet."])]
    left = _left_out(events)
    if left:
        parts += ["", "## Left out", "", "The AI reviewer noted (not required for its "
                  "approval):", *left]
    history = _history(events)
    if earlier:
        history = []
        for each, its in [*earlier, (run, events)]:
            history.append(_follow_up_line(each, its) if each.details.follows else
                           f"- Run `{each.id}`: {each.state}")
            history += ["  " + line for line in _history(its)]
    if history:
        parts += ["", "## History", "", *history]
    parts += ["", f"Opened by the orchestrator (run `{first_run.id}`) for the issue as "
                  f"@{first_run.trigger_actor} triggered it."]
    if cost:
        parts += ["", cost]
    return "\n".join(parts)
