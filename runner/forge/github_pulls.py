"""The GitHub adapter's pull requests, CI and reviews (``GitHubForge`` mixes them in).

Reviews and line comments are read as GitHub's raw JSON (conditional reads, so polling an
unchanged PR costs a free 304); a reply is a write, read again before it is posted again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from github import GithubException
from github.PullRequest import PullRequest as GhPull

from runner.forge.base import (
    CIContext,
    CIState,
    CIStateName,
    LineComment,
    PullRequest,
    Review,
    ReviewComment,
    ReviewState,
)
from runner.forge.retry import retrying, stop_if_cancelled

if TYPE_CHECKING:
    from github.Repository import Repository

T = TypeVar("T")

# A check run counts as passed with these conclusions (GitHub's own rule for required checks).
_CHECK_OK = {"success", "neutral", "skipped"}
_CHECK_ERROR = {"cancelled", "stale"}
_REVIEW_STATES: dict[str, ReviewState] = {
    "APPROVED": "approved", "CHANGES_REQUESTED": "changes_requested",
    "COMMENTED": "commented", "DISMISSED": "dismissed", "PENDING": "pending"}


def aware(at: datetime | None) -> datetime:
    """A PyGithub datetime (naive in older versions) as an aware one; None is the epoch."""
    if at is None:
        return datetime.fromtimestamp(0, UTC)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def iso(value: Any) -> datetime:
    """A GitHub timestamp (``2024-01-01T00:00:00Z``) as an aware datetime."""
    if not value:
        return datetime.fromtimestamp(0, UTC)
    return aware(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def _login(data: dict[str, Any]) -> str:
    return str((data.get("user") or {}).get("login") or "")


def to_pull(data: dict[str, Any]) -> PullRequest:
    """A pull request from GitHub's JSON (``mergeable`` is null until GitHub computed it)."""
    mergeable = data.get("mergeable")
    return PullRequest(number=int(data["number"]), head=data["head"]["ref"],
                       base=data["base"]["ref"], head_sha=data["head"]["sha"],
                       title=data.get("title") or "", body=data.get("body") or "",
                       draft=bool(data.get("draft")),
                       state="closed" if data.get("state") == "closed" else "open",
                       url=data.get("html_url") or "",
                       merged=bool(data.get("merged")) or data.get("merged_at") is not None,
                       mergeable=mergeable if isinstance(mergeable, bool) else None,
                       author=_login(data),
                       labels=tuple(str(x.get("name") or "") for x in data.get("labels") or ()
                                    if isinstance(x, dict)))


def to_review(data: dict[str, Any]) -> Review:
    """A review from GitHub's JSON; the REST state is upper case, ours lower."""
    submitted = data.get("submitted_at")
    return Review(id=int(data["id"]), author=_login(data),
                  state=_REVIEW_STATES.get(str(data.get("state")).upper(), "commented"),
                  body=data.get("body") or "", commit_sha=data.get("commit_id") or "",
                  submitted_at=iso(submitted) if submitted else None,
                  url=data.get("html_url") or "")


def to_line_comment(data: dict[str, Any]) -> LineComment:
    """A review comment from GitHub's JSON; ``line`` only when it is on the new side."""
    line = data.get("line")
    review_id = data.get("pull_request_review_id")
    reply_to = data.get("in_reply_to_id")
    return LineComment(id=int(data["id"]), review_id=int(review_id) if review_id else None,
                       author=_login(data), path=data.get("path") or "",
                       line=int(line) if line and data.get("side", "RIGHT") != "LEFT" else None,
                       body=data.get("body") or "", diff_hunk=data.get("diff_hunk") or "",
                       in_reply_to=int(reply_to) if reply_to else None,
                       created_at=iso(data.get("created_at")), url=data.get("html_url") or "")


class GitHubPulls:
    """Pull requests, CI state, reviews and line comments, on ``GitHubForge``'s plumbing."""

    if TYPE_CHECKING:
        def _call(self, what: str, fn: Callable[[], T]) -> T: ...
        def _repo(self, repo: str) -> Repository: ...
        def _get(self, repo: str, path: str, params: dict[str, Any]) -> Any: ...

    @staticmethod
    def _to_pull(raw: GhPull) -> PullRequest:
        # A lazy object (get_pull) is fetched by raw_data; a listed one is whole already.
        return to_pull(raw._rawData if "head" in raw._rawData else raw.raw_data)

    def _find_pull(self, repo: str, head: str, base: str) -> PullRequest | None:
        owner = repo.split("/", 1)[0]
        for raw in self._repo(repo).get_pulls(state="open", head=f"{owner}:{head}", base=base):
            return self._to_pull(raw)
        return None

    def find_pull(self, repo: str, head: str, base: str) -> PullRequest | None:
        """The open PR from ``head`` into ``base`` (GitHub filters by ``owner:branch``)."""
        return self._call(f"find pull {head} -> {base} in {repo}",
                          lambda: self._find_pull(repo, head, base))

    def find_or_create_pull(self, repo: str, head: str, base: str, title: str, body: str,
                            draft: bool = True) -> PullRequest:
        """Idempotent: an existing open PR for the branch is returned as it is (also the one
        an attempt cut short by a 502 had made)."""
        def find_or_create() -> PullRequest:
            found = self._find_pull(repo, head, base)
            if found is not None:
                return found
            stop_if_cancelled()
            try:
                return self._to_pull(self._repo(repo).create_pull(
                    base=base, head=head, title=title, body=body, draft=draft))
            except GithubException as exc:
                again = self._find_pull(repo, head, base) if exc.status == 422 else None
                if again is None:  # 422 and still none: a real refusal
                    raise
                return again  # created by a racing worker
        return self._call(f"create pull {head} -> {base} in {repo}", find_or_create)

    def get_pull(self, repo: str, number: int) -> PullRequest:
        """A pull request by number (a conditional read: an unchanged PR is a free 304)."""
        return self._call(f"get pull {repo}#{number}",
                          lambda: to_pull(self._get(repo, f"/pulls/{number}", {})))

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
            stop_if_cancelled()
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
        """Commit statuses (latest per context) and check runs of exactly ``sha``, merged;
        both conditional reads, so a waiting run's polls of an unchanged CI cost nothing."""
        def fetch() -> CIState:
            combined = self._get(repo, f"/commits/{sha}/status", {"per_page": 100})
            statuses = (combined or {}).get("statuses")
            checks = self._get(repo, f"/commits/{sha}/check-runs", {"per_page": 100})
            runs = (checks or {}).get("check_runs")
            if statuses is None or runs is None:  # more than a page: PyGithub pages through
                commit = self._repo(repo).get_commit(sha)
                if statuses is None:
                    statuses = [x._rawData for x in commit.get_combined_status().statuses]
                if runs is None:
                    runs = [x._rawData for x in commit.get_check_runs()]
            contexts: list[CIContext] = []
            for status in statuses:
                state = status.get("state")
                named = state if state in ("pending", "success", "failure", "error") else "error"
                contexts.append(CIContext(status.get("context") or "",
                                          named,  # type: ignore[arg-type]
                                          status.get("description") or "",
                                          status.get("target_url") or ""))
            for run in runs:
                conclusion = run.get("conclusion")
                if run.get("status") != "completed":
                    check: CIStateName = "pending"
                elif conclusion in _CHECK_OK:
                    check = "success"
                elif conclusion in _CHECK_ERROR:
                    check = "error"
                else:
                    check = "failure"
                summary = (run.get("output") or {}).get("summary") or ""
                contexts.append(CIContext(run.get("name") or "", check,
                                          summary or (conclusion or ""),
                                          run.get("details_url") or run.get("html_url") or "",
                                          "check"))
            return CIState(sha=sha, contexts=tuple(contexts))
        return self._call(f"CI state of {repo}@{sha[:12]}", fetch)

    def set_status(self, repo: str, sha: str, context: str, state: CIStateName,
                   description: str = "", target_url: str | None = None) -> None:
        """Post a commit status; GitHub truncates descriptions at 140 characters."""
        tries = [0]

        def post() -> None:
            commit = self._repo(repo).get_commit(sha)
            tries[0] += 1
            if tries[0] > 1:  # the last attempt may have posted it: look before posting again
                latest = next((x for x in commit.get_combined_status().statuses
                               if x.context == context), None)
                if (latest is not None and latest.state == state
                        and (latest.description or "") == description[:140]):
                    return
            stop_if_cancelled()
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
        tries = [0]

        def post() -> int:
            gh_repo = self._repo(repo)
            pr = gh_repo.get_pull(number)
            tries[0] += 1
            if tries[0] > 1:  # the last attempt may have posted it: look before posting again
                # The same body on the same commit: a reviewer's words are never the bot's.
                for old in pr.get_reviews():
                    if old.body == body and (commit_sha is None or old.commit_id == commit_sha):
                        return int(old.id)
            lines: list[Any] = [{"path": c.path, "line": c.line, "side": "RIGHT", "body": c.body}
                                for c in comments]
            stop_if_cancelled()
            if commit_sha:
                review = pr.create_review(commit=gh_repo.get_commit(commit_sha), body=body,
                                          event="COMMENT", comments=lines)
            else:
                review = pr.create_review(body=body, event="COMMENT", comments=lines)
            return int(review.id)
        return self._call(f"post review on {repo}#{number}", post)

    # ------------------------------------------------------------ reviews

    def list_reviews(self, repo: str, number: int) -> list[Review]:
        """Every review of the PR, by anyone, oldest first (a conditional read)."""
        def fetch() -> list[Review]:
            data = self._get(repo, f"/pulls/{number}/reviews", {"per_page": 100})
            if data is None:  # more than a page: PyGithub pages through
                data = [x._rawData for x in self._repo(repo).get_pull(number).get_reviews()]
            return [to_review(x) for x in data]
        return self._call(f"list reviews of {repo}#{number}", fetch)

    def _line_comments(self, repo: str, number: int) -> list[LineComment]:
        data = self._get(repo, f"/pulls/{number}/comments", {"per_page": 100})
        if data is None:
            data = [x._rawData for x in self._repo(repo).get_pull(number).get_review_comments()]
        found = [to_line_comment(x) for x in data]
        return sorted(found, key=lambda c: (c.created_at or iso(None), c.id))

    def list_line_comments(self, repo: str, number: int) -> list[LineComment]:
        """Every line comment of the PR, replies included, oldest first."""
        return self._call(f"list line comments of {repo}#{number}",
                          lambda: self._line_comments(repo, number))

    def reply_to_line_comment(self, repo: str, number: int, comment: LineComment,
                              body: str) -> LineComment:
        """Reply in ``comment``'s thread (to its first comment, as GitHub threads them)."""
        thread = comment.in_reply_to or comment.id

        def reply() -> LineComment:
            if retrying():  # the last attempt may have posted it: look before posting again
                for old in self._line_comments(repo, number):
                    if old.in_reply_to == thread and old.body == body:
                        return old
            pr = self._repo(repo).get_pull(number)
            stop_if_cancelled()
            return to_line_comment(pr.create_review_comment_reply(thread, body)._rawData)
        return self._call(f"reply to line comment {thread} on {repo}#{number}", reply)
