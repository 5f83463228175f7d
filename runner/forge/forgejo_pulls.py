"""The Forgejo adapter's pull requests, CI and reviews (``ForgejoForge`` mixes them in).

Forgejo has no list of a PR's line comments: they are read review by review. It has no reply
endpoint either: a reply is a code comment added to the answered comment's review at the same
path and line, which is how Forgejo's own interface puts it in that conversation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from runner.forge.base import (
    CIContext,
    CIState,
    CIStateName,
    Conflict,
    ForgeError,
    LineComment,
    NotFound,
    PullRequest,
    Review,
    ReviewComment,
    ReviewState,
)
from runner.forge.retry import retrying

if TYPE_CHECKING:
    import httpx

WIP = "WIP: "
_WIP_PREFIXES = ("wip:", "[wip]")
F = TypeVar("F", bound=Callable[..., Any])
# Forgejo's review states; REQUEST_REVIEW is a request for a review, not one.
_REVIEW_STATES: dict[str, ReviewState] = {
    "APPROVED": "approved", "REQUEST_CHANGES": "changes_requested", "COMMENT": "commented",
    "PENDING": "pending"}


def operation(method: F) -> F:
    """Run the method as one retried operation (runner/forge/retry.py)."""
    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self._retry.call(method.__name__, lambda: method(self, *args, **kwargs))
    return run  # type: ignore[return-value]


class Model(BaseModel):
    """A Forgejo JSON document, read leniently (Forgejo adds fields between versions)."""

    model_config = ConfigDict(extra="ignore")


class FUser(Model):
    login: str


class FBranch(Model):
    ref: str
    sha: str


class FLabelName(Model):
    name: str


class FPull(Model):
    number: int
    title: str
    body: str | None = ""
    state: str
    draft: bool = False
    head: FBranch
    base: FBranch
    html_url: str = ""
    merged: bool = False
    mergeable: bool | None = None
    user: FUser | None = None
    labels: list[FLabelName] | None = None


class FStatus(Model):
    context: str
    status: str
    description: str | None = ""
    target_url: str | None = ""


class FCombined(Model):
    state: str = ""
    statuses: list[FStatus] | None = None


class FId(Model):
    id: int


class FReview(Model):
    id: int
    user: FUser | None = None
    state: str = ""
    body: str | None = ""
    commit_id: str | None = ""
    submitted_at: datetime | None = None
    html_url: str | None = ""
    dismissed: bool = False
    comments_count: int = 0


class FReviewComment(Model):
    id: int
    pull_request_review_id: int | None = None
    user: FUser | None = None
    path: str = ""
    position: int | None = None  # the line on the new side, 0 when on the old
    original_position: int | None = None  # the line on the old side, 0 when on the new
    body: str | None = ""
    diff_hunk: str | None = ""
    created_at: datetime | None = None
    html_url: str | None = ""

    @property
    def conversation(self) -> tuple[str, int, int]:
        """Forgejo's conversation: every code comment on one line of one file."""
        return self.path, self.position or 0, self.original_position or 0


def is_wip(title: str) -> bool:
    """Forgejo's draft rule: the title starts with ``WIP:`` or ``[WIP]``."""
    return title.strip().lower().startswith(_WIP_PREFIXES)


def strip_wip(title: str) -> str:
    """The title without a ``WIP:`` or ``[WIP]`` prefix."""
    stripped = title.strip()
    for prefix in _WIP_PREFIXES:
        if stripped.lower().startswith(prefix):
            return stripped[len(prefix):].strip()
    return stripped


def to_review(raw: FReview) -> Review | None:
    """A review; None for a review request (Forgejo lists those among the reviews)."""
    state: ReviewState | None = ("dismissed" if raw.dismissed
                                 else _REVIEW_STATES.get(raw.state.upper()))
    if state is None:
        return None
    return Review(id=raw.id, author=raw.user.login if raw.user else "",
                  state=state, body=raw.body or "", commit_sha=raw.commit_id or "",
                  submitted_at=raw.submitted_at, url=raw.html_url or "")


def to_line_comments(raws: list[FReviewComment]) -> list[LineComment]:
    """Line comments oldest first; each names its conversation's first comment."""
    ordered = sorted(raws, key=lambda c: (c.created_at or datetime.min, c.id))
    first: dict[tuple[str, int, int], int] = {}
    out = []
    for raw in ordered:
        thread = first.setdefault(raw.conversation, raw.id)
        out.append(LineComment(
            id=raw.id, review_id=raw.pull_request_review_id,
            author=raw.user.login if raw.user else "", path=raw.path,
            line=raw.position or None, body=raw.body or "", diff_hunk=raw.diff_hunk or "",
            in_reply_to=None if thread == raw.id else thread, created_at=raw.created_at,
            url=raw.html_url or ""))
    return out


class ForgejoPulls:
    """Pull requests, CI state, reviews and line comments, on ``ForgejoForge``'s plumbing."""

    if TYPE_CHECKING:
        def _send(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                  json: Any = None) -> httpx.Response: ...
        def _paged(self, path: str,
                   params: dict[str, Any] | None = None) -> Iterator[Any]: ...
        @staticmethod
        def _r(repo: str) -> str: ...

    @staticmethod
    def _to_pull(raw: FPull) -> PullRequest:
        return PullRequest(number=raw.number, head=raw.head.ref, base=raw.base.ref,
                           head_sha=raw.head.sha, title=strip_wip(raw.title),
                           body=raw.body or "", draft=raw.draft or is_wip(raw.title),
                           state="closed" if raw.state == "closed" else "open",
                           url=raw.html_url, merged=raw.merged, mergeable=raw.mergeable,
                           author=raw.user.login if raw.user else "",
                           labels=tuple(x.name for x in raw.labels or ()))


    # ------------------------------------------------------------ pulls

    @operation
    def find_pull(self, repo: str, head: str, base: str) -> PullRequest | None:
        """``GET /pulls/{base}/{head}`` (Forgejo cannot filter the list by head)."""
        try:
            raw = FPull.model_validate(self._send(
                "GET", f"{self._r(repo)}/pulls/{quote(base)}/{quote(head)}").json())
        except NotFound:
            return None
        return self._to_pull(raw) if raw.state == "open" else None

    @operation
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

    @operation
    def get_pull(self, repo: str, number: int) -> PullRequest:
        """A pull request by number."""
        return self._to_pull(FPull.model_validate(
            self._send("GET", f"{self._r(repo)}/pulls/{number}").json()))

    @operation
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

    @operation
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

    @operation
    def set_status(self, repo: str, sha: str, context: str, state: CIStateName,
                   description: str = "", target_url: str | None = None) -> None:
        """Post a commit status; a retry looks for the one the last attempt may have made."""
        if retrying():
            latest = next((x for x in self._send("GET", f"{self._r(repo)}/commits/{sha}/statuses"
                                                 ).json() or []
                           if x.get("context") == context), None)
            if (latest is not None and latest.get("status") == state
                    and (latest.get("description") or "") == description):
                return
        self._send("POST", f"{self._r(repo)}/statuses/{sha}",
                   json={"state": state, "context": context, "description": description,
                         "target_url": target_url or ""})

    @operation
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
        if retrying():  # the last attempt may have posted it: look before posting again
            # The same body on the same commit: a reviewer's words are never the bot's own.
            for old in self._send("GET", f"{self._r(repo)}/pulls/{number}/reviews").json() or []:
                if old.get("body") == body and (commit_sha is None
                                                or old.get("commit_id") == commit_sha):
                    return int(old["id"])
        raw = self._send("POST", f"{self._r(repo)}/pulls/{number}/reviews", json=payload)
        return FId.model_validate(raw.json()).id

    # ------------------------------------------------------------ reviews

    def _reviews(self, repo: str, number: int) -> list[FReview]:
        return [FReview.model_validate(x)
                for x in self._paged(f"{self._r(repo)}/pulls/{number}/reviews")]

    @operation
    def list_reviews(self, repo: str, number: int) -> list[Review]:
        """Every review of the PR, by anyone, oldest first (review requests left out)."""
        found = [to_review(x) for x in self._reviews(repo, number)]
        return [x for x in found if x is not None]

    def _line_comments(self, repo: str, number: int) -> list[FReviewComment]:
        out: list[FReviewComment] = []
        for review in self._reviews(repo, number):
            if review.comments_count:  # a pending review's drafts are nobody's words yet
                data = self._send("GET", f"{self._r(repo)}/pulls/{number}/reviews/"
                                         f"{review.id}/comments").json() or []
                out.extend(FReviewComment.model_validate(x) for x in data)
        return out

    @operation
    def list_line_comments(self, repo: str, number: int) -> list[LineComment]:
        """Every line comment of the PR, read review by review, oldest first."""
        return to_line_comments(self._line_comments(repo, number))

    @operation
    def reply_to_line_comment(self, repo: str, number: int, comment: LineComment,
                              body: str) -> LineComment:
        """A code comment in the answered comment's review, at its path and line: Forgejo
        shows it in that conversation (it has no reply endpoint)."""
        raws = self._line_comments(repo, number)
        comments = to_line_comments(raws)
        thread = comment.in_reply_to or comment.id
        if retrying():  # the last attempt may have posted it: look before posting again
            for old in comments:
                if (old.in_reply_to or old.id) == thread and old.id != thread \
                        and old.body == body:
                    return old
        answered = next((x for x in raws if x.id == comment.id), None)
        if answered is None or answered.pull_request_review_id is None:
            raise NotFound(f"Forgejo: line comment {comment.id} of {repo}#{number} is gone",
                           404)
        payload: dict[str, Any] = {"body": body, "path": answered.path}
        if answered.position:
            payload["new_position"] = answered.position
        else:
            payload["old_position"] = answered.original_position or 0
        raw = FReviewComment.model_validate(self._send(
            "POST", f"{self._r(repo)}/pulls/{number}/reviews/"
                    f"{answered.pull_request_review_id}/comments", json=payload).json())
        made = next((x for x in to_line_comments([*raws, raw]) if x.id == raw.id), None)
        if made is None:
            raise ForgeError(f"Forgejo: the reply on {repo}#{number} was not recorded")
        return made
