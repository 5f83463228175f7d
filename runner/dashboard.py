"""The dashboard's HTML: Jinja2 templates (``runner/templates/*.html``) with autoescape on.

Every value from a run or an event is untrusted (an AI agent wrote much of it). Templates
escape everything they print, so no code here builds HTML by hand; links are kept only when
they are http(s). The pages load one stylesheet and one script (served under a
Content-Security-Policy that forbids inline script and style) and get live updates over
Server-Sent Events.

The run page opens with a timeline of the run's states (a bar per state, its width the
state's share of the run's time), then the events grouped by iteration, each event one line
that expands to its detail.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader

from runner import eventtext
from runner.config import Settings
from runner.model import Event, Run, RunState
from runner.spend import Today

TEMPLATES = Path(__file__).resolve().parent / "templates"
OUTPUT_CHARS = 20000  # longer tool output is cut in the page (the API has all of it)
STATE_FILTERS = ("", "active", *[s.value for s in RunState])


def safe_url(url: object) -> str:
    """``url`` if it is http(s); otherwise empty (no javascript: or data: links)."""
    text = str(url or "")
    return text if text.startswith(("http://", "https://")) else ""


def cut(text: object, limit: int = OUTPUT_CHARS) -> str:
    """``text``, cut to ``limit`` characters with a note of how much was left out."""
    value = str(text or "")
    if len(value) > limit:
        return value[:limit] + f"\n… ({len(value) - limit} more characters)"
    return value


def age(since: float, now: float | None = None) -> str:
    """A short human age: 5s, 3m, 2h, 4d."""
    seconds = max(0, int((now or time.time()) - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def clock(at: float) -> str:
    """``HH:MM:SS`` in local time."""
    return time.strftime("%H:%M:%S", time.localtime(at))


def duration(seconds: float) -> str:
    """``0.4s``, ``12s``, ``3m05s``, ``1h02m``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"
    return f"{int(seconds) // 3600}h{int(seconds) % 3600 // 60:02d}m"


def money(run: Run) -> str:
    """The run's cost; while nothing is counted yet (the agent's first turn), says so."""
    if run.cost_usd == 0 and not run.terminal:
        return "counting…"
    return f"${run.cost_usd:.4f}"


def issue_url(settings: Settings, run: Run) -> str:
    """The web address of a run's issue, derived from its forge's API root."""
    try:
        forge = settings.forges[settings.repo(run.repo).forge]
    except KeyError:
        return ""
    base = forge.base_url.rstrip("/")
    if forge.kind == "github":
        base = "https://github.com" if base == "https://api.github.com" else \
            base.removesuffix("/api/v3")
    else:
        base = base.removesuffix("/api/v1")
    return f"{base}/{run.repo}/issues/{run.issue}"


def asset(name: str) -> str:
    """The text of a file under ``runner/templates/``."""
    return (TEMPLATES / name).read_text(encoding="utf-8")


_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True,
                   lstrip_blocks=True)
_env.globals.update(safe_url=safe_url, clock=clock, age=age, money=money, cut=cut,
                    ctime=time.ctime, text=eventtext, duration=duration)


def render(template: str, **values: Any) -> str:
    """A template rendered with autoescape on."""
    return _env.get_template(template).render(**values)


# ------------------------------------------------------------------ pages


def layout(title: str, body_template: str, *, signed_in: bool = True, paused: bool = False,
           **values: Any) -> str:
    """A whole page: ``body_template`` inside the header, banner and main."""
    return render(body_template, title=title, signed_in=signed_in, paused=paused, **values)


def message_page(title: str, text: str) -> str:
    """A card saying what went wrong, with a way back."""
    return layout(title, "message.html", message=text)


def login_page(*, error: str = "", next_path: str = "/runs", configured: bool = True) -> str:
    """The login form: the API token, posted to /login, sets the session cookie."""
    return layout("Sign in", "login.html", signed_in=False, error=error, next_path=next_path,
                  configured=configured)


def signed_in_page(next_path: str) -> str:
    """After a sign-in link: a page that opens ``next_path`` (a local path) at once; as a
    navigation of the dashboard's own page, so the new SameSite=Strict cookie goes with it
    even when the link was clicked on another site."""
    return layout("Signed in", "signed_in.html", next_path=next_path)


@dataclass(frozen=True)
class RunRow:
    run: Run
    owner: str
    issue_url: str


def runs_rows(rows: Sequence[RunRow], now: float | None = None) -> str:
    """The runs table's body (also served alone for the live refresh)."""
    return render("runs_rows.html", rows=rows, now=now or time.time())


def runs_spend(spend: Today) -> str:
    """Today's spend above the runs table (also served alone for the live refresh, so it
    counts the runs' cost as the rows below do)."""
    return render("runs_spend.html", spend=spend)


def runs_page(rows: Sequence[RunRow], *, state: str, repo: str, repos: Iterable[str],
              paused: dict[str, Any] | None, spend: Today | None = None) -> str:
    """The runs list with its filters, Kill all and Resume, and today's spend."""
    query = urlencode({k: v for k, v in (("state", state), ("repo", repo)) if v})
    return layout("Runs", "runs.html", paused=bool(paused), rows=rows, state=state,
                  repo=repo, repos=list(repos), paused_by=paused, spend=spend, query=query,
                  states=STATE_FILTERS, now=time.time())


# ------------------------------------------------------------------ one run


@dataclass(frozen=True)
class Segment:
    """One state of the run on the timeline: when it began and how long it lasted."""

    state: str
    start: float
    seconds: float
    iteration: int
    share: int  # 1..100: its width, in hundredths of the bar


@dataclass(frozen=True)
class Mark:
    """Something that happened at a moment: an iteration's follow-up, a kill, a failure."""

    kind: str  # iteration | kill | failed
    label: str
    at: float
    position: int  # 0..100: where on the bar


@dataclass
class Group:
    """The events of one iteration (0: before the agent first ran)."""

    iteration: int
    events: list[Event] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"Iteration {self.iteration}" if self.iteration else "Preparing"

    def counts(self) -> str:
        """``5 tool calls, 4 model turns``: what the folded group holds."""
        tools = sum(1 for e in self.events if e.kind == "agent.tool")
        turns = sum(1 for e in self.events if e.kind == "agent.turn")
        parts = [f"{tools} tool call{'s' if tools != 1 else ''}" if tools else "",
                 f"{turns} model turn{'s' if turns != 1 else ''}" if turns else "",
                 f"{len(self.events)} events"]
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class Timeline:
    segments: list[Segment]
    marks: list[Mark]
    total: float


def iteration_of(events: Sequence[Event]) -> list[int]:
    """Each event's iteration: a move to ``running`` starts the next one."""
    current, out = 0, []
    for ev in events:
        if ev.kind == "transition" and ev.data.get("to") == RunState.RUNNING.value:
            current += 1
        out.append(current)
    return out


def group_events(events: Sequence[Event]) -> list[Group]:
    """The events in groups by iteration, in order."""
    groups: list[Group] = []
    for ev, iteration in zip(events, iteration_of(events), strict=True):
        if not groups or groups[-1].iteration != iteration:
            groups.append(Group(iteration))
        groups[-1].events.append(ev)
    return groups


def timeline(run: Run, events: Sequence[Event], now: float | None = None) -> Timeline:
    """The run's states as segments of one bar, and the marks on it."""
    moves = [e for e in events if e.kind == "transition"]
    if not moves:
        return Timeline([], [], 0.0)
    start = moves[0].at
    end = moves[-1].at if run.terminal else max(now or time.time(), moves[-1].at)
    total = max(end - start, 0.001)
    segments: list[Segment] = []
    iteration = 0
    for index, move in enumerate(moves):
        to = str(move.data.get("to"))
        if to == RunState.RUNNING.value:
            iteration += 1
        if to in {s.value for s in RunState if s.terminal}:
            break
        until = moves[index + 1].at if index + 1 < len(moves) else end
        seconds = max(until - move.at, 0.0)
        segments.append(Segment(to, move.at, seconds, iteration,
                                max(1, round(100 * seconds / total))))

    def where(at: float) -> int:
        return max(0, min(100, round(100 * (at - start) / total)))

    marks = [Mark("iteration", f"iteration {e.data.get('iteration')}: "
                  + ", ".join(str(f) for f in e.data.get("failures") or []), e.at, where(e.at))
             for e in events if e.kind == "iteration"]
    marks += [Mark("kill", f"kill by {e.data.get('actor') or e.actor}", e.at, where(e.at))
              for e in events if e.kind == "kill_requested"]
    if run.state is RunState.FAILED:
        marks.append(Mark("failed", f"failed: {run.reason}", end, 100))
    return Timeline(segments, marks, total)


def run_page(run: Run, events: Sequence[Event], *, owner: str, issue_link: str,
             paused: bool) -> str:
    """One run: its facts, the timeline, its events by iteration (live), the Kill button."""
    groups = group_events(events)
    return layout(f"Run {run.id}", "run.html", paused=paused, run=run, owner=owner,
                  issue_link=issue_link, groups=groups, timeline=timeline(run, events),
                  last=events[-1].seq if events else 0)


def event_html(ev: Event) -> str:
    """One event as a list item of the run page (also sent alone by the live stream)."""
    return render("event.html", ev=ev)


# ------------------------------------------------------------------ health


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def health_page(checks: Sequence[Check], status: dict[str, Any]) -> str:
    """Store, Docker, forges, the queue, slots and pause state."""
    paused = status.get("paused")
    return layout("Health", "health.html", paused=bool(paused), checks=checks, status=status,
                  paused_by=paused if isinstance(paused, dict) else None)
