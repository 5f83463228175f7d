"""The Forgejo (and Gitea) adapter, on httpx and API v1.

Forgejo differs from GitHub in ways this module absorbs: labels are added by id and removed
by id, a draft is a ``WIP:`` title prefix, the pull for a branch is ``/pulls/{base}/{head}``,
a commit status has ``status`` (not ``state``) and may be ``warning``, there are no check
runs, and who added a label is in the issue's timeline.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict

from runner.forge.base import (
    CIContext,
    CIState,
    CIStateName,
    Comment,
    Conflict,
    ForgeAuthError,
    ForgeError,
    Issue,
    LabelEvent,
    NotFound,
    Permission,
    PullRequest,
    PushCredentials,
    RateLimited,
    RetryPolicy,
    ReviewComment,
    TextEdit,
    auth_message,
    hidden_marker,
)
from runner.forge.budget import ForgeStats
from runner.forge.retry import (
    ForgeRetry,
    is_rate_limit,
    rate_limit_wait,
    retry_after_seconds,
    stop_if_cancelled,
)
from runner.forge.retry import (
    retrying as _retrying,
)

WIP = "WIP: "
F = TypeVar("F", bound=Callable[..., Any])


def _operation(method: F) -> F:
    """Run the method as one retried operation (runner/forge/retry.py)."""
    @functools.wraps(method)
    def run(self: ForgejoForge, *args: Any, **kwargs: Any) -> Any:
        return self._retry.call(method.__name__, lambda: method(self, *args, **kwargs))
    return run  # type: ignore[return-value]

_WIP_PREFIXES = ("wip:", "[wip]")
PAGE = 50


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FUser(_Model):
    login: str


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


class FTimeline(_Model):
    type: str
    body: str | None = ""
    label: FLabel | None = None
    user: FUser | None = None
    created_at: datetime


class FBranch(_Model):
    ref: str
    sha: str


class FPull(_Model):
    number: int
    title: str
    body: str | None = ""
    state: str
    draft: bool = False
    head: FBranch
    base: FBranch
    html_url: str = ""
    merged: bool = False


class FStatus(_Model):
    context: str
    status: str
    description: str | None = ""
    target_url: str | None = ""


class FCombined(_Model):
    state: str = ""
    statuses: list[FStatus] | None = None


class FPermission(_Model):
    permission: str


class FId(_Model):
    id: int


def is_wip(title: str) -> bool:
    """Forgejo's draft rule: the title starts with ``WIP:`` or ``[WIP]``."""
    return title.strip().lower().startswith(_WIP_PREFIXES)


def strip_wip(title: str) -> str:
    stripped = title.strip()
    for prefix in _WIP_PREFIXES:
        if stripped.lower().startswith(prefix):
            return stripped[len(prefix):].strip()
    return stripped


class ForgejoForge:
    """The Forge protocol on Forgejo or Gitea (``base_url`` without ``/api/v1``)."""

    kind = "forgejo"

    def __init__(self, token: str, *, base_url: str, token_env: str = "FORGEJO_TOKEN",
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
    def _to_pull(raw: FPull) -> PullRequest:
        return PullRequest(number=raw.number, head=raw.head.ref, base=raw.base.ref,
                           head_sha=raw.head.sha, title=strip_wip(raw.title),
                           body=raw.body or "", draft=raw.draft or is_wip(raw.title),
                           state="closed" if raw.state == "closed" else "open",
                           url=raw.html_url, merged=raw.merged)

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

    # ------------------------------------------------------------ pulls

    @_operation
    def find_pull(self, repo: str, head: str, base: str) -> PullRequest | None:
        """``GET /pulls/{base}/{head}`` (Forgejo cannot filter the list by head)."""
        try:
            raw = FPull.model_validate(self._send(
                "GET", f"{self._r(repo)}/pulls/{quote(base)}/{quote(head)}").json())
        except NotFound:
            return None
        return self._to_pull(raw) if raw.state == "open" else None

    @_operation
    def find_or_create_pull(self, repo: str, head: str, base: str, title: str, body: str,
                            draft: bool = True) -> PullRequest:
        """Idempotent; a draft is created with a ``WIP:`` title, Forgejo's way."""
        found = self.find_pull(repo, head, base)
        if found is not None:
            return found
        shown = f"{WIP}{strip_wip(title)}" if draft else strip_wip(title)
        try:
            raw = self._send("POST", f"{self._r(repo)}/pulls",
                             json={"head": head, "base": base, "title": shown, "body": body})
        except Conflict:  # 409: created meanwhile by someone else
            again = self.find_pull(repo, head, base)
            if again is None:
                raise
            return again
        return self._to_pull(FPull.model_validate(raw.json()))

    @_operation
    def get_pull(self, repo: str, number: int) -> PullRequest:
        """A pull request by number."""
        return self._to_pull(FPull.model_validate(
            self._send("GET", f"{self._r(repo)}/pulls/{number}").json()))

    @_operation
    def update_pull(self, repo: str, number: int, *, title: str | None = None,
                    body: str | None = None, draft: bool | None = None) -> PullRequest:
        """Title and body; ``draft`` adds or strips the ``WIP:`` prefix."""
        current = FPull.model_validate(
            self._send("GET", f"{self._r(repo)}/pulls/{number}").json())
        is_draft = is_wip(current.title) if draft is None else draft
        new_title = strip_wip(title if title is not None else current.title)
        fields: dict[str, Any] = {"title": f"{WIP}{new_title}" if is_draft else new_title}
        if body is not None:
            fields["body"] = body
        raw = self._send("PATCH", f"{self._r(repo)}/pulls/{number}", json=fields).json()
        return self._to_pull(FPull.model_validate(raw))

    # ------------------------------------------------------------ CI

    @_operation
    def ci_state(self, repo: str, sha: str) -> CIState:
        """The latest status per context on ``sha``. Forgejo's ``warning`` is not green."""
        raw = FCombined.model_validate(
            self._send("GET", f"{self._r(repo)}/commits/{sha}/status").json())
        contexts = []
        for status in raw.statuses or []:
            state: CIStateName
            description = status.description or ""
            if status.status in ("pending", "success", "failure", "error"):
                state = status.status  # type: ignore[assignment]
            elif status.status == "warning":
                state, description = "failure", f"warning: {description}".strip()
            else:
                state = "error"
            contexts.append(CIContext(status.context, state, description,
                                      status.target_url or ""))
        return CIState(sha=sha, contexts=tuple(contexts))

    @_operation
    def set_status(self, repo: str, sha: str, context: str, state: CIStateName,
                   description: str = "", target_url: str | None = None) -> None:
        """Post a commit status; a retry looks for the one the last attempt may have made."""
        if _retrying():
            latest = next((x for x in self._send("GET", f"{self._r(repo)}/commits/{sha}/statuses"
                                                 ).json() or []
                           if x.get("context") == context), None)
            if (latest is not None and latest.get("status") == state
                    and (latest.get("description") or "") == description):
                return
        self._send("POST", f"{self._r(repo)}/statuses/{sha}",
                   json={"state": state, "context": context, "description": description,
                         "target_url": target_url or ""})

    @_operation
    def post_review(self, repo: str, number: int, body: str,
                    comments: Sequence[ReviewComment] = (), commit_sha: str | None = None
                    ) -> int:
        """A COMMENT review; line comments anchor on the new side (``new_position``)."""
        payload: dict[str, Any] = {
            "body": body, "event": "COMMENT",
            "comments": [{"path": c.path, "body": c.body, "new_position": c.line}
                         for c in comments]}
        if commit_sha:
            payload["commit_id"] = commit_sha
        if _retrying():  # the last attempt may have posted it: look before posting again
            # The same body on the same commit: a reviewer's words are never the bot's own.
            for old in self._send("GET", f"{self._r(repo)}/pulls/{number}/reviews").json() or []:
                if old.get("body") == body and (commit_sha is None
                                                or old.get("commit_id") == commit_sha):
                    return int(old["id"])
        raw = self._send("POST", f"{self._r(repo)}/pulls/{number}/reviews", json=payload)
        return FId.model_validate(raw.json()).id

    # ------------------------------------------------------------ git

    def clone_url(self, repo: str) -> str:
        """``https://forgejo.example/owner/name.git`` (or under ``git_url`` when one is given)."""
        return f"{self.git_url}/{repo}.git"

    def push_credentials(self, repo: str | None = None) -> PushCredentials:
        """Basic auth with the bot's login and its token as the password (any repository)."""
        return PushCredentials(username=self.bot_user or "oauth2", token=self._token)
