"""A GitHub or Forgejo forge on a loopback port, with real git behind it.

    with ForgeEmulator("github", tmp_path) as forge:
        forge.add_user("maintainer")
        bot = forge.add_user("orchestrator-bot")
        forge.create_repo("maintainer/app", files={"README.md": "hi"})
        forge.grant("maintainer/app", "orchestrator-bot", "write")
        number = forge.open_issue("maintainer/app", "Fix it", as_user="maintainer",
                                  labels=["orchestrator"])

The emulator answers the REST API of its flavour (``/api/v3`` for GitHub, ``/api/v1`` for
Forgejo), serves each repository over git smart HTTP at ``/{owner}/{name}.git`` (token as
the Basic password or a Bearer token; pushing needs write permission), delivers signed
webhooks to registered URLs, runs a configured CI command when a pull request's branch is
pushed, and can be told to fail the next requests (429 with Retry-After, 502, 500) or to
serve git slowly (``slow_git``: each fetch or push waits before its first answer).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import queue
import secrets
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from runner.testing import forge_git
from runner.testing.forge_api import BaseApi, ForgejoApi, GitHubApi, Reply, Request, dumps
from runner.testing.forge_apps import App, AppRegistry, AppRoutes, Installation
from runner.testing.forge_budget import SECONDARY, RequestBudget, etag_matches, etag_of
from runner.testing.forge_forgejo import ForgejoRenderer
from runner.testing.forge_github import GitHubRenderer
from runner.testing.forge_pages import ForgePages
from runner.testing.forge_review_api import install_review_routes
from runner.testing.forge_reviews import Reviews, ReviewWorld
from runner.testing.forge_state import (
    CIConfig,
    EmulatorError,
    ForgeState,
    Happening,
    Hook,
    Issue,
    Repo,
    User,
)

Flavour = Literal["github", "forgejo"]
GitService = Literal["upload-pack", "receive-pack"]


@dataclass(frozen=True)
class Exchange:
    """One API request and its answer, as observers (the contract tests) see it."""

    flavour: Flavour
    method: str
    path: str  # relative to the API root, e.g. /repos/o/r/issues/1
    query: dict[str, str]
    request_body: bytes
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Delivery:
    """One webhook delivery: what was sent, where, and what the receiver answered."""

    id: str
    url: str | None
    event: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Fault:
    status: int
    retry_after: str | None
    remaining: int | None  # requests left to fail, or None when time-bound
    until: float | None
    message: str = "emulated outage"


@dataclass
class CIJob:
    id: int
    repo: str
    sha: str
    log_path: Path
    state: str = "pending"
    done: threading.Event = field(default_factory=threading.Event)
    finished_at: float = 0.0  # epoch seconds when its final status was posted


@dataclass(frozen=True)
class Write:
    """One request that may change the forge (not a GET), with the client's address: which
    runner of a fleet wrote, and when (tests/fleet)."""

    at: float  # epoch seconds
    client: str
    method: str
    path: str


class ForgeEmulator(ReviewWorld):
    """A stateful forge on 127.0.0.1 (or ``host``); see the module docstring for the tour.
    Pull request reviews, replies, closing and merging: ``ReviewWorld`` (forge_reviews.py)."""

    def __init__(self, flavour: Flavour, workdir: str | Path, *, port: int = 0,
                 host: str = "127.0.0.1") -> None:
        if flavour not in ("github", "forgejo"):
            raise ValueError(f"flavour must be github or forgejo, not {flavour!r}")
        self.flavour: Flavour = flavour
        self.workdir = Path(workdir)
        self.git_root = self.workdir / "git"
        self.git_root.mkdir(parents=True, exist_ok=True)
        self.state = ForgeState()
        self.state.listeners.append(self._on_happening)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # ``host``: e.g. a Docker network's gateway address, for runners in containers.
        self._sock.bind((host, port))
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://{host}:{self.port}"
        self.github = GitHubRenderer(self.url)
        self.forgejo = ForgejoRenderer(self.url)
        self.api: BaseApi = (GitHubApi(self.state, self.github) if flavour == "github"
                             else ForgejoApi(self.state, self.forgejo))
        self.reviews = Reviews(self.state, flavour)
        install_review_routes(self.api, self.reviews)
        self.apps = AppRegistry(self.state)
        self.budget = RequestBudget()
        if flavour == "github":
            AppRoutes(self.apps, self.github).install_on(self.api)
        self.observers: list[Callable[[Exchange], None]] = []
        self.exchanges: list[Exchange] = []
        self.writes: list[Write] = []
        self.deliveries: list[Delivery] = []
        self.ci_jobs: list[CIJob] = []
        self._faults: list[_Fault] = []
        self._slow_git: dict[GitService, float] = {}
        self._slow_api: dict[str, float] = {}  # part of an API path -> seconds before answering
        self.git_waits_aborted = 0  # slow git requests whose client hung up while waiting
        self._after_faults: list[list[Any]] = []  # [requests left, status, methods]
        self._outbox: queue.Queue[Delivery | None] = queue.Queue()
        self._busy = 0
        self._busy_lock = threading.Condition()
        self._server: uvicorn.Server | None = None
        self._threads: list[threading.Thread] = []
        self._http = httpx.Client(timeout=10.0)
        self.ci_user = self._make_user("emulator-ci")
        self.pages: ForgePages | None = None  # pages for people, once serve_pages is called

    # ------------------------------------------------------------ lifecycle

    @property
    def api_url(self) -> str:
        """The API root a client is given: ``.../api/v3`` (GitHub) or ``.../api/v1``."""
        return f"{self.url}/api/v3" if self.flavour == "github" else f"{self.url}/api/v1"

    @property
    def base_url(self) -> str:
        """What ``forges.<name>.base_url`` is set to for this emulator."""
        return self.api_url if self.flavour == "github" else self.url

    def start(self) -> ForgeEmulator:
        """Serve on the loopback port; returns when requests are answered."""
        app = Starlette(routes=[Route("/{path:path}", self._dispatch,
                                      methods=["GET", "POST", "PATCH", "PUT", "DELETE"])])
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        server = self._server
        serve = threading.Thread(target=lambda: server.run(sockets=[self._sock]),
                                 name=f"forge-{self.flavour}", daemon=True)
        deliver = threading.Thread(target=self._deliver_loop, name="forge-webhooks",
                                   daemon=True)
        self._threads = [serve, deliver]
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the forge emulator did not start within 10s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and delivering. Safe to call twice."""
        if self._server is not None:
            self._server.should_exit = True
            self._outbox.put(None)
            for thread in self._threads:
                thread.join(10)
            self._server = None
            self._http.close()
            self._sock.close()

    def __enter__(self) -> ForgeEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_pages(self, acting_as: str, *, dashboard_url: str = "", note: str = "",
                    sign_in: Callable[[str], str] | None = None) -> None:
        """Serve HTML pages for people (runner/testing/forge_pages.py), acting as the user
        ``acting_as`` through this emulator's API; ``sign_in`` makes a one-time link that
        signs the dashboard in at a path (the pages' dashboard links open through it)."""
        self.pages = ForgePages(self, acting_as, dashboard_url=dashboard_url, note=note,
                                sign_in=sign_in)

    # ------------------------------------------------------------ setup

    def _make_user(self, login: str, token: str | None = None,
                   site_admin: bool = False) -> User:
        with self.state.lock:
            user = User(login=login, id=self.state.next_id(),
                        token=token or f"tok_{secrets.token_hex(12)}", site_admin=site_admin)
            self.state.users[login.lower()] = user
            return user

    def add_user(self, login: str, *, token: str | None = None,
                 site_admin: bool = False) -> User:
        """A user with an API token (``user.token``), generated unless given."""
        return self._make_user(login, token, site_admin)

    def create_repo(self, full_name: str, *, files: dict[str, str] | None = None,
                    default_branch: str = "main", private: bool = False) -> Repo:
        """A repository owned by the user before the slash, with one commit of ``files``."""
        owner_login, name = full_name.split("/", 1)
        with self.state.lock:
            owner = self.state.users.get(owner_login.lower()) or self._make_user(owner_login)
            git_dir = self.git_root / owner_login / f"{name}.git"
            forge_git.init_bare(git_dir, default_branch)
            forge_git.seed(git_dir, default_branch, files or {"README.md": f"# {name}\n"},
                           owner_login)
            repo = Repo(owner=owner, name=name, id=self.state.next_id(), git_dir=git_dir,
                        default_branch=default_branch, private=private)
            self.state.repos[full_name.lower()] = repo
            return repo

    def add_app(self, slug: str, *, owner: str | None = None, token_lifetime: float = 3600.0,
                permissions: dict[str, str] | None = None) -> App:
        """A GitHub App (GitHub flavour only): ``app.id``, ``app.private_key_pem``, and its
        ``<slug>[bot]`` user; its installation tokens live ``token_lifetime`` seconds."""
        if self.flavour != "github":
            raise ValueError("GitHub Apps exist only on the github flavour")
        who = self.state.users.get((owner or "app-owner").lower()) or self._make_user(
            owner or "app-owner")
        return self.apps.register(slug, who, token_lifetime=token_lifetime,
                                  permissions=permissions)

    def install_app(self, app: App, *full_names: str) -> Installation:
        """Install ``app`` on these repositories (of one account)."""
        return self.apps.install(app, [self.repo(name) for name in full_names])

    def repo(self, full_name: str) -> Repo:
        """The repository record (for assertions)."""
        owner, name = full_name.split("/", 1)
        return self.state.repo(owner, name)

    def grant(self, full_name: str, login: str, permission: str) -> None:
        """Give ``login`` read, write or admin on the repository."""
        if permission not in ("read", "write", "admin", "none"):
            raise ValueError(f"permission must be read, write, admin or none: {permission!r}")
        with self.state.lock:
            self.repo(full_name).permissions[login.lower()] = permission

    def add_webhook(self, full_name: str, url: str | None, secret: str) -> Hook:
        """Deliver this repository's events to ``url`` (None: record them only)."""
        with self.state.lock:
            hook = Hook(self.state.next_id(), url or "", secret)
            self.repo(full_name).hooks.append(hook)
            return hook

    def configure_ci(self, full_name: str, command: str, *, context: str = "ci/emulator",
                     check_run: bool = False, timeout: float = 120.0) -> None:
        """On a push to a branch with an open PR, run ``command`` in a checkout of the SHA."""
        self.repo(full_name).ci = CIConfig(command, context, check_run, timeout)

    def clone_url(self, full_name: str) -> str:
        """``http://127.0.0.1:PORT/owner/name.git`` (no credentials in it)."""
        return f"{self.url}/{self.repo(full_name).full_name}.git"

    def branch_sha(self, full_name: str, branch: str) -> str | None:
        """The SHA ``branch`` points at, or None."""
        return forge_git.refs(self.repo(full_name).git_dir).get(branch)

    # ------------------------------------------------------------ acting as a user

    def _actor(self, login: str) -> User:
        return self.state.user(login)

    def open_issue(self, full_name: str, title: str, body: str = "", *, as_user: str,
                   labels: Iterable[str] = ()) -> int:
        """Open an issue as ``as_user`` (labels are added by them, too); returns its number."""
        repo, user = self.repo(full_name), self._actor(as_user)
        return self.state.create_issue(repo, user, title, body, list(labels)).number

    def label(self, full_name: str, number: int, name: str, *, as_user: str) -> None:
        """Add a label to an issue or PR as ``as_user``."""
        repo = self.repo(full_name)
        self.state.add_label(repo, self.state.issue(repo, number), name, self._actor(as_user))

    def unlabel(self, full_name: str, number: int, name: str, *, as_user: str) -> None:
        """Remove a label as ``as_user``."""
        repo = self.repo(full_name)
        found = repo.label(name)
        if found is None:
            raise EmulatorError(404, f"no label {name}")
        self.state.remove_label(repo, self.state.issue(repo, number), found,
                                self._actor(as_user))

    def comment(self, full_name: str, number: int, body: str, *, as_user: str) -> int:
        """Comment as ``as_user``; returns the comment id."""
        repo = self.repo(full_name)
        return self.state.add_comment(repo, self.state.issue(repo, number),
                                      self._actor(as_user), body).id

    def edit_issue(self, full_name: str, number: int, *, as_user: str, title: str | None = None,
                   body: str | None = None) -> None:
        """Edit an issue's title or text as ``as_user`` (GitHub records who edited the text)."""
        repo = self.repo(full_name)
        self.state.edit_issue(repo, self.state.issue(repo, number), self._actor(as_user),
                              title=title, body=body)

    def close(self, full_name: str, number: int, *, as_user: str) -> None:
        """Close an issue or PR as ``as_user``."""
        repo = self.repo(full_name)
        self.state.edit_issue(repo, self.state.issue(repo, number), self._actor(as_user),
                              state="closed")

    def reopen(self, full_name: str, number: int, *, as_user: str) -> None:
        """Reopen an issue or PR as ``as_user``."""
        repo = self.repo(full_name)
        self.state.edit_issue(repo, self.state.issue(repo, number), self._actor(as_user),
                              state="open")

    def set_status(self, full_name: str, sha: str, state: str, context: str, *,
                   as_user: str | None = None, description: str = "",
                   target_url: str = "") -> None:
        """Post a commit status as ``as_user`` (default: the emulator's CI user)."""
        user = self._actor(as_user) if as_user else self.ci_user
        self.state.set_status(self.repo(full_name), sha, user, state, context, description,
                              target_url)

    def add_check_run(self, full_name: str, sha: str, name: str,
                      conclusion: str | None = None) -> int:
        """A GitHub check run on ``sha``: in progress, or completed with ``conclusion``."""
        repo = self.repo(full_name)
        run = self.state.add_check_run(repo, sha, name, f"{self.url}/checks", self.ci_user)
        if conclusion is not None:
            self.state.complete_check_run(repo, run, conclusion, self.ci_user)
        return run.id

    def push_branch(self, full_name: str, branch: str, files: dict[str, str], *,
                    as_user: str, message: str = "Change files",
                    start: str | None = None) -> str:
        """Commit ``files`` on ``branch`` (from ``start``, default the branch or the default
        branch) and push it over smart HTTP as ``as_user``, like a user would; returns the SHA."""
        user = self._actor(as_user)
        repo = self.repo(full_name)
        work = self.workdir / "pushes" / secrets.token_hex(4)
        header = "Authorization: Basic " + base64.b64encode(
            f"{user.login}:{user.token}".encode()).decode()
        env = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraheader",
               "GIT_CONFIG_VALUE_0": header, "GIT_AUTHOR_NAME": user.login,
               "GIT_AUTHOR_EMAIL": user.email, "GIT_COMMITTER_NAME": user.login,
               "GIT_COMMITTER_EMAIL": user.email}
        try:
            forge_git.git("clone", "--quiet", self.clone_url(full_name), str(work), env=env)
            existing = forge_git.refs(repo.git_dir)
            base = start or (branch if branch in existing else repo.default_branch)
            forge_git.git("checkout", "--quiet", "-B", branch, f"origin/{base}", cwd=work)
            for name, content in files.items():
                target = work / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
            forge_git.git("add", "-A", cwd=work)
            forge_git.git("commit", "--quiet", "--allow-empty", "-m", message, cwd=work,
                          env=env)
            forge_git.git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=work,
                          env=env)
            return forge_git.git("rev-parse", "HEAD", cwd=work).strip()
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def issue(self, full_name: str, number: int) -> Issue:
        """The issue or PR record (for assertions)."""
        repo = self.repo(full_name)
        return self.state.issue(repo, number)

    def pull_for(self, full_name: str, head: str) -> Issue | None:
        """The newest PR from branch ``head``, if any."""
        pulls = [i for i in self.repo(full_name).pulls()
                 if i.pull is not None and i.pull.head == head]
        return max(pulls, key=lambda i: i.number) if pulls else None

    # ------------------------------------------------------------ faults

    def fail_next(self, count: int, status: int = 502, retry_after: float | None = None) -> None:
        """Answer the next ``count`` API requests with ``status`` (and Retry-After)."""
        self._faults.append(_Fault(status, None if retry_after is None else f"{retry_after:g}",
                                   count, None))

    def fail_for(self, seconds: float, status: int = 502,
                 retry_after: float | None = None) -> None:
        """Answer every API request with ``status`` for ``seconds``."""
        self._faults.append(_Fault(status, None if retry_after is None else f"{retry_after:g}",
                                   None, time.monotonic() + seconds))

    def secondary_limit_next(self, count: int, retry_after: float = 60.0) -> None:
        """Answer the next ``count`` API requests as GitHub's secondary rate limit does:
        403, its message, and ``Retry-After``."""
        self._faults.append(_Fault(403, f"{retry_after:g}", count, None, SECONDARY))

    def set_budget(self, limit: int, reset_in: float) -> None:
        """GitHub flavour: each login may make ``limit`` requests (304s are free) until the
        window resets, the first time in ``reset_in`` seconds; then 403 until the reset."""
        self.budget.configure(limit, reset_in)

    def fail_after_acting(self, count: int, status: int = 502,
                          methods: tuple[str, ...] = ("POST",)) -> None:
        """Act on the next ``count`` API requests with one of ``methods``, then answer
        ``status`` anyway (a proxy timing out after the forge did the work)."""
        self._after_faults.append([count, status, {m.upper() for m in methods}])

    def clear_faults(self) -> None:
        """End every injected fault: API failures and slow git."""
        self._faults.clear()
        self._slow_git.clear()
        self._slow_api.clear()
        self._after_faults.clear()

    def slow_git(self, seconds: float, service: GitService | None = None) -> None:
        """Make every git fetch (``upload-pack``), push (``receive-pack``) or, with no
        ``service``, both wait ``seconds`` before the forge's first answer (the ref
        advertisement), as a forge under load or far away does. 0 makes it fast again.

        Nothing is fetched or pushed while it waits, and a client that hangs up meanwhile
        (a killed git) is noticed at once and counted in ``git_waits_aborted``.
        """
        for name in (service,) if service else ("upload-pack", "receive-pack"):
            if seconds > 0:
                self._slow_git[name] = seconds
            else:
                self._slow_git.pop(name, None)

    def slow_api(self, seconds: float, path_part: str) -> None:
        """Make every API request whose path contains ``path_part`` wait ``seconds`` before
        it is answered (a forge that hangs); 0 makes it fast again."""
        if seconds > 0:
            self._slow_api[path_part] = seconds
        else:
            self._slow_api.pop(path_part, None)

    def _after_fault(self, method: str, reply: Reply) -> Reply:
        with self.state.lock:
            for fault in self._after_faults:
                if fault[0] > 0 and method.upper() in fault[2] and reply.status < 400:
                    fault[0] -= 1
                    return Reply(fault[1], self.api.error(fault[1], "emulated outage"))
        return reply

    def _fault(self) -> _Fault | None:
        with self.state.lock:
            for fault in list(self._faults):
                if fault.remaining is not None:
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                        continue
                    fault.remaining -= 1
                    return fault
                if fault.until is not None and time.monotonic() < fault.until:
                    return fault
                self._faults.remove(fault)
        return None

    # ------------------------------------------------------------ waiting

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every webhook is delivered and every CI job has finished."""
        deadline = time.monotonic() + timeout
        with self._busy_lock:
            while self._busy > 0 or not self._outbox.empty():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the forge emulator is still busy after {timeout}s")
                self._busy_lock.wait(min(left, 0.05))

    def _busy_add(self, n: int) -> None:
        with self._busy_lock:
            self._busy += n
            self._busy_lock.notify_all()

    # ------------------------------------------------------------ HTTP

    def _authenticate(self, header: str | None) -> tuple[User | None, bool]:
        """(user, refused): a wrong or expired token is refused; no token is anonymous."""
        if not header:
            return None, False
        scheme, _, value = header.partition(" ")
        token = value.strip()
        if scheme.lower() == "basic":
            try:
                _login, _, token = base64.b64decode(token).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None, True
        elif scheme.lower() not in ("token", "bearer"):
            return None, True
        with self.state.lock:
            if token in self.apps.tokens:
                return self.apps.token_user(token)
            user = self.state.user_by_token(token)
        return user, user is None

    def _authenticate_api(self, header: str | None
                          ) -> tuple[User | None, bool, App | None, str | None]:
        """(user, refused, app, JWT error): as ``_authenticate``, and a GitHub App's JWT."""
        scheme, _, value = (header or "").partition(" ")
        if (self.flavour == "github" and scheme.lower() == "bearer"
                and self.apps.looks_like_jwt(value.strip())):
            try:
                with self.state.lock:
                    return None, False, self.apps.verify_jwt(value.strip()), None
            except EmulatorError as exc:
                return None, True, None, exc.message
        user, refused = self._authenticate(header)
        return user, refused, None, None

    async def _dispatch(self, request: HttpRequest) -> Response:
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        body = await request.body()
        # Every write, API or git push, and who made it (a fetch POSTs too, and so does a
        # GraphQL query: neither is a write; a GraphQL mutation is).
        if request.method != "GET" and not path.endswith("/git-upload-pack") \
                and not _graphql_query(path, body):
            self.writes.append(Write(time.time(), request.client.host if request.client
                                     else "", request.method, path))
        headers = {k.lower(): v for k, v in request.headers.items()}
        query = request.url.query
        if path.endswith((".git/info/refs", ".git/git-upload-pack", ".git/git-receive-pack")):
            if path.endswith("/info/refs") and not await self._git_wait(request, query):
                return Response(status_code=499)
            return await asyncio.to_thread(self._git, path, request.method, query, headers, body)
        if self.pages is not None and not path.startswith("/api/") and \
                request.method in ("GET", "POST"):
            page = await asyncio.to_thread(self.pages.handle, request.method, path, headers,
                                           body)
            if page is not None:
                return page
        if path.startswith("/_emulator/ci/"):
            return self._ci_log(path)
        return await asyncio.to_thread(self._api, path, request.method, query, headers, body)

    async def _git_wait(self, request: HttpRequest, query: str) -> bool:
        """Wait as ``slow_git`` says for this fetch or push; False when the client left."""
        service = dict(parse_qsl(query)).get("service", "")
        seconds = next((s for name, s in self._slow_git.items() if service == f"git-{name}"),
                       0.0)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                self.git_waits_aborted += 1
                return False
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return True

    def _api(self, path: str, method: str, query: str, headers: dict[str, str],
             body: bytes) -> Response:
        prefix = "/api/v3" if self.flavour == "github" else "/api/v1"
        graphql = self.flavour == "github" and path == "/api/graphql"
        if not graphql and not path.startswith(prefix):
            return Response(b"not found", 404)
        rel = path if graphql else path[len(prefix):] or "/"
        hang = max((s for part, s in list(self._slow_api.items()) if part in rel), default=0.0)
        if hang:
            time.sleep(hang)
        params = dict(parse_qsl(query, keep_blank_values=True))
        fault = self._fault()
        reply: Reply
        login: str | None = None  # whose budget the request spends (GitHub flavour)
        if fault is not None:
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            reply = Reply(fault.status, self.api.error(fault.status, fault.message), extra)
        else:
            user, refused, app, jwt_error = self._authenticate_api(headers.get("authorization"))
            if self.flavour == "github" and not refused and jwt_error is None:
                login = user.login if user else f"app:{app.id}" if app else "anonymous"
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
                reply = Reply(400, self.api.error(400, "Problems parsing JSON"))
            if jwt_error is not None:
                reply = Reply(401, self.api.error(401, jwt_error))
            elif refused:
                reply = Reply(401, self.api.error(401, "Bad credentials"))
            elif body and parsed is None:
                reply = Reply(400, self.api.error(400, "Problems parsing JSON"))
            elif login is not None and self.budget.exhausted(login):
                who = f"user ID {user.id}" if user else "this installation"
                reply = Reply(403, self.api.error(403, f"API rate limit exceeded for {who}."),
                              self.budget.spent_headers(login))
                login = None  # a refusal spends nothing
            else:
                req = Request(method, rel, params, parsed, user, self.api_url, app)
                if graphql:
                    assert isinstance(self.api, GitHubApi)
                    reply = self.api.graphql(req)
                else:
                    reply = self.api.handle(req)
                reply = self._after_fault(method, reply)
        payload = b"" if reply.status == 204 or reply.body is None else dumps(reply.body)
        out_headers = dict(reply.headers)
        if login is not None:  # GitHub: conditional reads, and the budget in every answer
            if method == "GET" and reply.status == 200 and payload:
                tag = etag_of(payload)
                out_headers["ETag"] = tag
                if etag_matches(headers.get("if-none-match"), tag):
                    reply, payload = Reply(304), b""
            out_headers.update(self.budget.charge(login, counts=reply.status != 304))
        if payload:
            out_headers["Content-Type"] = "application/json; charset=utf-8"
        exchange = Exchange(self.flavour, method, rel, params, body, reply.status,
                            out_headers, payload)
        self.exchanges.append(exchange)
        for observer in list(self.observers):
            observer(exchange)
        return Response(payload, reply.status, out_headers)

    def _git(self, path: str, method: str, query: str, headers: dict[str, str],
             body: bytes) -> Response:
        parts = path.lstrip("/").split("/")
        owner, name = parts[0], parts[1].removesuffix(".git")
        try:
            repo = self.state.repo(owner, name)
        except EmulatorError:
            return Response(b"repository not found\n", 404)
        user, refused = self._authenticate(headers.get("authorization"))
        pushing = path.endswith("git-receive-pack") or "service=git-receive-pack" in query
        need = "write" if pushing else "read"
        challenge = {"WWW-Authenticate": 'Basic realm="forge emulator"'}
        if refused or (user is None and (pushing or repo.private)):
            return Response(b"authentication required\n", 401, challenge)
        perm = repo.permission(user)
        if (pushing and perm not in ("write", "admin")) or perm == "none":
            who = user.login if user else "anonymous"
            return Response(f"{who} may not {need} {repo.full_name}\n".encode(), 403)
        before = forge_git.refs(repo.git_dir) if path.endswith("git-receive-pack") else {}
        rel = path[len(f"/{owner}"):]
        answer = forge_git.http_backend(self.git_root / owner, rel, method, query, headers,
                                        body, user.login if user else None)
        if path.endswith("git-receive-pack") and user is not None:
            self._after_push(repo, before, forge_git.refs(repo.git_dir), user)
        return Response(answer.body, answer.status, dict(answer.headers))

    # ------------------------------------------------------------ pushes and CI

    def _after_push(self, repo: Repo, before: dict[str, str], after: dict[str, str],
                    pusher: User) -> None:
        for branch, sha in after.items():
            if before.get(branch) == sha:
                continue
            moved = self.state.branch_moved(repo, branch, before.get(branch, forge_git.ZERO_SHA),
                                            sha, pusher)
            if moved and repo.ci is not None:
                self._start_ci(repo, sha)

    def _start_ci(self, repo: Repo, sha: str) -> CIJob:
        ci = repo.ci
        assert ci is not None
        job_id = self.state.next_id()
        log_dir = self.workdir / "ci"
        log_dir.mkdir(exist_ok=True)
        job = CIJob(job_id, repo.full_name, sha, log_dir / f"{job_id}.log")
        self.ci_jobs.append(job)
        log_url = f"{self.url}/_emulator/ci/{job_id}/log"
        check = None
        if ci.check_run and self.flavour == "github":
            check = self.state.add_check_run(repo, sha, ci.context, log_url, self.ci_user)
        else:
            self.state.set_status(repo, sha, self.ci_user, "pending", ci.context,
                                  "CI is running", log_url)
        self._busy_add(1)

        def run() -> None:
            try:
                checkout = log_dir / f"{job_id}-src"
                try:
                    forge_git.checkout(repo.git_dir, sha, checkout)
                    # the emulated CI job runs the test's own command line, as a CI would
                    done = subprocess.run(ci.command, shell=True, cwd=checkout,  # noqa: S602
                                          capture_output=True, text=True, timeout=ci.timeout,
                                          check=False)
                    output, ok = done.stdout + done.stderr, done.returncode == 0
                except subprocess.TimeoutExpired:
                    output, ok = f"timed out after {ci.timeout}s\n", False
                except RuntimeError as exc:
                    output, ok = f"checkout failed: {exc}\n", False
                finally:
                    shutil.rmtree(checkout, ignore_errors=True)
                job.log_path.write_text(output)
                job.state = "success" if ok else "failure"
                if check is not None:
                    self.state.complete_check_run(repo, check, job.state, self.ci_user)
                else:
                    self.state.set_status(repo, sha, self.ci_user, job.state, ci.context,
                                          "CI passed" if ok else "CI failed", log_url)
                job.finished_at = time.time()
            finally:
                job.done.set()
                self._busy_add(-1)

        threading.Thread(target=run, name=f"forge-ci-{job_id}", daemon=True).start()
        return job

    def _ci_log(self, path: str) -> Response:
        parts = path.strip("/").split("/")
        job = next((j for j in self.ci_jobs if len(parts) > 2 and str(j.id) == parts[2]), None)
        if job is None:
            return Response(b"no such CI job\n", 404)
        text = job.log_path.read_bytes() if job.log_path.exists() else b"(running)\n"
        return Response(text, 200, {"Content-Type": "text/plain; charset=utf-8"})

    # ------------------------------------------------------------ webhooks

    def _on_happening(self, happening: Happening) -> None:
        # CI runs on a pull request's opening too (pull_request: opened), not only on pushes
        # to a branch that already has one: a runner pushes first and opens the PR after.
        issue = happening.issue
        if (happening.kind == "pull_request" and happening.action in ("opened", "reopened")
                and happening.repo.ci is not None and issue is not None
                and issue.pull is not None):
            self._start_ci(happening.repo, issue.pull.head_sha)
        if not happening.repo.hooks:
            return
        if self.flavour == "github":
            made = self.github.webhook(happening)
            if made is None:
                return
            event, payload = made
            fine = event
            installed = next((i for i in self.apps.installations.values()
                              if happening.repo.full_name.lower() in i.repos), None)
            if installed is not None:  # what a delivery to an App carries
                payload["installation"] = {"id": installed.id,
                                           "node_id": f"MDIzOkludGVncmF0aW9u{installed.id}"}
        else:
            made_f = self.forgejo.webhook(happening)
            if made_f is None:
                return
            event, fine, payload = made_f
        body = json.dumps(payload).encode()
        for hook in happening.repo.hooks:
            delivery_id = str(uuid.uuid4())
            headers = sign_headers(self.flavour, hook, event, fine, delivery_id, body,
                                   happening.repo.id)
            delivery = Delivery(delivery_id, hook.url or None, event, headers, body)
            self.deliveries.append(delivery)
            if hook.url:
                self._busy_add(1)  # counted until delivered, so wait_idle sees it
                self._outbox.put(delivery)

    def redeliver(self, delivery: Delivery) -> int:
        """Send a delivery again, same id and signature (what "Redeliver" in the UI does)."""
        assert delivery.url is not None
        return self._http.post(delivery.url, content=delivery.body,
                               headers=delivery.headers).status_code

    def _deliver_loop(self) -> None:
        while True:
            delivery = self._outbox.get()
            if delivery is None:
                return
            try:
                assert delivery.url is not None
                delivery.status = self._http.post(delivery.url, content=delivery.body,
                                                  headers=delivery.headers).status_code
            except httpx.HTTPError:
                delivery.status = 0  # neither forge retries; the runner must resync
            finally:
                self._busy_add(-1)


def sign_headers(flavour: Flavour, hook: Hook, event: str, fine: str, delivery_id: str,
                 body: bytes, target_id: int) -> dict[str, str]:
    """The headers each forge sends with a webhook, signatures included."""
    sha256 = hmac.new(hook.secret.encode(), body, hashlib.sha256).hexdigest()
    sha1 = hmac.new(hook.secret.encode(), body, hashlib.sha1).hexdigest()
    common = {"Content-Type": "application/json", "X-GitHub-Event": event,
              "X-GitHub-Delivery": delivery_id, "X-Hub-Signature": f"sha1={sha1}",
              "X-Hub-Signature-256": f"sha256={sha256}"}
    if flavour == "github":
        return {**common, "User-Agent": "GitHub-Hookshot/emulator",
                "X-GitHub-Hook-ID": str(hook.id),
                "X-GitHub-Hook-Installation-Target-ID": str(target_id),
                "X-GitHub-Hook-Installation-Target-Type": "repository"}
    out = {**common, "User-Agent": "Go-http-client/1.1", "X-GitHub-Event-Type": fine}
    for name in ("Forgejo", "Gitea", "Gogs"):
        out[f"X-{name}-Event"] = event
        out[f"X-{name}-Event-Type"] = fine
        out[f"X-{name}-Delivery"] = delivery_id
        out[f"X-{name}-Signature"] = sha256
    return out


def _graphql_query(path: str, body: bytes) -> bool:
    """True for a GraphQL request that only reads (a query, not a mutation)."""
    if not path.endswith("/graphql"):
        return False
    try:
        text = str(json.loads(body or b"{}").get("query") or "")
    except (ValueError, AttributeError):
        return False
    return not text.lstrip().startswith("mutation")
