"""What the CLI prints: the runs table, a run's progress as steps, logging set-up.

A run's audit events become one readable line each: a state change is a step with how long
the step before it took; a tool call is its command (or the file an editor call changed),
exit code and seconds. Full tool output only with ``--verbose`` or ``logs --full``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from runner import eventtext
from runner.model import Event, Run, RunState
from runner.store.base import Store

STATE_STYLE = {RunState.SUCCEEDED: "green", RunState.FAILED: "red",
               RunState.CANCELLED: "yellow"}
# The runner's own loggers; every other library's logger is quiet below WARNING by default
# (httpx and the SDK's httpx2 narrate each request at INFO: "HTTP Request: POST ...").
OWN_LOGGERS = ("orchestrator", "runner", "gates")


def setup_logging(console: Console, verbose: bool) -> None:
    """Log to ``console``: the runner's own INFO lines, other libraries only from WARNING
    (``verbose``: DEBUG for the runner, INFO for the libraries)."""
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(message)s", datefmt="[%X]", force=True,
                        handlers=[RichHandler(console=console, show_path=False)])
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


def age(seconds: float) -> str:
    """A short age: 5s, 3m, 2h, 4d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def duration(seconds: float) -> str:
    """``0.4s``, ``12s``, ``3m05s``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def owners(store: Store, runs: Sequence[Run]) -> dict[str, str]:
    """Run id -> the process holding its lease (empty when none does)."""
    found = {}
    for run in runs:
        lease = None if run.terminal else store.current_lease(run.id)
        found[run.id] = lease.worker if lease else ""
    return found


def fit(text: str, width: int) -> str:
    """``text`` in exactly ``width`` characters: padded, or cut with an ellipsis."""
    return text.ljust(width) if len(text) <= width else text[: max(0, width - 1)] + "…"


def runs_table(runs: Sequence[Run], owners: dict[str, str], width: int,
               now: float | None = None) -> list[str]:
    """The runs as lines of at most ``width`` characters (rich markup for the state). The RUN
    column is never cut: the id is what ``logs`` and ``kill`` need; the issue, the owner and
    the reason give way on a narrow terminal (the reason last, on one line)."""
    now = now or time.time()
    id_width = max((len(run.id) for run in runs), default=14)
    pulls = {run.id: pull_cell(run) for run in runs}
    pr_width = max((len(cell) for cell in pulls.values()), default=2)
    fixed = [("RUN", id_width), ("STATE", 9), ("IT", 2), ("PR", pr_width), ("COST", 6),
             ("AGE", 4)]
    room = width - sum(w for _, w in fixed) - 2 * (len(fixed) + 1)
    owned = any(owners.get(r.id) for r in runs)  # no OWNER column when no process holds one
    owner_w = max(5, min(14, max(len(owners.get(r.id) or "-") for r in runs))) if owned else 0
    room -= owner_w + (2 if owned else 0)
    issue_w = min(26, max((len(f"{r.repo}#{r.issue}") for r in runs), default=10))
    reason_need = min(16, max((len(r.reason) for r in runs), default=0))
    issue_w = max(10, min(issue_w, room - reason_need))  # the issue gives way to a reason
    reason_w = max(0, room - issue_w)
    header = ["RUN".ljust(id_width), "STATE".ljust(9), "ISSUE".ljust(issue_w), "IT",
              "PR".ljust(pr_width), "COST".rjust(6), "AGE".rjust(4)] + (
        ["OWNER".ljust(owner_w)] if owned else [])
    lines = ["[bold]" + escape("  ".join(header) + ("  REASON" if reason_w >= 6 else "")) + "[/]"]
    for run in runs:
        style = STATE_STYLE.get(run.state, "cyan")
        cells = [run.id.ljust(id_width), f"[{style}]{escape(fit(str(run.state), 9))}[/]",
                 escape(fit(f"{run.repo}#{run.issue}", issue_w)), str(run.iteration).rjust(2),
                 pulls[run.id].ljust(pr_width),
                 f"${run.cost_usd:.2f}".rjust(6), age(now - run.created_at).rjust(4)] + (
            [escape(fit(owners.get(run.id) or "-", owner_w))] if owned else [])
        reason = escape(fit(eventtext.one_line(run.reason, 500), reason_w)).rstrip() \
            if reason_w >= 6 else ""
        lines.append(("  ".join(cells) + ("  " + reason if reason else "")).rstrip())
    return lines


def pull_cell(run: Run) -> str:
    """``#12``, ``#12 merged`` or ``#12 closed`` once the pull request's life ended; ``-``."""
    if not run.pr_number:
        return "-"
    ended = f" {run.details.pull_state}" if run.details.pull_state else ""
    return f"#{run.pr_number}{ended}"


class Progress:
    """Prints a run's events as they come: steps with durations, one line per tool call."""

    def __init__(self, console: Console, *, full: bool = False) -> None:
        self.console, self.full = console, full
        self.step: str | None = None
        self.step_at = 0.0

    def width(self) -> int:
        return max(40, self.console.width - 12)  # what is left after "HH:MM:SS   "

    def show(self, event: Event) -> None:
        """Print one event."""
        when = time.strftime("%H:%M:%S", time.localtime(event.at))
        if event.kind == "transition":
            to = str(event.data.get("to"))
            took = (f" [dim]({self.step} took {duration(event.at - self.step_at)})[/]"
                    if self.step else "")
            reason = event.data.get("reason")
            why = f": {escape(eventtext.one_line(reason, self.width()))}" if reason else ""
            style = next((v for k, v in STATE_STYLE.items() if k.value == to), "bold cyan")
            self.console.print(f"{when} [{style}]▸ {escape(to)}[/]{why}{took}", highlight=False,
                               soft_wrap=True)
            self.step, self.step_at = to, event.at
            return
        line = eventtext.summary(event, self.width())
        self.console.print(f"{when}   {escape(line)}", highlight=False, soft_wrap=True)
        if self.full:
            text = eventtext.detail(event)
            if text:
                for out in text.splitlines():
                    self.console.print(f"           │ {out}", markup=False, highlight=False,
                                       soft_wrap=True)


def follow(store: Store, run_id: str, progress: Progress, *, until_terminal: bool,
           already: int) -> int:
    """Print the run's events after ``already``; with ``until_terminal`` keep going until the
    run has ended. Returns the last sequence number printed."""
    seen = already
    while True:
        for event in store.events(run_id, after=seen, limit=500):
            progress.show(event)
            seen = event.seq
        if not until_terminal or store.get_run(run_id).terminal:
            for event in store.events(run_id, after=seen, limit=500):
                progress.show(event)
                seen = event.seq
            return seen
        time.sleep(0.5)
