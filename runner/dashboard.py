"""The dashboard's HTML: server-rendered pages, escaped everywhere.

Every value from a run or an event is untrusted (an AI agent wrote much of it), so it goes
through ``e()`` before it reaches HTML, and links are kept only when they are http(s). The
pages load one stylesheet and one script from ``runner/templates/`` (served by the server
under a Content-Security-Policy that forbids inline script), and get live updates over
Server-Sent Events.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from runner.config import Settings
from runner.model import Event, Run, RunState
from runner.spend import Today

TEMPLATES = Path(__file__).resolve().parent / "templates"
OUTPUT_CHARS = 20000  # longer tool output is cut in the page (the API has all of it)


def e(value: object) -> str:
    """HTML-escape any value (quotes too, so it is safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def safe_url(url: object) -> str:
    """``url`` escaped for an href if it is http(s); otherwise empty."""
    text = str(url or "")
    return e(text) if text.startswith(("http://", "https://")) else ""


def link(url: object, text: object) -> str:
    """An escaped link, or just the escaped text when the URL is not http(s)."""
    href = safe_url(url)
    return f'<a href="{href}" rel="noreferrer">{e(text)}</a>' if href else e(text)


def asset(name: str) -> str:
    """The text of a file under ``runner/templates/``."""
    return (TEMPLATES / name).read_text(encoding="utf-8")


def age(since: float, now: float | None = None) -> str:
    """A short human age: 5s, 3m, 2h, 4d."""
    seconds = max(0, int((now or time.time()) - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


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


def badge(state: RunState | str) -> str:
    return f'<span class="badge s-{e(state)}" data-state>{e(state)}</span>'


# ------------------------------------------------------------------ layout


def layout(title: str, body: str, *, signed_in: bool = True, paused: bool = False) -> str:
    """A whole page around ``body`` (already-escaped HTML)."""
    nav = ""
    if signed_in:
        nav = ('<nav><a href="/runs">Runs</a><a href="/health">Health</a>'
               '<form method="post" action="/logout" class="inline">'
               '<button class="link" type="submit">Log out</button></form></nav>')
    banner = ('<div class="banner">Dispatch is paused: no new runs start until someone '
              'resumes it.</div>') if paused else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · orchestrator</title>"
        '<link rel="stylesheet" href="/static/dashboard.css">'
        '<script src="/static/dashboard.js" defer></script></head><body>'
        f'<header><a class="brand" href="/runs">orchestrator</a>{nav}</header>'
        f"{banner}<main>{body}</main></body></html>"
    )


def login_page(*, error: str = "", next_path: str = "/runs", configured: bool = True) -> str:
    """The login form: the API token, posted to /login, sets the session cookie."""
    problem = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    if not configured:
        problem += ('<p class="error">No API token is configured: set the environment '
                    'variable named by <code>server.api_token_env</code> and restart.</p>')
    body = (
        '<section class="card narrow"><h1>Sign in</h1>'
        "<p>Paste the runner's API token (the value of "
        "<code>server.api_token_env</code>).</p>"
        f"{problem}"
        '<form method="post" action="/login" class="stack">'
        f'<input type="hidden" name="next" value="{e(next_path)}">'
        '<label>API token <input type="password" name="token" id="token" required '
        'autocomplete="current-password" autofocus></label>'
        '<button type="submit" class="primary">Sign in</button></form></section>'
    )
    return layout("Sign in", body, signed_in=False)


# ------------------------------------------------------------------ runs


@dataclass(frozen=True)
class RunRow:
    run: Run
    owner: str
    issue_url: str


def runs_rows(rows: Sequence[RunRow], now: float | None = None) -> str:
    """The runs table's body (also served alone for the live refresh)."""
    if not rows:
        return '<tr><td colspan="9" class="empty">No runs match.</td></tr>'
    out = []
    for row in rows:
        run = row.run
        pr = link(run.pr_url, f"#{run.pr_number}") if run.pr_number else "-"
        pr += f" {e(run.details.pull_state)}" if run.details.pull_state else ""
        out.append(
            f'<tr data-run="{e(run.id)}">'
            f'<td><a href="/runs/{e(run.id)}"><code>{e(run.id)}</code></a></td>'
            f"<td>{badge(run.state)}</td><td>{e(run.repo)}</td>"
            f"<td>{link(row.issue_url, f'#{run.issue}')} "
            f'<span class="muted">{e(run.issue_title[:80])}</span></td>'
            f"<td>{pr}</td><td>{e(run.iteration)}</td>"
            f'<td title="{e(time.ctime(run.created_at))}">{e(age(run.created_at, now))}</td>'
            f'<td class="num">${run.cost_usd:.4f}</td>'
            f'<td><span class="muted">{e(row.owner or "-")}</span></td></tr>'
        )
    return "".join(out)


STATE_FILTERS = ("", "active", *[s.value for s in RunState])


def runs_page(rows: Sequence[RunRow], *, state: str, repo: str, repos: Iterable[str],
              paused: dict[str, Any] | None, spend: Today | None = None) -> str:
    """The runs list with its filters, Kill all and Resume, and today's spend."""
    state_opts = "".join(
        f'<option value="{e(s)}"{" selected" if s == state else ""}>{e(s or "all states")}'
        "</option>" for s in STATE_FILTERS)
    repo_opts = '<option value="">all repositories</option>' + "".join(
        f'<option value="{e(r)}"{" selected" if r == repo else ""}>{e(r)}</option>'
        for r in repos)
    pause_note = ""
    if paused:
        pause_note = (f'<p class="muted">Paused by {e(paused.get("actor"))}: '
                      f'{e(paused.get("reason"))}</p>')
    query = urlencode({k: v for k, v in (("state", state), ("repo", repo)) if v})
    body = (
        '<div class="toolbar"><h1>Runs</h1><div class="actions">'
        '<button class="danger" data-open="kill-all-dialog">Kill all…</button>'
        f'<button data-open="resume-dialog"{"" if paused else " disabled"}>Resume…</button>'
        "</div></div>"
        f"{pause_note}{spend_note(spend)}"
        '<form method="get" action="/runs" class="filters">'
        f'<label>State <select name="state">{state_opts}</select></label>'
        f'<label>Repository <select name="repo">{repo_opts}</select></label>'
        '<button type="submit">Filter</button></form>'
        '<div class="card"><table class="runs"><thead><tr><th>Run</th><th>State</th>'
        "<th>Repository</th><th>Issue</th><th>PR</th><th>Iter.</th><th>Age</th>"
        "<th>Cost</th><th>Process</th></tr></thead>"
        f'<tbody id="runs-body" data-refresh="/runs/rows?{e(query)}">'
        f"{runs_rows(rows)}</tbody></table></div>"
        + _dialog("kill-all-dialog", "Kill all runs",
                  "Every active run is stopped (agent, container, worktree) and dispatch is "
                  "paused until someone resumes it. This cannot be undone.",
                  action="/api/kill-all", button="Kill all runs", reason=True)
        + _dialog("resume-dialog", "Resume dispatch",
                  "Queued and new runs start again.", action="/api/resume",
                  button="Resume dispatch", reason=False, danger=False)
    )
    return layout("Runs", body, paused=bool(paused))


def spend_note(spend: Today | None) -> str:
    """Today's spend against the budgets; a banner when one is at 90 % or more."""
    if spend is None:
        return ""
    lines = "".join(f"<div>{e(line)}</div>" for line in spend.lines())
    banner = ""
    if spend.warnings:
        banner = ('<div class="banner">The daily spend budget is nearly or fully spent: '
                  "new runs wait queued once it is reached (running runs finish).</div>")
    return f'{banner}<div class="muted spend">{lines}</div>'


def _dialog(ident: str, title: str, text: str, *, action: str, button: str, reason: bool,
            danger: bool = True) -> str:
    field = ('<label>Reason (recorded in the audit log) <textarea name="reason" required '
             'rows="3" maxlength="500"></textarea></label>') if reason else ""
    return (
        f'<dialog id="{e(ident)}"><form method="dialog" class="stack" '
        f'data-action="{e(action)}"><h2>{e(title)}</h2><p>{e(text)}</p>{field}'
        '<p class="error" data-error></p><div class="actions">'
        '<button value="cancel" formnovalidate data-cancel>Cancel</button>'
        f'<button type="submit" class="{"danger" if danger else "primary"}" data-confirm>'
        f"{e(button)}</button></div></form></dialog>"
    )


# ------------------------------------------------------------------ one run


def run_page(run: Run, events: Sequence[Event], *, owner: str, issue_link: str,
             paused: bool) -> str:
    """One run: its facts, its live event stream and the Kill button."""
    last = events[-1].seq if events else 0
    pr = link(run.pr_url, f"PR #{run.pr_number}") if run.pr_number else "no PR yet"
    pr += f" ({e(run.details.pull_state)})" if run.details.pull_state else ""
    facts = [
        ("State", badge(run.state)),
        ("Issue", link(issue_link, f"{run.repo}#{run.issue}")),
        ("Pull request", pr),
        ("Branch", f"<code>{e(run.branch or '-')}</code>"),
        ("Iteration", e(run.iteration)),
        ("Cost", f"${run.cost_usd:.4f} · {e(run.tokens_in)} in / {e(run.tokens_out)} out"),
        ("Started", f"{e(time.ctime(run.created_at))} ({e(age(run.created_at))} ago)"),
        ("Triggered by", e(run.trigger_actor or "-")),
        *([("Follows", f'<a href="/runs/{e(run.details.follows)}"><code>'
                       f'{e(run.details.follows)}</code></a> ({e(run.details.follow_up_kind)})')]
          if run.details.follows else []),
        ("Process", e(owner or "-")),
    ]
    if run.terminal:
        facts.append(("Ended", e(run.reason or "-")))
    if run.killed_by:
        facts.append(("Killed by", e(run.killed_by)))
    facts_html = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    kill = "" if run.terminal else \
        '<button class="danger" id="kill-button" data-open="kill-dialog">Kill…</button>'
    body = (
        f'<div class="toolbar"><h1><code>{e(run.id)}</code> {e(run.issue_title)}</h1>'
        f'<div class="actions">{kill}</div></div>'
        f'<div class="card"><dl class="facts">{facts_html}</dl></div>'
        '<h2>Events <span class="live" id="live">live</span></h2>'
        f'<ol class="events" id="events" data-stream="/runs/{e(run.id)}/stream" '
        f'data-after="{last}" data-terminal="{"1" if run.terminal else "0"}">'
        + "".join(event_html(ev) for ev in events) + "</ol>"
        + _dialog("kill-dialog", f"Kill run {run.id}",
                  "The agent is stopped, its container removed and its worktree cleaned up; "
                  "the issue gets a comment. This cannot be undone.",
                  action=f"/api/runs/{run.id}/kill", button="Kill this run", reason=True)
    )
    return layout(f"Run {run.id}", body, paused=paused)


def _pre(text: object, cls: str = "") -> str:
    value = str(text or "")
    if len(value) > OUTPUT_CHARS:
        value = value[:OUTPUT_CHARS] + f"\n… ({len(value) - OUTPUT_CHARS} more characters)"
    return f'<pre class="{e(cls)}">{e(value)}</pre>' if value else ""


def _event_body(ev: Event) -> tuple[str, str]:
    """The event's one-line summary and its detail HTML (both escaped)."""
    d = ev.data
    if ev.kind == "transition":
        head = f"{e(d.get('from'))} → {badge(str(d.get('to', '')))}"
        return head, (f'<p class="muted">{e(d.get("reason"))}</p>' if d.get("reason") else "")
    if ev.kind == "agent.turn":
        tools = ", ".join(str(t) for t in d.get("tools") or []) or "no tool"
        head = (f"model turn {e(d.get('turn'))}: {e(tools)} · {e(d.get('tokens_in'))} in / "
                f"{e(d.get('tokens_out'))} out · ${float(d.get('cost_usd') or 0):.4f}")
        return head, _pre(d.get("text"), "say")
    if ev.kind == "agent.tool":
        args: dict[str, Any] = d["input"] if isinstance(d.get("input"), dict) else {}
        command = args.get("command") if "command" in args else json.dumps(args, default=str)
        status = "error" if d.get("is_error") else "ok"
        code = d.get("exit_code")
        head = (f"tool <b>{e(d.get('tool'))}</b> · {e(status)}"
                + (f" · exit {e(code)}" if code is not None else "")
                + (f" · {e(d.get('seconds'))}s" if d.get("seconds") is not None else ""))
        detail = _pre(command, "cmd") + (
            f"<details open><summary>output</summary>{_pre(d.get('output'))}</details>"
            if d.get("output") else "")
        return head, detail
    if ev.kind == "agent.output":
        return "agent output", _pre(d.get("text"))
    if ev.kind == "gates":
        results = [r for r in d.get("results") or [] if isinstance(r, dict)]
        failed = sum(1 for r in results if not r.get("passed"))
        head = f"gates ({e(d.get('stage'))}): " + (
            e(d["skipped"]) if d.get("skipped") else
            f"{len(results) - failed} passed, {failed} failed")
        items = "".join(
            f'<li class="{"ok" if r.get("passed") else "bad"}">{"✓" if r.get("passed") else "✗"}'
            f" <b>{e(r.get('gate'))}</b> {e(r.get('message'))} "
            f'<span class="muted">expected {e(r.get("expected"))}, got {e(r.get("actual"))}'
            "</span></li>" for r in results)
        return head, f'<ul class="gates">{items}</ul>' if items else ""
    if ev.kind == "ci":
        contexts: dict[str, Any] = d["contexts"] if isinstance(d.get("contexts"), dict) else {}
        items = "".join(f"<li>{e(k)}: {e(v)}</li>" for k, v in contexts.items())
        return (f"CI on <code>{e(str(d.get('sha', ''))[:12])}</code>: {e(d.get('state'))}",
                f'<ul class="gates">{items}</ul>' if items else "")
    if ev.kind == "review":
        findings = [f for f in d.get("findings") or [] if isinstance(f, dict)]
        items = "".join(
            f"<li><code>{e(f.get('path'))}:{e(f.get('line'))}</code> {e(f.get('message'))}</li>"
            for f in findings)
        head = f"AI review: {e(d.get('verdict'))} (confidence {e(d.get('confidence'))})"
        return head, _pre(d.get("summary"), "say") + (
            f'<ul class="gates">{items}</ul>' if items else "")
    if ev.kind in ("kill_requested", "killed"):
        return (f"{'kill requested' if ev.kind == 'kill_requested' else 'killed'} by "
                f"{e(d.get('actor') or ev.actor)}", f'<p>{e(d.get("reason"))}</p>')
    if ev.kind == "pull_request":
        return f"pull request {link(d.get('url'), '#' + str(d.get('number')))}", ""
    if ev.kind == "pushed":
        return (f"pushed <code>{e(d.get('branch'))}</code> at "
                f"<code>{e(str(d.get('sha', ''))[:12])}</code>"), ""
    return e(ev.kind), _fields(d)


def _fields(data: dict[str, Any]) -> str:
    """Other events' data: short values inline, long or nested ones as a block."""
    inline, blocks = [], []
    for key, value in sorted(data.items()):
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if isinstance(value, dict | list) or len(text) > 160 or "\n" in text:
            blocks.append(f"<div><span class=\"muted\">{e(key)}</span>{_pre(text)}</div>")
        else:
            inline.append(f"<span><span class=\"muted\">{e(key)}</span> {e(text)}</span>")
    row = f'<div class="kv">{"".join(inline)}</div>' if inline else ""
    return row + "".join(blocks)


def event_html(ev: Event) -> str:
    """One event as a list item of the run page."""
    head, detail = _event_body(ev)
    kind_class = ev.kind.replace(".", "-")
    return (f'<li class="ev k-{e(kind_class)}" id="ev-{e(ev.seq)}">'
            f'<div class="ev-head"><span class="seq">#{e(ev.seq)}</span>'
            f'<time>{e(clock(ev.at))}</time><span class="kind">{e(ev.kind)}</span>'
            f'<span class="what">{head}</span><span class="actor">{e(ev.actor)}</span></div>'
            f"{detail}</li>")


# ------------------------------------------------------------------ health


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def health_page(checks: Sequence[Check], status: dict[str, Any]) -> str:
    """Store, Docker, forges, the queue, slots and pause state."""
    items = "".join(
        f'<tr><td>{e(c.name)}</td><td><span class="badge {"s-succeeded" if c.ok else "s-failed"}">'
        f'{"ok" if c.ok else "failing"}</span></td><td>{e(c.detail)}</td></tr>' for c in checks)
    paused = status.get("paused")
    facts = [
        ("Process", e(status.get("worker"))),
        ("Queue depth", e(status.get("queue"))),
        ("Slots in use", f"{e(status.get('slots_in_use'))} of {e(status.get('slots'))}"),
        ("Warm sandboxes", f"{e(status.get('warm_sandboxes'))} of {e(status.get('warm_target'))}"
         " ready"),
        ("Dispatch", f"paused by {e(paused.get('actor'))}: {e(paused.get('reason'))}"
         if isinstance(paused, dict) else "running"),
        ("Last poll", e(clock(status["last_poll"])) if status.get("last_poll") else "never"),
    ]
    facts_html = "".join(f"<dt>{n}</dt><dd>{v}</dd>" for n, v in facts)
    body = (
        '<div class="toolbar"><h1>Health</h1></div>'
        f'<div class="card"><dl class="facts">{facts_html}</dl></div>'
        '<div class="card"><table><thead><tr><th>Part</th><th>Status</th><th>Detail</th>'
        f"</tr></thead><tbody>{items}</tbody></table></div>"
    )
    return layout("Health", body, paused=bool(paused))
