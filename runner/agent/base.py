"""The Agent protocol: what a run hands an agent (a Task) and what it gets back (an Outcome).

An agent works on one task inside one sandbox until it is done, runs out of budget, is
cancelled or fails. It reports what it does as audit events through ``on_event`` and never
raises for things that can happen in a run (API errors, timeouts, a cancel): those end in an
``Outcome`` whose ``stop_reason`` and ``error`` say what happened.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from runner.model import Budget, Usage
from runner.sandbox.base import Sandbox

StopReason = Literal["done", "max_turns", "budget", "cancelled", "error"]
STOP_REASONS: tuple[StopReason, ...] = ("done", "max_turns", "budget", "cancelled", "error")

# Files a repository uses to tell coding agents how it works, in order of preference.
INSTRUCTION_FILES = ("AGENTS.md", "CLAUDE.md")
MAX_INSTRUCTIONS_BYTES = 64 * 1024
# Audit payloads stay small: a store row, a log line, a dashboard cell.
MAX_EVENT_TEXT = 2000

EventSink = Callable[[str, dict[str, Any]], None]
# The heading of a follow-up's request in the agent's first message.
FOLLOW_UP_HEADING = "## Follow-up: what the pull request's reviewers ask now"


class AgentError(Exception):
    """An agent could not be set up (missing key, unknown model price, no prompt file).

    The message says what to change; problems during a run end in an ``Outcome`` instead.
    """


class CancelToken(Protocol):
    """Anything shaped like ``threading.Event``: set by a kill, polled by the agent."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True)
class Comment:
    """A comment on the issue by a user allowed to steer the run (others never get here)."""

    author: str
    body: str


@dataclass(frozen=True)
class Task:
    """What the agent is asked to do in one iteration of a run.

    ``comments`` must already be filtered to users with write permission and ``body`` must be
    the sanitised text as it was when an authorised user triggered the run: the agent takes
    everything here as instructions.
    """

    title: str
    body: str
    repo: str = ""
    issue: int = 0
    comments: tuple[Comment, ...] = ()
    instructions: str | None = None  # the repository's AGENTS.md / CLAUDE.md
    instructions_file: str | None = None
    feedback: str | None = None  # failures of the previous iteration, the next instruction
    iteration: int = 1
    # A follow-up: what the pull request's reviewers asked (as readers of the page saw it).
    follow_up: str | None = None

    def prompt(self) -> str:
        """The task as the first user message: issue, instructions, comments, feedback."""
        ref = f"{self.repo}#{self.issue}" if self.repo and self.issue else "the issue"
        parts = [f"# Task: {ref}: {self.title}", "", self.body.strip() or "(no description)"]
        if self.follow_up:
            parts += ["", FOLLOW_UP_HEADING, "",
                      "The branch already holds the earlier work on this issue, and its pull "
                      "request is open. Answer all of the following in this one turn: change "
                      "what they ask, and in your final summary say for each point what you "
                      "did, or why you did not.", "", self.follow_up.strip()]
        if self.comments:
            parts += ["", "## Comments from maintainers"]
            for comment in self.comments:
                parts += ["", f"{comment.author} wrote:", comment.body.strip()]
        if self.instructions:
            name = self.instructions_file or "the repository's instructions file"
            parts += ["", f"## The repository's own instructions ({name})", "",
                      self.instructions.strip()]
        if self.feedback:
            parts += ["", f"## Iteration {self.iteration}: what failed last time", "",
                      "Your previous attempt is on the branch already. Fix these failures; "
                      "change nothing else.", "", self.feedback.strip()]
        return "\n".join(parts) + "\n"


@dataclass(frozen=True)
class Outcome:
    """How an agent's run ended.

    ``stop_reason`` is one of done, max_turns, budget, cancelled, error; ``error`` is a
    message a user can act on when the reason is error (and a note for the others).
    """

    stop_reason: StopReason
    summary: str = ""
    usage: Usage = field(default_factory=Usage)
    turns: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.stop_reason == "done"


class Agent(Protocol):
    """Works on a task in a sandbox. ``run`` blocks until the agent stops; it does not raise
    for API errors, timeouts or a cancel (see ``Outcome``)."""

    def run(self, task: Task, sandbox: Sandbox, budget: Budget, cancel: CancelToken,
            on_event: EventSink) -> Outcome:
        """Work on ``task`` until done, out of budget, cancelled or failed."""
        ...


def truncate(text: str, limit: int = MAX_EVENT_TEXT) -> str:
    """``text`` cut to ``limit`` characters, with a note saying how much was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit} more characters cut]"


def clip(value: Any, limit: int = MAX_EVENT_TEXT) -> Any:
    """A JSON-like value with every string truncated, for audit event payloads."""
    if isinstance(value, str):
        return truncate(value, limit)
    if isinstance(value, dict):
        return {str(k): clip(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clip(v, limit) for v in value]
    return value


def load_instructions(worktree: Path) -> tuple[str, str] | None:
    """The repository's agent instructions (``AGENTS.md`` or ``CLAUDE.md``) as (name, text).

    Read on the host, so a symlink is refused: a repository could point ``AGENTS.md`` at a
    file of the runner's machine and have it sent to the model. Only a regular file at the
    top of the worktree counts, cut at 64 KiB.
    """
    for name in INSTRUCTION_FILES:
        path = worktree / name
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue  # absent, or a symlink (O_NOFOLLOW refuses it)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            data = os.read(fd, MAX_INSTRUCTIONS_BYTES)
        finally:
            os.close(fd)
        return name, data.decode("utf-8", errors="replace")
    return None
