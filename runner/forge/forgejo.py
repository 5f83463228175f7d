"""The Forgejo (and Gitea) adapter, on httpx and API v1.

Forgejo differs from GitHub in ways this module absorbs: labels are added by id and removed
by id, a draft is a ``WIP:`` title prefix, the pull for a branch is ``/pulls/{base}/{head}``,
a commit status has ``status`` (not ``state``) and may be ``warning``, there are no check
runs, and who added a label is in the issue's timeline. Pull requests, CI and reviews are in
``forgejo_pulls.py``, mixed into ``ForgejoForge``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from runner.forge.base import (
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
from runner.forge.budget import ForgeStats
from runner.forge.forgejo_pulls import ForgejoPulls, FUser
from runner.forge.forgejo_pulls import Model as _Model
from runner.forge.forgejo_pulls import operation as _operation
from runner.forge.retry import (
    ForgeRetry,
    is_rate_limit,
    rate_limit_wait,
    retry_after_seconds,
    stop_if_cancelled,
)

_WIP_PREFIXES = ("wip:", "[wip]")
PAGE = 50
PAGE = 50


class FLabel(_Model):
    id: int
    name: str


class FPullMeta(_Model):
    draft: bool = False


class FIssue(_Model):
    number: int
    title: str
    body: str | None = ""
    labels: list[FLabel] | None = None
    state: str
    user: FUser | None = None
    html_url: str = ""
    updated_at: datetime | None = None
    pull_request: FPullMeta | None = None


class FComment(_Model):
    id: int
    body: str = ""
    user: FUser | None = None
    created_at: datetime
    updated_at: datetime | None = None
    html_url: str = ""


class FPermission(_Model):
    permission: str


class FTimeline(_Model):
    type: str
    body: str | None = ""
    label: FLabel | None = None
    user: FUser | None = None
    created_at: datetime



class ForgejoForge(ForgejoPulls):
    """The Forge protocol on Forgejo or Gitea (``base_url`` without ``/api/v1``)."""

    kind = "forgejo"

    # the name of an environment variable, not a secret
    def __init__(self, token: str, *, base_url: str, token_env: str = "FORGEJO_TOKEN",  # noqa: S107
                 bot_user: str | None = None, retry: RetryPolicy | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None,
                 git_url: str | None = None) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/api/v1")
        self.git_url = (git_url or self.base_url).rstrip("/")
        self.token_env = token_env
        self.bot_user = bot_user
        self.bot_login = bot_user
        self.retry = retry or RetryPolicy()
        self.stats = ForgeStats()
        self._retry = ForgeRetry(self.retry, on_wait=lambda what, s, exc: self.stats.waited(s))
        self._token = token
        self.http = httpx.Client(base_url=f"{self.base_url}/api/v1", timeout=timeout,
                                 transport=transport,
                                 headers={"Authorization": f"token {token}",
                                          "Accept": "application/json"})

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------ plumbing

    def _send(self, method: str, path: str, *, params: dict[str, Any] | None = None,
              json: Any = None) -> httpx.Response:
        """One request, never repeated here: a POST after a 502 may have acted. Whole
        operations are retried instead (``_operation``), each reading before it writes."""
        what = f"{method} {path}"
        if method != "GET":
            stop_if_cancelled()
        self.stats.request()
        try:
            response = self.http.request(method, path, params=params, json=json)
        except httpx.TransportError as exc:
            raise ForgeError(f"Forgejo at {self.base_url} is unreachable on {what}: {exc}",
                             transient=True) from None
        return self._check(response, what)

    def _check(self, response: httpx.Response, what: str) -> httpx.Response:
        status = response.status_code
        if status < 400:
            return response
        try:
            message = response.json().get("message", "")
        except (ValueError, AttributeError):
            message = response.text[:200]
        if status == 404:
            raise NotFound(f"Forgejo: {what}: not found (404)", 404)
        if is_rate_limit(status, str(message), response.headers):
            raise RateLimited(f"Forgejo rate limit ({status}) on {what}: {message}",
                              retry_after=rate_limit_wait(response.headers))
        if status in (401, 403):
            raise ForgeAuthError(auth_message("Forgejo", status, self.token_env, what) +
                                 (f" (Forgejo says: {message})" if message else ""), status)
        if status in (409, 422):
            raise Conflict(f"Forgejo refused {what} ({status}): {message}", status)
        if status in self.retry.statuses or status >= 500:
            raise ForgeError(f"Forgejo answered {status} on {what}", status,
                             retry_after=retry_after_seconds(response.headers.get("retry-after")),
                             transient=True)
        raise ForgeError(f"Forgejo refused {what} ({status}): {message}", status)

    def _paged(self, path: str, params: dict[str, Any] | None = None) -> Iterator[Any]:
        """Every item of every page (``page``/``limit``), until a short page."""
        page = 1
        while True:
            chunk = self._send("GET", path, params={**(params or {}), "page": page,
                                                    "limit": PAGE}).json() or []
            yield from chunk
            if len(chunk) < PAGE:
                return
            page += 1

    @staticmethod
    def _r(repo: str) -> str:
        owner, name = repo.split("/", 1)
        return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"

    def _to_issue(self, repo: str, raw: FIssue) -> Issue:
        return Issue(repo=repo, number=raw.number, title=raw.title, body=raw.body or "",
                     labels=tuple(x.name for x in raw.labels or []),
                     state="closed" if raw.state == "closed" else "open",
                     author=raw.user.login if raw.user else "", url=raw.html_url,
                     updated_at=raw.updated_at)

    @staticmethod
    def _to_comment(raw: FComment) -> Comment:
        return Comment(id=raw.id, author=raw.user.login if raw.user else "", body=raw.body,
                       created_at=raw.created_at, updated_at=raw.updated_at, url=raw.html_url)

    # ------------------------------------------------------------ issues

    @_operation
    def get_issue(self, repo: str, number: int) -> Issue:
        """The issue; NotFound if it does not exist or is a pull request."""
        raw = FIssue.model_validate(self._send("GET", f"{self._r(repo)}/issues/{number}").json())
        if raw.pull_request is not None:
            raise NotFound(f"Forgejo: {repo}#{number} is a pull request, not an issue", 404)
        return self._to_issue(repo, raw)

    def list_issues(self, repo: str, label: str) -> Iterator[Issue]:
        """Open issues with ``label``, every page (``type=issues`` leaves pulls out); read
        whole, so a retried page never cuts the list short."""
        return iter(self._list_issues(repo, label))

    @_operation
    def _list_issues(self, repo: str, label: str) -> list[Issue]:
        out = []
        for item in self._paged(f"{self._r(repo)}/issues",
                                {"state": "open", "labels": label, "type": "issues"}):
            raw = FIssue.model_validate(item)
            if raw.pull_request is None:
                out.append(self._to_issue(repo, raw))
        return out

    @_operation
    def list_comments(self, repo: str, number: int,
                      since: datetime | None = None) -> list[Comment]:
        """Comments oldest first, updated at or after ``since``."""
        params = {"since": since.astimezone(UTC).isoformat()} if since else None
        data = self._send("GET", f"{self._r(repo)}/issues/{number}/comments",
                          params=params).json() or []
        return [self._to_comment(FComment.model_validate(x)) for x in data]

    @_operation
    def label_events(self, repo: str, number: int) -> list[LabelEvent]:
        """Label changes from the timeline; Forgejo stores "1" as the body of an addition."""
        out = []
        for item in self._paged(f"{self._r(repo)}/issues/{number}/timeline"):
            raw = FTimeline.model_validate(item)
            if raw.type != "label" or raw.label is None:
                continue
            out.append(LabelEvent(label=raw.label.name,
                                  actor=raw.user.login if raw.user else "",
                                  action="added" if raw.body == "1" else "removed",
                                  at=raw.created_at))
        return out

    def last_text_edit(self, repo: str, number: int) -> TextEdit:
        """Forgejo's API does not say who edited an issue's text or when (its edit history is
        shown in the web interface only): the runner relies on signed deliveries instead."""
        return TextEdit(recorded=False)

    @_operation
    def permission(self, repo: str, user: str) -> Permission:
        """admin (also owner), write, read or none. Needs a repository admin token."""
        try:
            raw = FPermission.model_validate(self._send(
                "GET", f"{self._r(repo)}/collaborators/{quote(user, safe='')}/permission").json())
        except NotFound:
            return "none"
        except ForgeAuthError as exc:
            raise ForgeAuthError(f"{exc} - reading another user's permission needs a token of "
                                 "a repository admin", exc.status) from None
        return {"owner": "admin", "admin": "admin", "write": "write",
                "read": "read"}.get(raw.permission, "none")  # type: ignore[return-value]

    def _repo_label(self, repo: str, name: str) -> FLabel | None:
        for item in self._paged(f"{self._r(repo)}/labels"):
            label = FLabel.model_validate(item)
            if label.name.lower() == name.lower():
                return label
        return None

    @_operation
    def add_label(self, repo: str, number: int, name: str) -> None:
        """Create the label if the repository lacks it, then add it by id."""
        label = self._repo_label(repo, name)
        if label is None:
            try:
                label = FLabel.model_validate(self._send(
                    "POST", f"{self._r(repo)}/labels",
                    json={"name": name, "color": "#ededed"}).json())
            except Conflict:
                label = self._repo_label(repo, name)
                if label is None:
                    raise
        self._send("POST", f"{self._r(repo)}/issues/{number}/labels",
                   json={"labels": [label.id]})

    @_operation
    def remove_label(self, repo: str, number: int, name: str) -> None:
        """Remove by id (Forgejo's only way); a label that is not there is fine."""
        data = self._send("GET", f"{self._r(repo)}/issues/{number}/labels").json() or []
        for item in data:
            label = FLabel.model_validate(item)
            if label.name.lower() == name.lower():
                with contextlib.suppress(NotFound):
                    self._send("DELETE", f"{self._r(repo)}/issues/{number}/labels/{label.id}")

    @_operation
    def upsert_comment(self, repo: str, number: int, marker: str, body: str) -> Comment:
        """Edit our comment carrying ``marker``, or create it."""
        marker = hidden_marker(marker)
        if marker not in body:
            body = f"{body}\n\n{marker}"
        found = next((c for c in self.list_comments(repo, number) if marker in c.body), None)
        if found is None:
            raw = self._send("POST", f"{self._r(repo)}/issues/{number}/comments",
                             json={"body": body}).json()
        elif found.body != body:
            raw = self._send("PATCH", f"{self._r(repo)}/issues/comments/{found.id}",
                             json={"body": body}).json()
        else:
            return found
        return self._to_comment(FComment.model_validate(raw))

    @_operation
    def add_reaction(self, repo: str, number: int, content: str,
                     comment_id: int | None = None) -> None:
        """React to the issue or to one of its comments (200 when it already exists)."""
        path = (f"{self._r(repo)}/issues/{number}/reactions" if comment_id is None
                else f"{self._r(repo)}/issues/comments/{comment_id}/reactions")
        self._send("POST", path, json={"content": content})

    # ------------------------------------------------------------ git

    def clone_url(self, repo: str) -> str:
        """``https://forgejo.example/owner/name.git`` (or under ``git_url`` when one is given)."""
        return f"{self.git_url}/{repo}.git"

    def push_credentials(self, repo: str | None = None) -> PushCredentials:
        """Basic auth with the bot's login and its token as the password (any repository)."""
        return PushCredentials(username=self.bot_user or "oauth2", token=self._token)
