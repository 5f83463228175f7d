"""The Forge protocol: what the run steps read from and write to GitHub or Forgejo.

Adapters (``github.py``, ``forgejo.py``) turn each forge's API into these small frozen values,
so the core never sees a PyGithub object or a Forgejo JSON document. Errors are ours too:
``NotFound`` (404), ``ForgeAuthError`` (401/403, naming the token's environment variable) and
``ForgeError`` (anything else, including "gave up after N retries").
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

Permission = Literal["admin", "write", "read", "none"]
CIStateName = Literal["pending", "success", "failure", "error"]
ReviewState = Literal["approved", "changes_requested", "commented", "dismissed", "pending"]
PERMISSION_RANK: dict[str, int] = {"none": 0, "read": 1, "write": 2, "admin": 3}

# A hidden marker identifies the runner's own comments, so a comment is updated, not repeated.
MARKER_RE = re.compile(r"<!--\s*orchestrator:[^>]*-->")


def hidden_marker(marker: str) -> str:
    """``orchestrator:status`` -> ``<!-- orchestrator:status -->``; a full marker is kept."""
    marker = marker.strip()
    return marker if marker.startswith("<!--") else f"<!-- {marker} -->"


# ---------------------------------------------------------------- errors


class ForgeError(Exception):
    """A forge request failed; the message says which request and what to do.

    ``transient`` marks what another attempt may cure (429, 5xx, a transport error, a rate
    limit); ``retry_after`` is the wait the forge asked for, in seconds, when it said one.
    """

    def __init__(self, message: str, status: int | None = None, *,
                 retry_after: float | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.transient = transient


class RateLimited(ForgeError):
    """The forge's rate limit (primary, or secondary: 403/429); the status is kept as 429,
    "too many requests", whatever the forge answered, so callers wait instead of failing."""

    def __init__(self, message: str, status: int | None = 429, *,
                 retry_after: float | None = None, transient: bool = True) -> None:
        super().__init__(message, 429, retry_after=retry_after, transient=transient)


class NotFound(ForgeError):
    """The repository, issue, pull request or user does not exist (HTTP 404)."""


class ForgeAuthError(ForgeError):
    """The token was refused (HTTP 401/403); the message names its environment variable."""


class Conflict(ForgeError):
    """The forge refused because the object already exists (HTTP 409/422 on create)."""


def auth_message(forge: str, status: int, token_env: str, what: str) -> str:
    """The actionable text of an authentication error."""
    if status == 401:
        return (f"{forge} refused the token in ${token_env} ({status}) on {what}: "
                f"check that ${token_env} holds a valid, unexpired token")
    return (f"{forge} denied access ({status}) on {what}: the token in ${token_env} lacks a "
            f"scope or permission on this repository (see docs/forges.md for the scopes)")


# ---------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    """How forge operations are retried (``runner/forge/retry.py`` applies it).

    ``retries`` is the number of extra attempts; a wait is the forge's Retry-After (or the
    rate limit's reset), else exponential backoff from ``backoff`` seconds with jitter,
    capped at ``max_wait`` (``rate_limit_wait`` for a rate limit: GitHub's primary limit
    resets within the hour). ``RetryPolicy.off()`` disables retrying entirely.
    """

    retries: int = 4
    backoff: float = 0.5
    max_wait: float = 30.0
    rate_limit_wait: float = 3600.0
    statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})

    @classmethod
    def off(cls) -> RetryPolicy:
        """No retries at all."""
        return cls(retries=0)


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class Issue:
    """An issue as the runner sees it (never a pull request)."""

    repo: str
    number: int
    title: str
    body: str
    labels: tuple[str, ...]
    state: Literal["open", "closed"]
    author: str
    url: str = ""
    updated_at: datetime | None = None

    def has_label(self, name: str) -> bool:
        """Case-insensitive, as both forges compare label names."""
        return name.lower() in (label.lower() for label in self.labels)


@dataclass(frozen=True)
class Comment:
    id: int
    author: str
    body: str
    created_at: datetime
    updated_at: datetime | None = None
    url: str = ""


@dataclass(frozen=True)
class LabelEvent:
    """Someone added (or removed) a label at a time: who triggered or killed a run."""

    label: str
    actor: str
    action: Literal["added", "removed"]
    at: datetime


@dataclass(frozen=True)
class TextEdit:
    """Who last edited an issue's text (``at``, ``editor``) and its title (``title_at``,
    ``title_editor``), and when, as far as the forge records it.

    ``recorded`` is False where the forge's API does not say (Forgejo): then the rest is None
    and the runner falls back on what signed deliveries showed it."""

    recorded: bool
    at: datetime | None = None  # None with ``recorded``: never edited
    editor: str | None = None
    title_at: datetime | None = None  # None with ``recorded``: never retitled
    title_editor: str | None = None


@dataclass(frozen=True)
class PullRequest:
    number: int
    head: str  # branch name
    base: str
    head_sha: str
    title: str
    body: str
    draft: bool
    state: Literal["open", "closed"]
    url: str = ""
    merged: bool = False
    mergeable: bool | None = None  # None: the forge has not computed it yet
    author: str = ""
    labels: tuple[str, ...] = ()

    def has_label(self, name: str) -> bool:
        """Case-insensitive, as both forges compare label names."""
        return name.lower() in (label.lower() for label in self.labels)


@dataclass(frozen=True)
class CIContext:
    """One CI signal on a commit: a commit status or a GitHub check run, normalised."""

    name: str
    state: CIStateName
    description: str = ""
    url: str = ""
    kind: Literal["status", "check"] = "status"


@dataclass(frozen=True)
class CIState:
    """Every CI context of one exact commit. No contexts is ``none``: never green."""

    sha: str
    contexts: tuple[CIContext, ...] = ()

    @property
    def state(self) -> Literal["none", "pending", "success", "failure"]:
        """failure if any failed or errored, pending if any is running, none if there are none."""
        if not self.contexts:
            return "none"
        states = {c.state for c in self.contexts}
        if states & {"failure", "error"}:
            return "failure"
        if "pending" in states:
            return "pending"
        return "success"

    def context(self, name: str) -> CIContext | None:
        """The context called ``name``, if the commit has it."""
        return next((c for c in self.contexts if c.name == name), None)

    def required_state(self, required: Sequence[str]) -> Literal[
            "none", "pending", "success", "failure"]:
        """The state counting only ``required`` contexts; a missing one is still pending.

        With nothing required, every context counts (and none at all is ``none``).
        """
        if not required:
            return self.state
        picked = [self.context(name) for name in required]
        if any(c is not None and c.state in ("failure", "error") for c in picked):
            return "failure"
        if any(c is None or c.state == "pending" for c in picked):
            return "pending"
        return "success"

    @property
    def failing(self) -> tuple[CIContext, ...]:
        """The failed and errored contexts, for the agent's next instruction."""
        return tuple(c for c in self.contexts if c.state in ("failure", "error"))


@dataclass(frozen=True)
class ReviewComment:
    """A finding anchored to a line of the PR's new side."""

    path: str
    line: int
    body: str


@dataclass(frozen=True)
class Review:
    """A submitted (or pending) review of a pull request, by anyone; ``state`` lower case."""

    id: int
    author: str
    state: ReviewState
    body: str
    commit_sha: str = ""
    submitted_at: datetime | None = None
    url: str = ""


@dataclass(frozen=True)
class LineComment:
    """A comment on a line of a pull request's diff (a review thread's first, or a reply).

    ``line`` is on the new side (None when the forge no longer places it); ``in_reply_to``
    is the thread's first comment, None for a thread's first; ``review_id`` the review it
    was submitted in, when the forge says."""

    id: int
    review_id: int | None
    author: str
    path: str
    line: int | None
    body: str
    diff_hunk: str = ""
    in_reply_to: int | None = None
    created_at: datetime | None = None
    url: str = ""


@dataclass(frozen=True)
class PushCredentials:
    """How git authenticates a push, without the token in any URL.

    Pass ``git_config()`` as ``-c key=value`` options (or ``GIT_CONFIG_*`` env vars) for
    one command; it is never written to ``.git/config``. ``repr`` hides the token.
    """

    username: str
    token: str = field(repr=False)
    scheme: Literal["basic", "bearer"] = "basic"

    @property
    def header(self) -> str:
        """The ``Authorization: ...`` header value git sends."""
        if self.scheme == "bearer":
            return f"Authorization: Bearer {self.token}"
        raw = base64.b64encode(f"{self.username}:{self.token}".encode()).decode()
        return f"Authorization: Basic {raw}"

    def git_config(self) -> dict[str, str]:
        """``{"http.extraheader": "Authorization: ..."}`` for ``git -c``."""
        return {"http.extraheader": self.header}

    def git_env(self) -> dict[str, str]:
        """The same as environment variables, so the header is not on a command line."""
        return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraheader",
                "GIT_CONFIG_VALUE_0": self.header}


def own_logins(forges: Iterable[object]) -> frozenset[str]:
    """The logins the runner acts as (lower case): each forge's ``bot_login`` (a GitHub App's
    ``<slug>[bot]``, read once from the forge, or the configured ``bot_user``). A forge that
    cannot say now is left out: the runner's comments are still known by their marker."""
    found = set()
    for forge in forges:
        try:
            login = getattr(forge, "bot_login", None)
        except (ForgeError, OSError):  # unreachable now (requests' errors are OSErrors)
            continue
        if login:
            found.add(str(login).lower())
    return frozenset(found)


# ---------------------------------------------------------------- the port


class Forge(Protocol):
    """What the runner needs from a forge. ``repo`` is always ``owner/name``."""

    kind: str  # "github" or "forgejo"

    def get_issue(self, repo: str, number: int) -> Issue:
        """The issue; NotFound if it does not exist (or is a pull request)."""
        ...

    def list_issues(self, repo: str, label: str) -> Iterator[Issue]:
        """Open issues carrying ``label``, every page, pull requests excluded."""
        ...

    def list_comments(self, repo: str, number: int,
                      since: datetime | None = None) -> list[Comment]:
        """Comments on an issue or PR, oldest first, updated at or after ``since``."""
        ...

    def label_events(self, repo: str, number: int) -> list[LabelEvent]:
        """Who added and removed which label, and when, oldest first."""
        ...

    def last_text_edit(self, repo: str, number: int) -> TextEdit:
        """Who last edited the issue's text and its title, and when (GitHub), or that the forge
        does not say (Forgejo): what shows that the text is the one the trigger saw."""
        ...

    def permission(self, repo: str, user: str) -> Permission:
        """The user's permission on the repository: admin, write, read or none."""
        ...

    def add_label(self, repo: str, number: int, name: str) -> None:
        """Add a label to an issue or PR, creating the label in the repository if missing."""
        ...

    def remove_label(self, repo: str, number: int, name: str) -> None:
        """Remove a label; nothing happens when it is not there."""
        ...

    def upsert_comment(self, repo: str, number: int, marker: str, body: str) -> Comment:
        """Edit the comment containing ``marker`` (``<!-- orchestrator:... -->``) or create one.

        A bare ``orchestrator:...`` is wrapped in an HTML comment, so it stays hidden; the
        marker is appended to ``body`` when it is not already in it.
        """
        ...

    def add_reaction(self, repo: str, number: int, content: str,
                     comment_id: int | None = None) -> None:
        """React (``+1``, ``eyes``, ``rocket``...) to an issue or to one of its comments."""
        ...

    def find_pull(self, repo: str, head: str, base: str) -> PullRequest | None:
        """The open PR from branch ``head`` into ``base``, if there is one."""
        ...

    def find_or_create_pull(self, repo: str, head: str, base: str, title: str, body: str,
                            draft: bool = True) -> PullRequest:
        """The open PR from ``head`` into ``base``; created (as a draft by default) if none."""
        ...

    def get_pull(self, repo: str, number: int) -> PullRequest:
        """A pull request by number."""
        ...

    def update_pull(self, repo: str, number: int, *, title: str | None = None,
                    body: str | None = None, draft: bool | None = None) -> PullRequest:
        """Change title and body; ``draft=False`` marks a draft ready for review."""
        ...

    def ci_state(self, repo: str, sha: str) -> CIState:
        """Every CI context on the exact commit ``sha`` (statuses and GitHub check runs)."""
        ...

    def set_status(self, repo: str, sha: str, context: str, state: CIStateName,
                   description: str = "", target_url: str | None = None) -> None:
        """Set a commit status, e.g. ``orchestrator/ai-review``."""
        ...

    def post_review(self, repo: str, number: int, body: str,
                    comments: Sequence[ReviewComment] = (), commit_sha: str | None = None
                    ) -> int:
        """Post a COMMENT review (never approve: a bot approving its own PR is refused)."""
        ...

    def list_reviews(self, repo: str, number: int) -> list[Review]:
        """Every review of the pull request, by anyone, oldest first."""
        ...

    def list_line_comments(self, repo: str, number: int) -> list[LineComment]:
        """Every line comment of the pull request, replies included, oldest first."""
        ...

    def reply_to_line_comment(self, repo: str, number: int, comment: LineComment,
                              body: str) -> LineComment:
        """Reply in ``comment``'s thread (a retry finds the reply it already made)."""
        ...

    def clone_url(self, repo: str) -> str:
        """The HTTPS clone URL of the repository, without credentials in it."""
        ...

    def push_credentials(self, repo: str | None = None) -> PushCredentials:
        """The credentials git uses to fetch and push ``repo`` as the bot, as an
        http.extraheader (a GitHub App's differ per installation, and are renewed)."""
        ...
