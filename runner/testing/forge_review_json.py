"""Review JSON of the forge emulator, both flavours: line comments as each API shows them and
the review webhooks each forge sends (see ``forge_reviews.py`` for which fires when).

GitHub's shapes follow ``github/rest-subset.json`` (``pull-request-review-comment``) and the
``pull_request_review`` / ``pull_request_review_comment`` payloads of ``github/webhook-examples``;
Forgejo's follow ``PullReviewComment`` in ``forgejo/swagger.v1.json`` and the review delivery
the contracts README describes (``review: {type, content}``, no review id).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.testing.forge_state import Happening, Issue, LineCommentRecord, Repo, iso, node_id

if TYPE_CHECKING:
    from runner.testing.forge_forgejo import ForgejoRenderer
    from runner.testing.forge_github import GitHubRenderer

# A submitted review's state -> Forgejo's fine event type (X-Forgejo-Event-Type) and coarse
# event name (X-Forgejo-Event, also sent as X-GitHub-Event).
FORGEJO_REVIEW_EVENTS = {
    "APPROVED": ("pull_request_review_approved", "pull_request_approved"),
    "CHANGES_REQUESTED": ("pull_request_review_rejected", "pull_request_rejected"),
    "COMMENTED": ("pull_request_review_comment", "pull_request_comment"),
}


def github_line_comment(render: GitHubRenderer, r: Repo, i: Issue,
                        c: LineCommentRecord) -> dict[str, Any]:
    """A review comment as GitHub's REST API (and its webhook) shows it."""
    url = f"{render.api}/repos/{r.full_name}/pulls/comments/{c.id}"
    html = f"{render.root}/{r.full_name}/pull/{i.number}#discussion_r{c.id}"
    pull_url = f"{render.api}/repos/{r.full_name}/pulls/{i.number}"
    out: dict[str, Any] = {
        "url": url, "pull_request_review_id": c.review_id, "id": c.id,
        "node_id": node_id("PullRequestReviewComment", c.id), "diff_hunk": c.diff_hunk,
        "path": c.path, "position": c.position, "original_position": c.position,
        "commit_id": c.commit_id, "original_commit_id": c.commit_id,
        "user": render.user(c.user), "body": c.body, "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at), "html_url": html, "pull_request_url": pull_url,
        "author_association": render.association(r, c.user),
        "_links": {"self": {"href": url}, "html": {"href": html},
                   "pull_request": {"href": pull_url}},
        "start_line": None, "original_start_line": None, "start_side": None,
        "line": c.line, "original_line": c.line, "side": c.side, "subject_type": "line",
        "reactions": render.rollup(url, []),
    }
    if c.in_reply_to is not None:
        out["in_reply_to_id"] = c.in_reply_to
    return out


def github_review_webhook(render: GitHubRenderer,
                          h: Happening) -> tuple[str, dict[str, Any]] | None:
    """(X-GitHub-Event, payload) of a review or line comment happening."""
    if h.issue is None or h.review is None:
        return None
    base: dict[str, Any] = {"repository": render.repo(h.repo), "sender": render.user(h.sender),
                            "pull_request": render.pull(h.repo, h.issue)}
    if h.kind == "pull_request_review_comment" and h.line_comment is not None:
        return "pull_request_review_comment", {
            "action": h.action,
            "comment": github_line_comment(render, h.repo, h.issue, h.line_comment), **base}
    if h.kind == "pull_request_review":
        review = render.review(h.repo, h.issue, h.review)
        review["state"] = str(review["state"]).lower()  # webhooks say it in lower case
        review["body"] = review["body"] or None
        return "pull_request_review", {"action": h.action, "review": review, **base}
    return None


def forgejo_line_comment(render: ForgejoRenderer, r: Repo, i: Issue,
                         c: LineCommentRecord) -> dict[str, Any]:
    """A code comment as Forgejo's API shows it: ``position`` is the new file's line,
    ``original_position`` the old file's (the other is 0); no reply link."""
    html = f"{render.root}/{r.full_name}/pulls/{i.number}/files#issuecomment-{c.id}"
    new_side = c.side == "RIGHT"
    return {
        "body": c.body, "commit_id": c.commit_id, "created_at": iso(c.created_at),
        "diff_hunk": forgejo_patch(c), "html_url": html, "id": c.id,
        "original_commit_id": c.commit_id,
        "original_position": 0 if new_side else c.line, "path": c.path,
        "position": c.line if new_side else 0, "pull_request_review_id": c.review_id,
        "pull_request_url": f"{render.root}/{r.full_name}/pulls/{i.number}",
        "resolver": None, "updated_at": iso(c.updated_at), "user": render.user(c.user),
    }


def forgejo_patch(c: LineCommentRecord) -> str:
    """Forgejo keeps a code comment's patch with the file's diff header before the hunk."""
    if not c.diff_hunk:
        return ""
    return (f"diff --git a/{c.path} b/{c.path}\n--- a/{c.path}\n+++ b/{c.path}\n"
            f"{c.diff_hunk}")


def forgejo_review_webhook(render: ForgejoRenderer,
                           h: Happening) -> tuple[str, str, dict[str, Any]] | None:
    """(X-Forgejo-Event, X-Forgejo-Event-Type, payload) of a submitted review; None for a
    line comment (Forgejo announces the review, not each comment)."""
    if h.kind != "pull_request_review" or h.issue is None or h.review is None:
        return None
    names = FORGEJO_REVIEW_EVENTS.get(h.review.state)
    if names is None:
        return None
    fine, event = names
    return event, fine, {
        "action": "reviewed", "number": h.issue.number,
        "pull_request": render.pull(h.repo, h.issue),
        "requested_reviewer": render.user(h.review.user),
        "repository": render.repo(h.repo), "sender": render.user(h.sender), "commit_id": "",
        "review": {"type": fine, "content": h.review.body}}
