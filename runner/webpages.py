"""The dashboard's routes: login, runs, one run with its live stream, health, assets.

Pages need the session cookie set by the login form or a one-time sign-in link (or a bearer
token); without it they redirect to ``/login``. Kill, kill-all and resume go through the JSON
API from the page's script, with the CSRF header ``webauth`` requires.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from runner import dashboard, eventstream
from runner.forge.budget import ForgeStats, budget_line
from runner.model import ACTIVE, Event, RunState, is_run_id
from runner.run.spending import spend_today
from runner.store.base import RunNotFound, StoreError
from runner.webauth import SIGN_IN_PATH, Auth, Caller, SignInRefused

if TYPE_CHECKING:
    from runner.wiring import Runner

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
                    "Cache-Control": "no-store"}
ASSETS = {"dashboard.css": "text/css; charset=utf-8",
          "dashboard.js": "text/javascript; charset=utf-8"}
LOGIN_FAILURE_DELAY_S = 0.5


def page_response(text: str, status: int = 200) -> HTMLResponse:
    """An HTML page with the dashboard's security headers."""
    return HTMLResponse(text, status_code=status, headers=SECURITY_HEADERS)


def _safe_next(value: str) -> str:
    """Only local paths: never redirect a login to another site."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/runs"


def _message(title: str, text: str, status: int) -> HTMLResponse:
    return page_response(dashboard.message_page(title, text), status)


Handler = Callable[[Request, Caller], Awaitable[Response]]


class Pages:
    """Dashboard handlers bound to one wired runner."""

    def __init__(self, runner: Runner, auth: Auth, closing: threading.Event) -> None:
        self.runner, self.store, self.settings = runner, runner.store, runner.settings
        self.auth, self.closing = auth, closing

    def signed_in(self, handler: Handler, *, redirect: bool = True
                  ) -> Callable[[Request], Awaitable[Response]]:
        """Run ``handler`` for a signed-in caller; otherwise the login page (or 401)."""
        async def wrapper(request: Request) -> Response:
            caller = self.auth.caller(request)
            if caller is None:
                if not redirect:
                    return Response("sign in first", status_code=401)
                target = quote(request.url.path + (f"?{request.url.query}"
                                                   if request.url.query else ""), safe="")
                return RedirectResponse(f"/login?next={target}", status_code=303)
            try:
                return await handler(request, caller)
            except RunNotFound as exc:
                return _message("No such run", str(exc), 404)
            except StoreError as exc:
                return _message("The store does not answer", str(exc), 503)
        return wrapper

    # ------------------------------------------------------------ login

    async def login_form(self, request: Request) -> Response:
        if self.auth.caller(request) is not None:
            return RedirectResponse(_safe_next(request.query_params.get("next", "/runs")),
                                    status_code=303)
        return page_response(dashboard.login_page(
            next_path=_safe_next(request.query_params.get("next", "/runs")),
            configured=self.auth.configured()))

    async def login(self, request: Request) -> Response:
        body = (await request.body())[:8192].decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(body).items() if v}
        next_path = _safe_next(form.get("next", "/runs"))
        origin = request.headers.get("origin")
        if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
            return page_response(dashboard.login_page(error="cross-site login refused",
                                                      next_path=next_path), 403)
        if not self.auth.check_token(form.get("token", "")):
            await asyncio.sleep(LOGIN_FAILURE_DELAY_S)
            return page_response(dashboard.login_page(
                error="That is not the API token.", next_path=next_path,
                configured=self.auth.configured()), 401)
        response = RedirectResponse(next_path, status_code=303)
        self.auth.log_in(response, request)
        return response

    async def sign_in_link(self, request: Request) -> Response:
        """A one-time sign-in link (``Auth.sign_in_url``): sets the session cookie once."""
        next_path = _safe_next(request.query_params.get("next", "/runs"))
        try:
            self.auth.redeem(request.query_params.get("ticket", ""))
        except SignInRefused as exc:
            return page_response(dashboard.login_page(error=str(exc), next_path=next_path,
                                                      configured=self.auth.configured()), 403)
        response = page_response(dashboard.signed_in_page(next_path))
        self.auth.log_in(response, request)
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        self.auth.log_out(response)
        return response

    # ------------------------------------------------------------ runs

    def _rows(self, state: str, repo: str) -> list[dashboard.RunRow]:
        states = None
        if state == "active":
            states = ACTIVE
        elif state in {s.value for s in RunState}:
            states = frozenset({RunState(state)})
        runs = self.store.list_runs(states=states, repo=repo or None, limit=200)
        rows = []
        for run in runs:
            lease = None if run.terminal else self.store.current_lease(run.id)
            rows.append(dashboard.RunRow(run, lease.worker if lease else "",
                                         dashboard.issue_url(self.settings, run)))
        return rows

    def _filters(self, request: Request) -> tuple[str, str]:
        state = request.query_params.get("state", "")
        repo = request.query_params.get("repo", "")
        return (state if state in dashboard.STATE_FILTERS else "",
                repo if repo in {r.name for r in self.settings.repos} else "")

    async def runs(self, request: Request, caller: Caller) -> Response:
        state, repo = self._filters(request)
        rows = await run_in_threadpool(self._rows, state, repo)
        paused = await run_in_threadpool(self.store.paused)
        spend = await run_in_threadpool(spend_today, self.store, self.settings)
        return page_response(dashboard.runs_page(rows, state=state, repo=repo,
                                                 repos=[r.name for r in self.settings.repos],
                                                 paused=paused, spend=spend))

    async def runs_rows(self, request: Request, caller: Caller) -> Response:
        state, repo = self._filters(request)
        rows = await run_in_threadpool(self._rows, state, repo)
        return page_response(dashboard.runs_rows(rows))

    async def runs_spend(self, request: Request, caller: Caller) -> Response:
        spend = await run_in_threadpool(spend_today, self.store, self.settings)
        return page_response(dashboard.runs_spend(spend))

    async def run(self, request: Request, caller: Caller) -> Response:
        run_id = request.path_params["run_id"]
        if not is_run_id(run_id):
            raise RunNotFound(run_id)

        def load() -> Response:
            run = self.store.get_run(run_id)
            events = self.store.events(run_id, limit=1000)
            lease = None if run.terminal else self.store.current_lease(run_id)
            return page_response(dashboard.run_page(
                run, events, owner=lease.worker if lease else "",
                issue_link=dashboard.issue_url(self.settings, run),
                paused=self.store.paused() is not None))

        return await run_in_threadpool(load)

    async def stream(self, request: Request, caller: Caller) -> Response:
        run_id = request.path_params["run_id"]
        if not is_run_id(run_id):
            raise RunNotFound(run_id)
        after = eventstream.start_after(request)
        earlier = await run_in_threadpool(self.store.events, run_id, limit=100_000)
        iteration = [max([0, *dashboard.iteration_of([e for e in earlier if e.seq <= after])])]

        def render(event: Event) -> tuple[str, str]:
            state = event.data.get("to") if event.kind == "transition" else None
            if state == RunState.RUNNING.value:
                iteration[0] += 1
            run = self.store.get_run(run_id)  # cost, killer and reason, live on the page
            return "ev", json.dumps({
                "seq": event.seq, "html": dashboard.event_html(event), "iteration": iteration[0],
                "state": str(state) if state else None, "cost": dashboard.money(run),
                "killed_by": run.killed_by, "reason": run.reason if run.terminal else ""})

        return eventstream.response(eventstream.follow(
            self.store, run_id, after, render, self.closing))

    # ------------------------------------------------------------ health

    def checks(self) -> list[dashboard.Check]:
        """Store, sandbox engine and forges, each with what is wrong when it fails."""
        import httpx

        found: list[dashboard.Check] = []
        try:
            self.store.ping()
            found.append(dashboard.Check("store", True, "answers"))
        except StoreError as exc:
            found.append(dashboard.Check("store", False, str(exc)))
        backend = self.settings.sandbox.backend
        try:
            self.runner.steps.services.sandboxes.ping()
            found.append(dashboard.Check(f"sandbox ({backend})", True, "ready"))
        except Exception as exc:  # any engine failure is shown, not raised  # noqa: BLE001
            found.append(dashboard.Check(f"sandbox ({backend})", False, str(exc)))
        for name, forge in self.settings.forges.items():
            stats = getattr(self.runner.forges.get(name), "stats", None)
            budget = f"; {budget_line(stats)}" if isinstance(stats, ForgeStats) else ""
            try:
                reply = httpx.get(forge.base_url, timeout=3.0)
                ok = reply.status_code < 500
                found.append(dashboard.Check(
                    f"forge {name} ({forge.kind})", ok,
                    f"{forge.base_url} answered {reply.status_code}{budget}"))
            except httpx.HTTPError as exc:
                found.append(dashboard.Check(f"forge {name} ({forge.kind})", False,
                                             f"{forge.base_url}: {exc}"))
        return found

    async def health(self, request: Request, caller: Caller) -> Response:
        checks = await run_in_threadpool(self.checks)
        status = await run_in_threadpool(self.runner.controller.status)
        return page_response(dashboard.health_page(checks, status))

    # ------------------------------------------------------------ assets

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return Response("not found", status_code=404)
        return Response(dashboard.asset(name), media_type=ASSETS[name],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/runs", status_code=303)

    def routes(self) -> list[Route]:
        """The dashboard's routes."""
        return [
            Route("/", self.home, methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route(SIGN_IN_PATH, self.sign_in_link, methods=["GET"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/runs", self.signed_in(self.runs), methods=["GET"]),
            Route("/runs/rows", self.signed_in(self.runs_rows, redirect=False), methods=["GET"]),
            Route("/runs/spend", self.signed_in(self.runs_spend, redirect=False),
                  methods=["GET"]),
            Route("/runs/{run_id}", self.signed_in(self.run), methods=["GET"]),
            Route("/runs/{run_id}/stream", self.signed_in(self.stream, redirect=False),
                  methods=["GET"]),
            Route("/health", self.signed_in(self.health), methods=["GET"]),
            Route("/static/{name}", self.asset, methods=["GET"]),
        ]
