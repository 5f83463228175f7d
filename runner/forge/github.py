"""The GitHub adapter, on PyGithub.

``base_url`` is ``https://api.github.com``, a GitHub Enterprise ``https://host/api/v3``, or the
emulator. It authenticates with a token or as a GitHub App (``github_app.py``). Retries are
whole operations under ``retry.py`` (429, 5xx, rate limits, transport errors; writes read
before they post again), none at PyGithub's HTTP layer; PyGithub's write throttling is on by
default (GitHub asks for a second between writes) and off when ``throttle=False`` (tests).
Pull requests, CI and reviews are in ``github_pulls.py``, mixed into ``GitHubForge``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlencode, urlparse

import requests
from github import Auth, Github, GithubException
from github.Issue import Issue as GhIssue
from github.Repository import Repository

from runner.forge.base import (
    MARKER_RE,
    Comment,
    Conflict,
    ForgeAuthError,
    ForgeError,
    Issue,
    LabelEvent,
    NotFound,
    Permission,
    PushCredentials,
    RateLimited,
    RetryPolicy,
    TextEdit,
    auth_message,
    hidden_marker,
)
from runner.forge.budget import EtagCache, ForgeStats
from runner.forge.github_app import AppKey, GitHubApp
from runner.forge.github_pulls import GitHubPulls
from runner.forge.github_pulls import aware as _aware
from runner.forge.github_pulls import iso as _iso
from runner.forge.retry import (
    ForgeRetry,
    is_rate_limit,
    rate_limit_wait,
    retry_after_seconds,
    stop_if_cancelled,
)

T = TypeVar("T")

# Who last edited an issue's text and title: GitHub's REST API does not say, GraphQL does.
_LAST_EDIT = (
    "query($owner: String!, $name: String!, $number: Int!) { repository(owner: $owner, "
    "name: $name) { issue(number: $number) { lastEditedAt editor { login } "
    "timelineItems(itemTypes: [RENAMED_TITLE_EVENT], last: 1) { nodes { "
    "... on RenamedTitleEvent { createdAt actor { login } } } } } } }")


class CountedToken(Auth.Token):
    """A token that counts the requests it authenticates (PyGithub asks it for each)."""

    def __init__(self, token: str, on_request: Callable[[], None]) -> None:
        super().__init__(token)
        self._on_request = on_request

    def authentication(self, headers: dict[str, Any]) -> None:
        self._on_request()
        super().authentication(headers)


def web_root(base_url: str) -> str:
    """``https://api.github.com`` -> ``https://github.com``; ``https://h/api/v3`` -> ``https://h``."""
    parsed = urlparse(base_url.rstrip("/"))
    if parsed.hostname == "api.github.com":
        return f"{parsed.scheme}://github.com"
    path = parsed.path.removesuffix("/api/v3")
    return f"{parsed.scheme}://{parsed.netloc}{path}"


class GitHubForge(GitHubPulls):
    """The Forge protocol on GitHub (or GitHub Enterprise, or the emulator)."""

    kind = "github"

    def __init__(self, token: str | None = None, *, app_key: AppKey | None = None,
                 base_url: str = "https://api.github.com",
                 # the name of an environment variable, not a secret
                 token_env: str = "GITHUB_TOKEN", bot_user: str | None = None,  # noqa: S107
                 retry: RetryPolicy | None = None, throttle: bool = True,
                 timeout: float = 30, git_url: str | None = None,
                 forge_name: str = "github") -> None:
        if (token is None) == (app_key is None):
            raise ValueError("give either a token or a GitHub App's key")
        self.base_url = base_url.rstrip("/")
        self.git_url = (git_url or web_root(self.base_url)).rstrip("/")
        self.token_env = token_env
        self.bot_user = bot_user
        self.retry = retry or RetryPolicy()
        self._token = token or ""
        # No retry under PyGithub: a request it repeated after a 502 could post twice. Whole
        # operations are retried instead, each reading before it writes (runner/forge/retry.py).
        self.stats = ForgeStats()
        self._etags = EtagCache()
        self._retry = ForgeRetry(self.retry, on_wait=lambda what, s, exc: self.stats.waited(s))
        # PyGithub takes whole seconds only: round up (0.5 s as 0 would fail every request).
        options: dict[str, Any] = {
            "timeout": math.ceil(timeout), "retry": None,
            "seconds_between_requests": 0.25 if throttle else None,
            "seconds_between_writes": 1.0 if throttle else None}
        self.app = (GitHubApp(app_key, base_url=self.base_url, client_options=options,
                              forge_name=forge_name, on_request=self.stats.request)
                    if app_key is not None else None)
        self.gh = (Github(auth=CountedToken(token, self.stats.request), base_url=self.base_url,
                          lazy=True, **options) if token is not None else None)

    # ------------------------------------------------------------ plumbing

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run an idempotent operation under the retry policy; PyGithub's exceptions become
        ours, with what to do about them."""
        try:
            return self._retry.call(what, lambda: self._once(what, fn))
        finally:
            self._note_budget()

    def _once(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except GithubException as exc:
            status = exc.status
            message = exc.data.get("message", "") if isinstance(exc.data, dict) else exc.data
            headers = exc.headers or {}
            if status == 404:
                raise NotFound(f"GitHub: {what}: not found (404)", 404) from None
            if is_rate_limit(status, str(message), headers):
                raise RateLimited(f"GitHub rate limit ({status}) on {what}: {message}",
                                  retry_after=rate_limit_wait(headers)) from None
            if status in (401, 403):
                if self.app is not None:
                    raise ForgeAuthError(
                        f"GitHub refused the App's installation token ({status}) on {what}: "
                        "check that the App is installed on the repository and has the "
                        "permissions in docs/forges.md", status) from None
                raise ForgeAuthError(auth_message("GitHub", status, self.token_env, what),
                                     status) from None
            if status in (409, 422):
                raise Conflict(f"GitHub refused {what} ({status}): {message}", status) from None
            if status in self.retry.statuses or status >= 500:
                raise ForgeError(f"GitHub answered {status} on {what}", status,
                                 retry_after=retry_after_seconds(headers.get("retry-after")),
                                 transient=True) from None
            raise ForgeError(f"GitHub refused {what} ({status}): {message}", status) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ForgeError(f"GitHub at {self.base_url} is unreachable on {what}: {exc}",
                             transient=True) from None

    def _client(self, repo: str) -> Github:
        """The client for ``repo``: the token's, or the App installation's that covers it."""
        if self.app is not None:
            return self.app.client(repo)
        # a personal-token client is made in __init__ when there is no App
        assert self.gh is not None  # noqa: S101
        return self.gh

    def _repo(self, repo: str) -> Repository:
        return self._client(repo).get_repo(repo)  # lazy: no request until one is needed

    def _get(self, repo: str, path: str, params: dict[str, Any]) -> Any:
        """``GET /repos/{repo}{path}``, conditional on the ETag of the last answer: the JSON
        (the cached one on a 304), or None when it has more pages (the caller pages)."""
        url = f"/repos/{repo}{path}"
        key = f"{url}?{urlencode(sorted(params.items()))}"
        cached = self._etags.get(key)
        headers = {"If-None-Match": cached[0]} if cached else {}
        answer, data = self._client(repo).requester.requestJsonAndCheck(
            "GET", url, parameters=params, headers=headers)
        if data is None and cached is not None:  # 304: unchanged, and free on GitHub
            self.stats.hit()
            return cached[1]
        if 'rel="next"' in str(answer.get("link") or ""):
            return None
        etag = answer.get("etag")
        if etag:
            self._etags.put(key, etag, data)
        return data

    def _note_budget(self) -> None:
        """Keep what GitHub last said of the budget (the lowest of the clients')."""
        clients = self.app.clients() if self.app is not None else [self.gh]
        for client in clients:
            if client is None:
                continue
            requester = client.requester
            remaining, limit = requester.rate_limiting
            if remaining >= 0 and (self.stats.remaining is None or client is clients[0]
                                   or remaining < self.stats.remaining):
                self.stats.budget(remaining, limit,
                                  float(requester.rate_limiting_resettime or 0) or None)

    @property
    def bot_login(self) -> str | None:
        """Who the runner acts as here: the App's ``<slug>[bot]``, or ``bot_user``."""
        return self.app.bot_login if self.app is not None else self.bot_user

    def _issue(self, repo: str, number: int) -> GhIssue:
        return self._call(f"get issue {repo}#{number}",
                          lambda: self._repo(repo).get_issue(number))

    def _to_issue(self, repo: str, raw: GhIssue) -> Issue:
        return Issue(repo=repo, number=raw.number, title=raw.title, body=raw.body or "",
                     labels=tuple(label.name for label in raw.labels),
                     state="closed" if raw.state == "closed" else "open",
                     author=raw.user.login if raw.user else "", url=raw.html_url or "",
                     updated_at=_aware(raw.updated_at))

    # ------------------------------------------------------------ issues

    def get_issue(self, repo: str, number: int) -> Issue:
        """The issue; NotFound if it does not exist or is a pull request. A conditional
        read: each look at an unchanged issue is a free 304."""
        def fetch() -> Issue:
            data = self._get(repo, f"/issues/{number}", {})
            if data.get("pull_request"):
                raise NotFound(f"GitHub: {repo}#{number} is a pull request, not an issue", 404)
            return self._to_issue(repo, self._client(repo).create_from_raw_data(GhIssue, data))
        return self._call(f"get issue {repo}#{number}", fetch)

    def list_issues(self, repo: str, label: str) -> Iterator[Issue]:
        """Open issues with ``label``, every page; pull requests skipped. Read whole, so a
        retried page never cuts the list short."""
        def fetch() -> list[Issue]:
            data = self._get(repo, "/issues", {"state": "open", "labels": label,
                                               "per_page": 100})
            if data is not None:  # one page, maybe unchanged (a 304: free)
                client = self._client(repo)
                return [self._to_issue(repo, client.create_from_raw_data(GhIssue, raw))
                        for raw in data if not raw.get("pull_request")]
            # Read the raw field: touching an absent attribute makes PyGithub fetch each issue.
            return [self._to_issue(repo, raw) for raw in
                    self._repo(repo).get_issues(state="open", labels=[label])
                    if not raw._rawData.get("pull_request")]
        yield from self._call(f"list issues of {repo}", fetch)

    def list_comments(self, repo: str, number: int,
                      since: datetime | None = None) -> list[Comment]:
        """Comments oldest first; ``since`` filters on the update time, as GitHub does. A
        conditional read: unchanged comments cost a 304, not a request of the budget."""
        params: dict[str, Any] = {"per_page": 100}
        if since:
            params["since"] = _aware(since).strftime("%Y-%m-%dT%H:%M:%SZ")

        def fetch() -> list[Comment]:
            data = self._get(repo, f"/issues/{number}/comments", params)
            if data is None:
                issue = self._repo(repo).get_issue(number)
                raw = issue.get_comments(since=since) if since else issue.get_comments()
                data = [c._rawData for c in raw]
            return [Comment(id=int(c["id"]), author=(c.get("user") or {}).get("login", ""),
                            body=c.get("body") or "", created_at=_iso(c.get("created_at")),
                            updated_at=_iso(c.get("updated_at")), url=c.get("html_url") or "")
                    for c in data]
        return self._call(f"list comments of {repo}#{number}", fetch)

    def label_events(self, repo: str, number: int) -> list[LabelEvent]:
        """Label added/removed events from the issue's event list (a conditional read)."""
        def fetch() -> list[LabelEvent]:
            data = self._get(repo, f"/issues/{number}/events", {"per_page": 100})
            if data is None:
                data = [e._rawData for e in self._repo(repo).get_issue(number).get_events()]
            out = []
            for event in data:
                label = (event.get("label") or {}).get("name")
                if event.get("event") not in ("labeled", "unlabeled") or not label:
                    continue
                out.append(LabelEvent(label=label,
                                      actor=(event.get("actor") or {}).get("login", ""),
                                      action="added" if event["event"] == "labeled"
                                      else "removed", at=_iso(event.get("created_at"))))
            return out
        return self._call(f"list events of {repo}#{number}", fetch)

    def last_text_edit(self, repo: str, number: int) -> TextEdit:
        """``lastEditedAt`` and ``editor`` of the issue and its last ``RenamedTitleEvent``,
        which only GitHub's GraphQL API gives."""
        owner, _, name = repo.partition("/")
        _, data = self._call(f"last edit of {repo}#{number}",
                             lambda: self._client(repo).requester.graphql_query(
                                 _LAST_EDIT, {"owner": owner, "name": name, "number": number}))
        issue = ((data.get("data") or {}).get("repository") or {}).get("issue")
        if issue is None:
            raise NotFound(f"GitHub: {repo}#{number} is not an issue (GraphQL)", 404)
        at = issue.get("lastEditedAt")
        editor = (issue.get("editor") or {}).get("login")
        renames = ((issue.get("timelineItems") or {}).get("nodes") or [{}])[-1] or {}
        title_at = renames.get("createdAt")
        return TextEdit(recorded=True, at=_aware(datetime.fromisoformat(at)) if at else None,
                        editor=editor if at else None,
                        title_at=_aware(datetime.fromisoformat(title_at)) if title_at else None,
                        title_editor=(renames.get("actor") or {}).get("login") if title_at
                        else None)

    def permission(self, repo: str, user: str) -> Permission:
        """admin, write, read or none (an unknown user is none)."""
        try:
            raw = self._call(f"permission of {user} on {repo}",
                             lambda: self._repo(repo).get_collaborator_permission(user))
        except NotFound:
            return "none"
        return {"admin": "admin", "maintain": "write", "write": "write", "triage": "read",
                "read": "read"}.get(raw, "none")  # type: ignore[return-value]

    def add_label(self, repo: str, number: int, name: str) -> None:
        """Create the label when the repository lacks it, then add it."""
        def add() -> None:
            gh_repo = self._repo(repo)
            if not any(x.name.lower() == name.lower() for x in gh_repo.get_labels()):
                try:
                    gh_repo.create_label(name, "ededed")
                except GithubException as exc:
                    if exc.status != 422:  # 422: someone created it meanwhile
                        raise
            stop_if_cancelled()
            gh_repo.get_issue(number).add_to_labels(name)
        self._call(f"add label {name!r} to {repo}#{number}", add)

    def remove_label(self, repo: str, number: int, name: str) -> None:
        """Remove the label; a label that is not there is fine."""
        def remove() -> None:
            stop_if_cancelled()
            self._repo(repo).get_issue(number).remove_from_labels(name)
        with contextlib.suppress(NotFound):
            self._call(f"remove label {name!r} from {repo}#{number}", remove)

    def upsert_comment(self, repo: str, number: int, marker: str, body: str) -> Comment:
        """Edit our comment carrying ``marker``, or create it."""
        marker = hidden_marker(marker)
        if marker not in body:
            body = f"{body}\n\n{marker}"

        def upsert() -> Comment:
            issue = self._repo(repo).get_issue(number)
            found = next((c for c in issue.get_comments() if marker in (c.body or "")), None)
            stop_if_cancelled()
            if found is None:
                found = issue.create_comment(body)
            elif found.body != body:
                found.edit(body)
            return Comment(id=found.id, author=found.user.login if found.user else "",
                           body=body, created_at=_aware(found.created_at),
                           updated_at=_aware(found.updated_at), url=found.html_url or "")
        return self._call(f"upsert comment on {repo}#{number}", upsert)

    def add_reaction(self, repo: str, number: int, content: str,
                     comment_id: int | None = None) -> None:
        """React to the issue, or to its comment ``comment_id``."""
        def react() -> None:
            issue = self._repo(repo).get_issue(number)
            stop_if_cancelled()
            if comment_id is None:
                issue.create_reaction(content)
            else:
                issue.get_comment(comment_id).create_reaction(content)
        self._call(f"react {content} on {repo}#{number}", react)

    # ------------------------------------------------------------ git

    def clone_url(self, repo: str) -> str:
        """``https://github.com/owner/name.git`` (or the Enterprise/emulator equivalent, or
        under ``git_url`` when one is given)."""
        return f"{self.git_url}/{repo}.git"

    def push_credentials(self, repo: str | None = None) -> PushCredentials:
        """Basic auth as ``x-access-token``, which GitHub accepts for every token kind; as an
        App, the installation token for ``repo``, renewed when it has little life left."""
        if self.app is None:
            return PushCredentials(username="x-access-token", token=self._token)
        if repo is None:
            raise ForgeError("a GitHub App pushes with the installation token of a "
                             "repository: push_credentials(repo) needs the repository")
        return PushCredentials(username="x-access-token", token=self.app.token(repo))

    @staticmethod
    def is_marker_comment(body: str) -> bool:
        """True when the body carries one of the runner's hidden markers."""
        return MARKER_RE.search(body) is not None
