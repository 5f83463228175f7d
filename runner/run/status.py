"""The run's one status comment on the issue: a pure render, and a writer that never blocks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from runner.model import Run, RunState

log = logging.getLogger("orchestrator.run")

STATUS_MARKER = "orchestrator:status"
_ORDER = (RunState.QUEUED, RunState.PREPARING, RunState.RUNNING, RunState.PUSHING,
          RunState.GATING, RunState.REVIEWING, RunState.SUCCEEDED)


def cost_line(run: Run) -> str:
    """What the run has spent, for the status comment and the PR."""
    return (f"Cost: ${run.cost_usd:.4f}, {run.tokens_in:,} tokens in, "
            f"{run.tokens_out:,} out.")


_SOURCES = {"cli": "the command line", "dashboard": "the dashboard", "api": "the runner's API"}


def who_acted(actor: str) -> str:
    """Who killed the run, in words that mention no one by mistake: a forge login becomes an
    @mention; ``cli:sam`` or ``dashboard:ops`` (not forge accounts) are named without one."""
    source, sep, name = actor.partition(":")
    if sep and source in _SOURCES:
        where = _SOURCES[source]
        return f"`{name}` from {where}" if source == "cli" else f"{where} (token `{name}`)"
    return f"@{actor}" if actor else "someone"


def render(run: Run, *, last_active: RunState, max_iterations: int, skip_gates: bool,
           yolo_note: str, link: str, trigger_label: str = "orchestrator",
           kill_label: str = "orchestrator:kill") -> str:
    """The status comment's Markdown for the run as it is: a checklist of its states, how it
    ended, the PR, the cost and the live log."""
    labels = {RunState.QUEUED: "Acknowledged", RunState.PREPARING: "Workspace prepared",
              RunState.RUNNING: f"Agent working (iteration {max(run.iteration, 1)} of "
                                f"{max_iterations})",
              RunState.PUSHING: "Pushed" + (f", PR #{run.pr_number}" if run.pr_number else ""),
              RunState.GATING: ("CI green" + (" (skipped: quality gates disabled)"
                                              if skip_gates else "")),
              RunState.REVIEWING: "AI review",
              RunState.SUCCEEDED: "Done: PR ready for review"}
    reached = _ORDER.index(run.state if run.state in _ORDER else last_active)
    lines = [f"### orchestrator run `{run.id}`: **{run.state}**", ""]
    if run.details.follows:
        what = {"review": f"the review by @{run.trigger_actor}",
                "retry": f"`/retry` by @{run.trigger_actor}",
                "conflict": "a conflict with the base branch"}.get(run.details.follow_up_kind,
                                                                   "the pull request")
        lines += [f"Follow-up {run.details.follow_ups} of run `{run.details.follows}`, "
                  f"answering {what}" + (f" on PR #{run.pr_number}" if run.pr_number else "")
                  + ".", ""]
    if yolo_note:
        lines += [yolo_note, ""]
    for index, state in enumerate(_ORDER):
        mark = "x" if index < reached or run.state is RunState.SUCCEEDED else " "
        lines.append(f"- [{mark}] {labels[state]}")
    lines.append("")
    if run.state is RunState.CANCELLED:
        lines.append(f"**Killed by {who_acted(run.killed_by or '')}**: {run.reason}")
        if run.reason.startswith(f"{kill_label} label"):
            # The kill label keeps the issue from starting again; say how to start it.
            lines += ["", f"To run it again, remove the `{kill_label}` label, then add "
                          f"`{trigger_label}` again."]
    elif run.state is RunState.FAILED:
        lines.append(f"**Failed**: {run.reason}")
    if run.pr_url:
        lines.append(f"Pull request: {run.pr_url}")
    lines.append(cost_line(run))
    if link:
        lines.append(f"Live log: {link}")
    return "\n".join(lines)


class StatusWriter:
    """Writes the status comment from a thread of its own, so that no step waits on the forge
    for it; when updates pile up, only the latest text is written."""

    def __init__(self, write: Callable[[str], None], name: str) -> None:
        self._write = write
        self._pending: str | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=f"status-{name}", daemon=True)
        self._thread.start()

    def update(self, body: str) -> None:
        """Write ``body`` soon, instead of any text not written yet."""
        with self._cond:
            self._pending = body
            self._cond.notify()

    def drop(self) -> None:
        """Forget what is not written yet (the run was killed: only the kill's text counts)."""
        with self._cond:
            self._pending = None

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending, then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                body, self._pending = self._pending, None
                if body is None:
                    return
            try:
                self._write(body)
            except Exception as exc:  # informational: a failed update must not stop the run  # noqa: BLE001
                log.warning("status comment not updated: %s", exc)
