"""The GitHub adapter, on PyGithub.

``base_url`` is ``https://api.github.com``, a GitHub Enterprise ``https://host/api/v3``, or the
emulator. Retries (429 and 5xx, honouring Retry-After, bounded) are PyGithub's urllib3 retry
configured from a ``RetryPolicy``; PyGithub's write throttling is on by default (GitHub asks
for a second between writes) and off when ``throttle=False`` (tests).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlparse

import requests
from github import Auth, Github, GithubException, GithubRetry
from github.Issue import Issue as GhIssue
from github.PullRequest import PullRequest as GhPull
from github.Repository import Repository

from runner.forge.base import (
    MARKER_RE,
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
    RetryPolicy,
    ReviewComment,
    TextEdit,
    auth_message,
    hidden_marker,
)

T = TypeVar("T")

# A check run counts as passed with these conclusions (GitHub's own rule for required checks).
_CHECK_OK = {"success", "neutral", "skipped"}
_CHECK_ERROR = {"cancelled", "stale"}
# Who last edited an issue's text and title: GitHub's REST API does not say, GraphQL does.
_LAST_EDIT = (
    "query($owner: String!, $name: String!, $number: Int!) { repository(owner: $owner, "
    "name: $name) { issue(number: $number) { lastEditedAt editor { login } "
    "timelineItems(itemTypes: [RENAMED_TITLE_EVENT], last: 1) { nodes { "
    "... on RenamedTitleEvent { createdAt actor { login } } } } } } }")


def _aware(at: datetime | None) -> datetime:
    if at is None:
        return datetime.fromtimestamp(0, UTC)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def web_root(base_url: str) -> str:
    """``https://api.github.com`` -> ``https://github.com``; ``https://h/api/v3`` -> ``https://h``."""
    parsed = urlparse(base_url.rstrip("/"))
    if parsed.hostname == "api.github.com":
        return f"{parsed.scheme}://github.com"
    path = parsed.path.removesuffix("/api/v3")
    return f"{parsed.scheme}://{parsed.netloc}{path}"


class GitHubForge:
    """The Forge protocol on GitHub (or GitHub Enterprise, or the emulator)."""

    kind = "github"

    def __init__(self, token: str, *, base_url: str = "https://api.github.com",
                 token_env: str = "GITHUB_TOKEN", bot_user: str | None = None,
                 retry: RetryPolicy | None = None, throttle: bool = True,
                 timeout: float = 30, git_url: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.git_url = (git_url or web_root(self.base_url)).rstrip("/")
        self.token_env = token_env
        self.bot_user = bot_user
        self.retry = retry or RetryPolicy()
        self._token = token
        urllib_retry = None
        if self.retry.retries > 0:
            urllib_retry = GithubRetry(
                total=self.retry.retries, backoff_factor=self.retry.backoff,
                backoff_max=self.retry.max_wait, status_forcelist=sorted(self.retry.statuses),
                # Every method: our writes are idempotent (find-or-create, upsert by marker).
                allowed_methods=None, raise_on_status=False, respect_retry_after_header=True,
                secondary_rate_wait=self.retry.max_wait, max_rate_limit_wait=self.retry.max_wait)
        # PyGithub takes whole seconds only: round up (0.5 s as 0 would fail every request).
        self.gh = Github(auth=Auth.Token(token), base_url=self.base_url,
                         timeout=math.ceil(timeout),
                         retry=urllib_retry, lazy=True,
                         seconds_between_requests=0.25 if throttle else None,
                         seconds_between_writes=1.0 if throttle else None)

    # ------------------------------------------------------------ plumbing

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run a PyGithub call; its exceptions become ours, with what to do about them."""
        try:
            return fn()
        except GithubException as exc:
            status = exc.status
            message = exc.data.get("message", "") if isinstance(exc.data, dict) else exc.data
            if status == 404:
                raise NotFound(f"GitHub: {what}: not found (404)", 404) from None
            if status in (401, 403) and "rate limit" not in str(message).lower():
                raise ForgeAuthError(auth_message("GitHub", status, self.token_env, what),
                                     status) from None
            if status in (409, 422):
                raise Conflict(f"GitHub refused {what} ({status}): {message}", status) from None
            if status in self.retry.statuses or status >= 500:
                raise ForgeError(
                    f"GitHub answered {status} on {what} after {self.retry.retries} retries; "
                    "the forge is unavailable, try again later", status) from None
            raise ForgeError(f"GitHub refused {what} ({status}): {message}", status) from None
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError
                ) as exc:
            raise ForgeError(f"GitHub at {self.base_url} is unreachable on {what}: {exc}"
                             ) from None

    def _repo(self, repo: str) -> Repository:
        return self.gh.get_repo(repo)  # lazy: no request until an attribute is needed

    def _issue(self, repo: str, number: int) -> GhIssue:
        return self._call(f"get issue {repo}#{number}",
                          lambda: self._repo(repo).get_issue(number))

    def _to_issue(self, repo: str, raw: GhIssue) -> Issue:
        return Issue(repo=repo, number=raw.number, title=raw.title, body=raw.body or "",
                     labels=tuple(label.name for label in raw.labels),
                     state="closed" if raw.state == "closed" else "open",
                     author=raw.user.login if raw.user else "", url=raw.html_url or "",
                     updated_at=_aware(raw.updated_at))

    @staticmethod
    def _to_pull(raw: GhPull) -> PullRequest:
        return PullRequest(number=raw.number, head=raw.head.ref, base=raw.base.ref,
                           head_sha=raw.head.sha, title=raw.title, body=raw.body or "",
                           draft=bool(raw.draft),
                           state="closed" if raw.state == "closed" else "open",
                           url=raw.html_url or "", merged=raw.merged_at is not None)

    # ------------------------------------------------------------ issues

    def get_issue(self, repo: str, number: int) -> Issue:
        """The issue; NotFound if it does not exist or is a pull request."""
        def fetch() -> Issue:
            raw = self._repo(repo).get_issue(number)
            if raw.pull_request is not None:
                raise NotFound(f"GitHub: {repo}#{number} is a pull request, not an issue", 404)
            return self._to_issue(repo, raw)
        return self._call(f"get issue {repo}#{number}", fetch)

    def list_issues(self, repo: str, label: str) -> Iterator[Issue]:
        """Open issues with ``label``, every page; pull requests skipped."""
        pages = self._call(f"list issues of {repo}", lambda: iter(
            self._repo(repo).get_issues(state="open", labels=[label])))
        while True:
            raw = self._call(f"list issues of {repo}", lambda: next(pages, None))
            if raw is None:
                return
            # Read the raw field: touching an absent attribute makes PyGithub fetch each issue.
            if not raw._rawData.get("pull_request"):
                yield self._to_issue(repo, raw)

    def list_comments(self, repo: str, number: int,
                      since: datetime | None = None) -> list[Comment]:
        """Comments oldest first; ``since`` filters on the update time, as GitHub does."""
        def fetch() -> list[Comment]:
            issue = self._repo(repo).get_issue(number)
            raw = issue.get_comments(since=since) if since else issue.get_comments()
            return [Comment(id=c.id, author=c.user.login if c.user else "", body=c.body or "",
                            created_at=_aware(c.created_at), updated_at=_aware(c.updated_at),
                            url=c.html_url or "") for c in raw]
        return self._call(f"list comments of {repo}#{number}", fetch)

    def label_events(self, repo: str, number: int) -> list[LabelEvent]:
        """Label added/removed events from the issue's event list."""
        def fetch() -> list[LabelEvent]:
            out = []
            for event in self._repo(repo).get_issue(number).get_events():
                if event.event not in ("labeled", "unlabeled") or event.label is None:
                    continue
                out.append(LabelEvent(label=event.label.name,
                                      actor=event.actor.login if event.actor else "",
                                      action="added" if event.event == "labeled" else "removed",
                                      at=_aware(event.created_at)))
            return out
        return self._call(f"list events of {repo}#{number}", fetch)

    def last_text_edit(self, repo: str, number: int) -> TextEdit:
        """``lastEditedAt`` and ``editor`` of the issue and its last ``RenamedTitleEvent``,
        which only GitHub's GraphQL API gives."""
        owner, _, name = repo.partition("/")
        _, data = self._call(f"last edit of {repo}#{number}",
                             lambda: self.gh.requester.graphql_query(
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
            gh_repo.get_issue(number).add_to_labels(name)
        self._call(f"add label {name!r} to {repo}#{number}", add)

    def remove_label(self, repo: str, number: int, name: str) -> None:
        """Remove the label; a label that is not there is fine."""
        with contextlib.suppress(NotFound):
            self._call(f"remove label {name!r} from {repo}#{number}",
                       lambda: self._repo(repo).get_issue(number).remove_from_labels(name))

    def upsert_comment(self, repo: str, number: int, marker: str, body: str) -> Comment:
        """Edit our comment carrying ``marker``, or create it."""
        marker = hidden_marker(marker)
        if marker not in body:
            body = f"{body}\n\n{marker}"

        def upsert() -> Comment:
            issue = self._repo(repo).get_issue(number)
            found = next((c for c in issue.get_comments() if marker in (c.body or "")), None)
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
            if comment_id is None:
                issue.create_reaction(content)
            else:
                issue.get_comment(comment_id).create_reaction(content)
        self._call(f"react {content} on {repo}#{number}", react)

    # ------------------------------------------------------------ pulls

    def find_pull(self, repo: str, head: str, base: str) -> PullRequest | None:
        """The open PR from ``head`` into ``base`` (GitHub filters by ``owner:branch``)."""
        owner = repo.split("/", 1)[0]

        def find() -> PullRequest | None:
            for raw in self._repo(repo).get_pulls(state="open", head=f"{owner}:{head}",
                                                  base=base):
                return self._to_pull(raw)
            return None
        return self._call(f"find pull {head} -> {base} in {repo}", find)

    def find_or_create_pull(self, repo: str, head: str, base: str, title: str, body: str,
                            draft: bool = True) -> PullRequest:
        """Idempotent: an existing open PR for the branch is returned as it is."""
        found = self.find_pull(repo, head, base)
        if found is not None:
            return found
        try:
            return self._call(f"create pull {head} -> {base} in {repo}", lambda: self._to_pull(
                self._repo(repo).create_pull(base=base, head=head, title=title, body=body,
                                             draft=draft)))
        except Conflict:
            again = self.find_pull(repo, head, base)  # created by a racing worker
            if again is None:
                raise
            return again

    def get_pull(self, repo: str, number: int) -> PullRequest:
        """A pull request by number."""
        return self._call(f"get pull {repo}#{number}",
                          lambda: self._to_pull(self._repo(repo).get_pull(number)))

    def update_pull(self, repo: str, number: int, *, title: str | None = None,
                    body: str | None = None, draft: bool | None = None) -> PullRequest:
        """Edit title/body over REST; draft changes need GitHub's GraphQL mutations."""
        def update() -> PullRequest:
            pr = self._repo(repo).get_pull(number)
            fields: dict[str, Any] = {}
            if title is not None:
                fields["title"] = title
            if body is not None:
                fields["body"] = body
            if fields:
                pr.edit(**fields)
            if draft is False and pr.draft:
                pr.mark_ready_for_review()
            elif draft is True and not pr.draft:
                pr.convert_to_draft()
            return self._to_pull(self._repo(repo).get_pull(number))
        return self._call(f"update pull {repo}#{number}", update)

    # ------------------------------------------------------------ CI

    def ci_state(self, repo: str, sha: str) -> CIState:
        """Commit statuses (latest per context) and check runs of exactly ``sha``, merged."""
        def fetch() -> CIState:
            commit = self._repo(repo).get_commit(sha)
            contexts: list[CIContext] = []
            for status in commit.get_combined_status().statuses:
                state = status.state if status.state in ("pending", "success", "failure",
                                                         "error") else "error"
                contexts.append(CIContext(status.context, state,  # type: ignore[arg-type]
                                          status.description or "", status.target_url or ""))
            for run in commit.get_check_runs():
                if run.status != "completed":
                    check: CIStateName = "pending"
                elif run.conclusion in _CHECK_OK:
                    check = "success"
                elif run.conclusion in _CHECK_ERROR:
                    check = "error"
                else:
                    check = "failure"
                summary = run.output.summary if run.output and run.output.summary else ""
                contexts.append(CIContext(run.name, check, summary or (run.conclusion or ""),
                                          run.details_url or run.html_url or "", "check"))
            return CIState(sha=sha, contexts=tuple(contexts))
        return self._call(f"CI state of {repo}@{sha[:12]}", fetch)

    def set_status(self, repo: str, sha: str, context: str, state: CIStateName,
                   description: str = "", target_url: str | None = None) -> None:
        """Post a commit status; GitHub truncates descriptions at 140 characters."""
        def post() -> None:
            commit = self._repo(repo).get_commit(sha)
            if target_url:
                commit.create_status(state, target_url=target_url,
                                     description=description[:140], context=context)
            else:
                commit.create_status(state, description=description[:140], context=context)
        self._call(f"set status {context} on {repo}@{sha[:12]}", post)

    def post_review(self, repo: str, number: int, body: str,
                    comments: Sequence[ReviewComment] = (), commit_sha: str | None = None
                    ) -> int:
        """A COMMENT review with line comments on the new side; returns the review id."""
        def post() -> int:
            gh_repo = self._repo(repo)
            pr = gh_repo.get_pull(number)
            lines: list[Any] = [{"path": c.path, "line": c.line, "side": "RIGHT", "body": c.body}
                                for c in comments]
            if commit_sha:
                review = pr.create_review(commit=gh_repo.get_commit(commit_sha), body=body,
                                          event="COMMENT", comments=lines)
            else:
                review = pr.create_review(body=body, event="COMMENT", comments=lines)
            return int(review.id)
        return self._call(f"post review on {repo}#{number}", post)

    # ------------------------------------------------------------ git

    def clone_url(self, repo: str) -> str:
        """``https://github.com/owner/name.git`` (or the Enterprise/emulator equivalent, or
        under ``git_url`` when one is given)."""
        return f"{self.git_url}/{repo}.git"

    def push_credentials(self) -> PushCredentials:
        """Basic auth as ``x-access-token``, which GitHub accepts for every token kind."""
        return PushCredentials(username="x-access-token", token=self._token)

    @staticmethod
    def is_marker_comment(body: str) -> bool:
        """True when the body carries one of the runner's hidden markers."""
        return MARKER_RE.search(body) is not None
