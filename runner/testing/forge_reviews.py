"""Pull request reviews in the forge emulator: reviews by any user, line comments anchored in
the pull request's real diff, replies, closing and merging, and the webhooks they fire.

``Reviews`` holds the mutations both API flavours and the test helpers share (under the
state's lock, each reporting ``Happening`` values, as ``ForgeState`` does). What each forge
sends differs, and the renderers decide it from the happenings:

- GitHub: each line comment of a submitted review fires ``pull_request_review_comment``
  (created), then the review fires ``pull_request_review`` (submitted). A reply is its own
  COMMENTED review with an empty body: both events again.
- Forgejo: a submitted review fires one event named by its type; a code comment added over
  the API (``POST reviews/{id}/comments``) fires nothing, while a reply made in the web
  interface fires ``issue_comment`` with the type ``pull_request_comment``.

``ReviewWorld`` is what tests call on the emulator (``forge.review(...)`` and the rest): each
acts as the named user with the permission the forge would ask of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from runner.testing import forge_diff, forge_git
from runner.testing.forge_state import (
    Comment,
    EmulatorError,
    ForgeState,
    Happening,
    Issue,
    LineCommentRecord,
    Repo,
    ReviewRecord,
    User,
    now,
)

if TYPE_CHECKING:
    from runner.testing.forge_state import Pull

Flavour = Literal["github", "forgejo"]
# What tests may say for a review's state -> GitHub's REST state, the record's.
_STATES = {"approve": "APPROVED", "approved": "APPROVED",
           "request_changes": "CHANGES_REQUESTED", "changes_requested": "CHANGES_REQUESTED",
           "reject": "CHANGES_REQUESTED", "rejected": "CHANGES_REQUESTED",
           "comment": "COMMENTED", "commented": "COMMENTED", "pending": "PENDING"}


@dataclass(frozen=True)
class NewLineComment:
    """A line comment asked for in a review: ``side`` RIGHT is the new file, LEFT the old."""

    path: str
    line: int
    body: str
    side: str = "RIGHT"


def review_state(name: str) -> str:
    """``approve``, ``changes_requested``, ``comment``... -> APPROVED, CHANGES_REQUESTED..."""
    found = _STATES.get(name.strip().lower())
    if found is None:
        raise ValueError(f"a review is approve, request_changes or comment, not {name!r}")
    return found


def conversation_root(pull: Pull, comment: LineCommentRecord) -> LineCommentRecord:
    """The first comment of ``comment``'s thread."""
    if comment.in_reply_to is None:
        return comment
    return next((c for c in pull.line_comments if c.id == comment.in_reply_to), comment)


class Reviews:
    """The review mutations, for one emulator's flavour."""

    def __init__(self, state: ForgeState, flavour: Flavour) -> None:
        self.state = state
        self.flavour = flavour

    @staticmethod
    def pull_of(issue: Issue) -> Pull:
        if issue.pull is None:
            raise EmulatorError(404, "Not Found")
        return issue.pull

    def _anchor(self, repo: Repo, pull: Pull, path: str, line: int,
                side: str) -> forge_diff.Anchor:
        base = forge_diff.base_tip(repo, pull.base, pull.base_sha)
        lines = forge_diff.file_diff(repo.git_dir, base, pull.head_sha, path)
        found = forge_diff.anchor(lines, line, side)
        if found is not None:
            return found
        if self.flavour == "github":
            raise EmulatorError(422, "Pull request review thread line must be part of the "
                                     f"diff ({path}:{line} is not)")
        return forge_diff.Anchor("", 0)  # Forgejo comments on any line of a file

    def submit(self, repo: Repo, issue: Issue, user: User, state: str, body: str,
               comments: Sequence[NewLineComment] = (), commit_id: str = "") -> ReviewRecord:
        """A review in GitHub's REST ``state`` with its line comments; PENDING sends nothing.

        Refused (422) as the forges refuse: approving or rejecting one's own pull request,
        and on Forgejo a rejection without a body or a comment review with neither."""
        with self.state.lock:
            pull = self.pull_of(issue)
            if state in ("APPROVED", "CHANGES_REQUESTED") and issue.user.login == user.login:
                verb = "approve" if state == "APPROVED" else "request changes on"
                raise EmulatorError(422, f"Can not {verb} your own pull request")
            if self.flavour == "forgejo" and state == "CHANGES_REQUESTED" and not body.strip():
                raise EmulatorError(422, "review event REQUEST_CHANGES requires a body")
            if (self.flavour == "forgejo" and state == "COMMENTED" and not body.strip()
                    and not comments):
                raise EmulatorError(422, "review event COMMENT requires a body or a comment")
            commit = commit_id or pull.head_sha
            anchors = [self._anchor(repo, pull, c.path, c.line, c.side) for c in comments]
            review = ReviewRecord(self.state.next_id(), user, body, state, commit,
                                  [{"path": c.path, "line": c.line, "body": c.body}
                                   for c in comments])
            pull.reviews.append(review)
            made = [self._add(pull, review, user, c.path, c.line, c.side, c.body, where,
                              commit) for c, where in zip(comments, anchors, strict=True)]
            issue.updated_at = now()
            if state != "PENDING":
                for comment in made:
                    self.state.emit(Happening("pull_request_review_comment", "created", repo,
                                              user, issue=issue, review=review,
                                              line_comment=comment))
                self.state.emit(Happening("pull_request_review", "submitted", repo, user,
                                          issue=issue, review=review))
            return review

    def _add(self, pull: Pull, review: ReviewRecord, user: User, path: str, line: int,
             side: str, body: str, where: forge_diff.Anchor, commit: str) -> LineCommentRecord:
        # A conversation is every comment on one line of one file (Forgejo's rule; on GitHub
        # only replies join one, and they name the line of the comment they answer).
        first = next((c for c in pull.line_comments if c.in_reply_to is None
                      and (c.path, c.line, c.side) == (path, line, side)), None)
        joins = first is not None and self.flavour == "forgejo"
        comment = LineCommentRecord(self.state.next_id(), review.id, user, path, line, side,
                                    body, where.diff_hunk, where.position, commit,
                                    in_reply_to=first.id if joins and first else None)
        pull.line_comments.append(comment)
        return comment

    def reply(self, repo: Repo, issue: Issue, user: User, answered: LineCommentRecord,
              body: str, *, by_hand: bool) -> LineCommentRecord:
        """A reply in ``answered``'s thread. GitHub: a COMMENTED review of its own, both
        events. Forgejo: a code comment in the answered comment's review, at its line; the
        web interface (``by_hand``) announces it as a pull request comment, the API does not."""
        with self.state.lock:
            pull = self.pull_of(issue)
            root = conversation_root(pull, answered)
            where = forge_diff.Anchor(root.diff_hunk, root.position)
            if self.flavour == "github":
                review = ReviewRecord(self.state.next_id(), user, "", "COMMENTED",
                                      pull.head_sha, [])
                pull.reviews.append(review)
            else:
                review = next(v for v in pull.reviews if v.id == answered.review_id)
            comment = LineCommentRecord(self.state.next_id(), review.id, user, root.path,
                                        root.line, root.side, body, where.diff_hunk,
                                        where.position, pull.head_sha, in_reply_to=root.id)
            pull.line_comments.append(comment)
            issue.updated_at = now()
            if self.flavour == "github":
                self.state.emit(Happening("pull_request_review_comment", "created", repo, user,
                                          issue=issue, review=review, line_comment=comment))
                self.state.emit(Happening("pull_request_review", "submitted", repo, user,
                                          issue=issue, review=review))
            elif by_hand:
                shown = Comment(comment.id, issue.number, user, body, comment.created_at,
                                comment.updated_at)
                self.state.emit(Happening("issue_comment", "created", repo, user, issue=issue,
                                          comment=shown))
            return comment

    def code_comment(self, repo: Repo, issue: Issue, user: User, review: ReviewRecord,
                     path: str, line: int, side: str, body: str) -> LineCommentRecord:
        """Forgejo's ``POST reviews/{id}/comments``: a code comment by ``user`` added to
        ``review`` (anyone's: how an answer joins a conversation); on a line that has a
        conversation, it joins it. No webhook."""
        with self.state.lock:
            pull = self.pull_of(issue)
            first = next((c for c in pull.line_comments if c.in_reply_to is None
                          and (c.path, c.line, c.side) == (path, line, side)), None)
            where = (forge_diff.Anchor(first.diff_hunk, first.position) if first is not None
                     else self._anchor(repo, pull, path, line, side))
            comment = LineCommentRecord(self.state.next_id(), review.id, user, path, line,
                                        side, body, where.diff_hunk, where.position,
                                        pull.head_sha,
                                        in_reply_to=first.id if first is not None else None)
            pull.line_comments.append(comment)
            issue.updated_at = now()
            return comment

    def dismiss(self, repo: Repo, issue: Issue, user: User, review: ReviewRecord,
                message: str) -> ReviewRecord:
        """Dismiss an approval or a change request (write on GitHub, admin on Forgejo; any
        other review is refused). GitHub fires ``pull_request_review`` dismissed; Forgejo
        sends nothing."""
        with self.state.lock:
            level = "admin" if self.flavour == "forgejo" else "write"
            self.state.need(repo, user, level)
            if review.state not in ("APPROVED", "CHANGES_REQUESTED") or review.dismissed:
                status = 422 if self.flavour == "github" else 403
                raise EmulatorError(status, "Can not dismiss a "
                                            f"{review.state.lower()} pull request review")
            review.dismissed = True
            issue.updated_at = now()
            if self.flavour == "github":
                self.state.emit(Happening("pull_request_review", "dismissed", repo, user,
                                          issue=issue, review=review))
            return review

    def merge(self, repo: Repo, issue: Issue, user: User, message: str = "",
              head_sha: str | None = None) -> str:
        """Merge with a merge commit, mark the pull request merged and closed, and fire
        ``push`` (the base moved) and ``pull_request`` closed (merged). 405 when closed,
        merged or conflicting; 409 when ``head_sha`` is not the head any more."""
        with self.state.lock:
            pull = self.pull_of(issue)
            if pull.merged:
                raise EmulatorError(405, "Pull Request is already merged")
            if issue.state != "open":
                raise EmulatorError(405, "Pull Request is closed")
            if head_sha and head_sha != pull.head_sha:
                raise EmulatorError(409, "Head branch was modified. Review and try the merge "
                                         "again.")
            text = message or (f"Merge pull request #{issue.number} from "
                               f"{repo.owner.login}/{pull.head}\n\n{issue.title}")
            before = forge_git.refs(repo.git_dir).get(pull.base, forge_git.ZERO_SHA)
            sha = forge_diff.merge(repo, issue, user, text)
            self.state.branch_moved(repo, pull.base, before, sha, user)  # fires ``push``
            pull.merged, pull.merged_at, pull.merged_by, pull.merge_sha = True, now(), user, sha
            self.state.edit_issue(repo, issue, user, state="closed")
            return sha

    def find_comment(self, issue: Issue, comment_id: int) -> LineCommentRecord:
        """A line comment of the pull request by id (404 when it has none such)."""
        pull = self.pull_of(issue)
        found = next((c for c in pull.line_comments if c.id == comment_id), None)
        if found is None:
            raise EmulatorError(404, "Not Found")
        return found


class ReviewWorld:
    """What tests do on a pull request, as people: mixed into ``ForgeEmulator``."""

    if TYPE_CHECKING:
        state: ForgeState
        reviews: Reviews

        def repo(self, full_name: str) -> Repo: ...

        def push_branch(self, full_name: str, branch: str, files: dict[str, str], *,
                        as_user: str, message: str = "Change files",
                        start: str | None = None) -> str: ...

    def _pull_and_user(self, repo: str, number: int, user: str,
                       level: str = "read") -> tuple[Repo, Issue, User]:
        found = self.repo(repo)
        person = self.state.need(found, self.state.user(user), level)
        return found, self.state.pull(found, number), person

    def review(self, repo: str, number: int, user: str, state: str, body: str = "",
               comments: Sequence[tuple[str, int, str]] = ()) -> int:
        """Submit a review as ``user``: ``state`` approve, request_changes (or
        changes_requested) or comment; ``comments`` (path, new-file line, text) on lines of
        the diff. Returns the review's id."""
        found, issue, person = self._pull_and_user(repo, number, user)
        asked = [NewLineComment(path, line, text) for path, line, text in comments]
        return self.reviews.submit(found, issue, person, review_state(state), body, asked).id

    def comment_on_pull(self, repo: str, number: int, user: str, body: str) -> int:
        """A comment in the pull request's conversation as ``user``; returns its id."""
        found, issue, person = self._pull_and_user(repo, number, user)
        return self.state.add_comment(found, issue, person, body).id

    def reply(self, repo: str, number: int, comment_id: int, user: str, body: str) -> int:
        """Reply to line comment ``comment_id`` as ``user`` would in the web interface;
        returns the reply's id."""
        found, issue, person = self._pull_and_user(repo, number, user)
        answered = self.reviews.find_comment(issue, comment_id)
        return self.reviews.reply(found, issue, person, answered, body, by_hand=True).id

    def close_pull(self, repo: str, number: int, user: str) -> None:
        """Close the pull request without merging it, as ``user`` (who needs write)."""
        found, issue, person = self._pull_and_user(repo, number, user, "write")
        self.state.edit_issue(found, issue, person, state="closed")

    def dismiss_review(self, repo: str, number: int, review_id: int, user: str,
                       message: str = "Dismissed") -> None:
        """Dismiss review ``review_id`` (an approval or a change request) as ``user``."""
        found, issue, person = self._pull_and_user(repo, number, user)
        review = next((v for v in self.reviews.pull_of(issue).reviews if v.id == review_id),
                      None)
        if review is None:
            raise EmulatorError(404, f"no review {review_id} on {repo}#{number}")
        self.reviews.dismiss(found, issue, person, review, message)

    def merge_pull(self, repo: str, number: int, user: str) -> str:
        """Merge the pull request as ``user`` (who needs write) with a merge commit; returns
        its SHA. EmulatorError 405 when it conflicts with its base."""
        found, issue, person = self._pull_and_user(repo, number, user, "write")
        return self.reviews.merge(found, issue, person)

    def commit_to_base(self, repo: str, path: str, content: str, message: str) -> str:
        """Commit ``path`` with ``content`` on the default branch, pushed over git as the
        repository's owner (a ``push`` webhook follows, as for any push); returns its SHA."""
        found = self.repo(repo)
        return self.push_branch(repo, found.default_branch, {path: content},
                                as_user=found.owner.login, message=message)
