"""The forge emulator's state: users, repositories, issues, pulls, statuses, hooks.

Flavour-neutral records. ``forge_github.py`` and ``forge_forgejo.py`` render them as each
forge's JSON; ``forge.py`` serves them. Every mutation goes through ``ForgeState`` methods,
which hold one lock and report what happened as ``Happening`` values, from which the
webhooks are made.
"""

from __future__ import annotations

import base64
import itertools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PERMS = ("none", "read", "write", "admin")


def now() -> datetime:
    """The current time, whole seconds, UTC (both forges send second precision)."""
    return datetime.now(UTC).replace(microsecond=0)


def iso(at: datetime | None) -> str | None:
    """``2024-01-01T00:00:00Z`` or None."""
    return at.strftime("%Y-%m-%dT%H:%M:%SZ") if at else None


class EmulatorError(Exception):
    """A request the emulated forge refuses; carries the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class User:
    login: str
    id: int
    token: str
    site_admin: bool = False
    created_at: datetime = field(default_factory=now)

    @property
    def email(self) -> str:
        return f"{self.login}@users.noreply.example"


@dataclass
class Label:
    id: int
    name: str
    color: str = "ededed"
    description: str = ""


@dataclass
class Reaction:
    id: int
    user: User
    content: str
    created_at: datetime = field(default_factory=now)


@dataclass
class Comment:
    id: int
    issue_number: int
    user: User
    body: str
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)
    reactions: list[Reaction] = field(default_factory=list)


@dataclass
class IssueEvent:
    """A label added or removed (GitHub issue event, Forgejo timeline comment)."""

    id: int
    actor: User
    event: str  # labeled | unlabeled
    label: Label
    created_at: datetime = field(default_factory=now)


@dataclass
class ReviewRecord:
    id: int
    user: User
    body: str
    state: str  # COMMENTED | APPROVED | CHANGES_REQUESTED | DISMISSED | PENDING (GitHub's)
    commit_id: str
    comments: list[dict[str, Any]]
    submitted_at: datetime = field(default_factory=now)
    dismissed: bool = False  # GitHub then shows the state DISMISSED, Forgejo a flag


@dataclass
class LineCommentRecord:
    """A comment on a line of a pull request's diff (runner/testing/forge_reviews.py)."""

    id: int
    review_id: int
    user: User
    path: str
    line: int  # on the side below
    side: str  # RIGHT (the new file) | LEFT (the old file)
    body: str
    diff_hunk: str  # GitHub's: the hunk's header and its lines down to this line
    position: int  # the line's index in the file's diff (GitHub's ``position``)
    commit_id: str
    in_reply_to: int | None = None  # the thread's first comment (GitHub's in_reply_to_id)
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)


@dataclass
class Pull:
    head: str
    base: str
    head_sha: str
    base_sha: str
    draft: bool = False
    merged: bool = False
    reviews: list[ReviewRecord] = field(default_factory=list)
    line_comments: list[LineCommentRecord] = field(default_factory=list)
    merged_at: datetime | None = None
    merged_by: User | None = None
    merge_sha: str = ""


@dataclass
class Issue:
    """An issue, or a pull request when ``pull`` is set (they share one number space)."""

    number: int
    id: int
    title: str
    body: str
    user: User
    state: str = "open"
    labels: list[Label] = field(default_factory=list)
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)
    closed_at: datetime | None = None
    comments: list[Comment] = field(default_factory=list)
    events: list[IssueEvent] = field(default_factory=list)
    reactions: list[Reaction] = field(default_factory=list)
    pull: Pull | None = None
    body_edited_at: datetime | None = None  # GitHub's GraphQL lastEditedAt
    body_editor: User | None = None
    retitled_at: datetime | None = None  # GitHub's GraphQL RenamedTitleEvent
    retitled_by: User | None = None


@dataclass
class Status:
    id: int
    sha: str
    context: str
    state: str  # pending | success | failure | error (| warning on Forgejo)
    description: str
    target_url: str
    creator: User
    created_at: datetime = field(default_factory=now)


@dataclass
class CheckRun:
    id: int
    sha: str
    name: str
    status: str  # queued | in_progress | completed
    conclusion: str | None
    details_url: str
    started_at: datetime = field(default_factory=now)
    completed_at: datetime | None = None


@dataclass
class Hook:
    id: int
    url: str
    secret: str


@dataclass
class CIConfig:
    command: str
    context: str = "ci/emulator"
    check_run: bool = False  # GitHub flavour: report as a check run instead of a status
    timeout: float = 120.0


@dataclass
class Repo:
    owner: User
    name: str
    id: int
    git_dir: Path
    default_branch: str = "main"
    private: bool = False
    permissions: dict[str, str] = field(default_factory=dict)
    issues: dict[int, Issue] = field(default_factory=dict)
    labels: list[Label] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    check_runs: list[CheckRun] = field(default_factory=list)
    hooks: list[Hook] = field(default_factory=list)
    ci: CIConfig | None = None
    created_at: datetime = field(default_factory=now)

    @property
    def full_name(self) -> str:
        return f"{self.owner.login}/{self.name}"

    def permission(self, user: User | None) -> str:
        """none | read | write | admin: the owner is admin; public repos are readable."""
        if user is None:
            return "none" if self.private else "read"
        if user.login == self.owner.login or user.site_admin:
            return "admin"
        granted = self.permissions.get(user.login.lower())
        if granted:
            return granted
        return "none" if self.private else "read"

    def label(self, name: str) -> Label | None:
        return next((x for x in self.labels if x.name.lower() == name.lower()), None)

    def pulls(self) -> list[Issue]:
        return [i for i in self.issues.values() if i.pull is not None]


@dataclass(frozen=True)
class Happening:
    """Something a webhook reports: ``kind`` is GitHub's event name, ``action`` its action."""

    # issues | issue_comment | pull_request | pull_request_review |
    # pull_request_review_comment | status | check_run | push | ping
    kind: str
    action: str
    repo: Repo
    sender: User
    issue: Issue | None = None
    label: Label | None = None
    comment: Comment | None = None
    status: Status | None = None
    check_run: CheckRun | None = None
    before: str = ""
    after: str = ""
    review: ReviewRecord | None = None  # pull_request_review, pull_request_review_comment
    line_comment: LineCommentRecord | None = None  # pull_request_review_comment
    ref: str = ""  # push: the branch that moved (``before`` -> ``after``)


class ForgeState:
    """All records, one lock, and the mutations that both API flavours and helpers share."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.users: dict[str, User] = {}
        self.repos: dict[str, Repo] = {}
        self._ids = itertools.count(1000)
        self.listeners: list[Any] = []  # callables taking a Happening

    def next_id(self) -> int:
        return next(self._ids)

    def emit(self, happening: Happening) -> None:
        for listener in list(self.listeners):
            listener(happening)

    # ------------------------------------------------------------ lookups

    def user_by_token(self, token: str) -> User | None:
        return next((u for u in self.users.values() if u.token == token), None)

    def user(self, login: str) -> User:
        found = self.users.get(login.lower())
        if found is None:
            raise EmulatorError(404, f"user {login} not found")
        return found

    def repo(self, owner: str, name: str) -> Repo:
        found = self.repos.get(f"{owner}/{name}".lower())
        if found is None:
            raise EmulatorError(404, "Not Found")
        return found

    @staticmethod
    def issue(repo: Repo, number: int) -> Issue:
        found = repo.issues.get(number)
        if found is None:
            raise EmulatorError(404, "Not Found")
        return found

    @staticmethod
    def pull(repo: Repo, number: int) -> Issue:
        found = repo.issues.get(number)
        if found is None or found.pull is None:
            raise EmulatorError(404, "Not Found")
        return found

    @staticmethod
    def need(repo: Repo, user: User | None, level: str) -> User:
        """The acting user, if they have at least ``level`` on ``repo`` (else 401/403/404)."""
        if user is None:
            raise EmulatorError(401, "Requires authentication")
        have = repo.permission(user)
        if PERMS.index(have) < PERMS.index(level):
            if have == "none":
                raise EmulatorError(404, "Not Found")
            raise EmulatorError(403, f"Must have {level} access to {repo.full_name}")
        return user

    # ------------------------------------------------------------ mutations

    def create_issue(self, repo: Repo, user: User, title: str, body: str,
                     labels: list[str] | None = None, pull: Pull | None = None) -> Issue:
        with self.lock:
            number = max(repo.issues, default=0) + 1
            issue = Issue(number=number, id=self.next_id(), title=title, body=body or "",
                          user=user, pull=pull)
            repo.issues[number] = issue
            if pull is not None:
                self.emit(Happening("pull_request", "opened", repo, user, issue=issue,
                                    after=pull.head_sha))
            else:
                self.emit(Happening("issues", "opened", repo, user, issue=issue))
            for name in labels or []:
                self.add_label(repo, issue, name, user)
            return issue

    def ensure_label(self, repo: Repo, name: str, color: str = "ededed",
                     description: str = "") -> Label:
        with self.lock:
            found = repo.label(name)
            if found is None:
                found = Label(self.next_id(), name, color.lstrip("#").lower(), description)
                repo.labels.append(found)
            return found

    def add_label(self, repo: Repo, issue: Issue, name: str, actor: User,
                  create: bool = True) -> Label | None:
        with self.lock:
            label = repo.label(name)
            if label is None:
                if not create:
                    return None
                label = self.ensure_label(repo, name)
            if any(x.id == label.id for x in issue.labels):
                return label
            issue.labels.append(label)
            issue.updated_at = now()
            issue.events.append(IssueEvent(self.next_id(), actor, "labeled", label))
            kind = "pull_request" if issue.pull else "issues"
            self.emit(Happening(kind, "labeled", repo, actor, issue=issue, label=label))
            return label

    def remove_label(self, repo: Repo, issue: Issue, label: Label, actor: User) -> None:
        with self.lock:
            if not any(x.id == label.id for x in issue.labels):
                raise EmulatorError(404, "Label does not exist")
            issue.labels = [x for x in issue.labels if x.id != label.id]
            issue.updated_at = now()
            issue.events.append(IssueEvent(self.next_id(), actor, "unlabeled", label))
            kind = "pull_request" if issue.pull else "issues"
            self.emit(Happening(kind, "unlabeled", repo, actor, issue=issue, label=label))

    def add_comment(self, repo: Repo, issue: Issue, user: User, body: str) -> Comment:
        with self.lock:
            comment = Comment(self.next_id(), issue.number, user, body)
            issue.comments.append(comment)
            issue.updated_at = now()
            self.emit(Happening("issue_comment", "created", repo, user, issue=issue,
                                comment=comment))
            return comment

    def find_comment(self, repo: Repo, comment_id: int) -> tuple[Issue, Comment]:
        for issue in repo.issues.values():
            for comment in issue.comments:
                if comment.id == comment_id:
                    return issue, comment
        raise EmulatorError(404, "Not Found")

    def edit_comment(self, repo: Repo, comment_id: int, user: User, body: str) -> Comment:
        with self.lock:
            issue, comment = self.find_comment(repo, comment_id)
            if comment.user.login != user.login and repo.permission(user) != "admin":
                raise EmulatorError(403, "You may only edit your own comments")
            comment.body = body
            comment.updated_at = now()
            self.emit(Happening("issue_comment", "edited", repo, user, issue=issue,
                                comment=comment))
            return comment

    def edit_issue(self, repo: Repo, issue: Issue, user: User, *, title: str | None = None,
                   body: str | None = None, state: str | None = None) -> Issue:
        with self.lock:
            if title is not None or body is not None:
                if body is not None and body != issue.body:
                    issue.body_edited_at, issue.body_editor = now(), user
                if title is not None and title != issue.title:
                    issue.retitled_at, issue.retitled_by = now(), user
                issue.title = title if title is not None else issue.title
                issue.body = body if body is not None else issue.body
                kind = "pull_request" if issue.pull else "issues"
                self.emit(Happening(kind, "edited", repo, user, issue=issue))
            if state is not None and state != issue.state:
                issue.state = state
                issue.closed_at = now() if state == "closed" else None
                kind = "pull_request" if issue.pull else "issues"
                action = "closed" if state == "closed" else "reopened"
                self.emit(Happening(kind, action, repo, user, issue=issue))
            issue.updated_at = now()
            return issue

    def react(self, target: Issue | Comment, user: User, content: str) -> tuple[Reaction, bool]:
        """Add a reaction; returns it and whether it is new (an existing one answers 200)."""
        with self.lock:
            for reaction in target.reactions:
                if reaction.user.login == user.login and reaction.content == content:
                    return reaction, False
            reaction = Reaction(self.next_id(), user, content)
            target.reactions.append(reaction)
            return reaction, True

    def set_status(self, repo: Repo, sha: str, user: User, state: str, context: str,
                   description: str = "", target_url: str = "") -> Status:
        with self.lock:
            status = Status(self.next_id(), sha, context or "default", state,
                            description or "", target_url or "", user)
            repo.statuses.append(status)
            self.emit(Happening("status", state, repo, user, status=status))
            return status

    def latest_statuses(self, repo: Repo, sha: str) -> list[Status]:
        """The newest status per context on ``sha``, as the combined status shows them."""
        latest: dict[str, Status] = {}
        for status in repo.statuses:
            if status.sha == sha:
                latest[status.context] = status
        return list(latest.values())

    def add_check_run(self, repo: Repo, sha: str, name: str, details_url: str,
                      actor: User) -> CheckRun:
        with self.lock:
            run = CheckRun(self.next_id(), sha, name, "in_progress", None, details_url)
            repo.check_runs.append(run)
            return run

    def complete_check_run(self, repo: Repo, run: CheckRun, conclusion: str,
                           actor: User) -> None:
        with self.lock:
            run.status = "completed"
            run.conclusion = conclusion
            run.completed_at = now()
            self.emit(Happening("check_run", "completed", repo, actor, check_run=run))

    def branch_moved(self, repo: Repo, branch: str, before: str, after: str,
                     pusher: User) -> list[Issue]:
        """A push moved ``branch``: open pulls from it follow; returns those pulls."""
        moved = []
        with self.lock:
            self.emit(Happening("push", "", repo, pusher, before=before, after=after,
                                ref=branch))
            for issue in repo.pulls():
                assert issue.pull is not None
                if issue.state == "open" and issue.pull.head == branch:
                    issue.pull.head_sha = after
                    issue.updated_at = now()
                    moved.append(issue)
                    self.emit(Happening("pull_request", "synchronize", repo, pusher,
                                        issue=issue, before=before, after=after))
        return moved


def node_id(kind: str, ident: int) -> str:
    """A GitHub GraphQL node id for the record ``kind`` ``ident`` (opaque, stable)."""
    return base64.b64encode(f"0:{kind}{ident}".encode()).decode()
