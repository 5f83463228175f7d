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
from rich.table import Table

from runner import eventtext
from runner.model import Event, Run, RunState
from runner.store.base import Store

STATE_STYLE = {RunState.SUCCEEDED: "green", RunState.FAILED: "red",
               RunState.CANCELLED: "yellow"}
# Third-party loggers that narrate every request at INFO (httpx: "HTTP Request: POST ...").
QUIET_LOGGERS = ("httpx", "httpcore", "urllib3", "docker", "github", "anthropic", "uvicorn.access",
                 "hpack", "git")


def setup_logging(console: Console, verbose: bool) -> None:
    """Log to ``console``: the runner's own INFO lines; other libraries only at WARNING
    (``verbose``: DEBUG for the runner, INFO for the libraries)."""
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        datefmt="[%X]", force=True,
                        handlers=[RichHandler(console=console, show_path=False)])
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)


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


def runs_table(runs: Sequence[Run], owners: dict[str, str], now: float | None = None) -> Table:
    """The runs as a table whose RUN column is never cut: the id is what ``logs`` and
    ``kill`` need; the issue title and the reason give way on a narrow terminal."""
    now = now or time.time()
    table = Table(box=None, header_style="bold", pad_edge=False)
    width = max((len(run.id) for run in runs), default=14)
    table.add_column("RUN", no_wrap=True, min_width=width)
    table.add_column("STATE", no_wrap=True)
    table.add_column("ISSUE", no_wrap=True, overflow="ellipsis", max_width=28)
    table.add_column("IT", no_wrap=True, justify="right")
    table.add_column("PR", no_wrap=True)
    table.add_column("COST", no_wrap=True, justify="right")
    table.add_column("AGE", no_wrap=True, justify="right")
    table.add_column("OWNER", no_wrap=True, overflow="ellipsis", max_width=16)
    table.add_column("REASON", no_wrap=True, overflow="ellipsis", ratio=1)
    for run in runs:
        style = STATE_STYLE.get(run.state, "cyan")
        table.add_row(run.id, f"[{style}]{run.state}[/]", escape(f"{run.repo}#{run.issue}"),
                      str(run.iteration), f"#{run.pr_number}" if run.pr_number else "-",
                      f"${run.cost_usd:.2f}", age(now - run.created_at),
                      escape(owners.get(run.id) or "-"),
                      escape(eventtext.one_line(run.reason, 200)))
    return table


class Progress:
    """Prints a run's events as they come: steps with durations, one line per tool call."""

    def __init__(self, console: Console, *, full: bool = False) -> None:
        self.console, self.full = console, full
        self.step: str | None = None
        self.step_at = 0.0

    def width(self) -> int:
        return max(60, self.console.width - 22)

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
