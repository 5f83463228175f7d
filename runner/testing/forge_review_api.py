"""The review endpoints of the forge emulator, both flavours (``install_review_routes``).

GitHub (REST v3): reviews (list, create: 200, get, dismiss), review comments of a pull
request (list, ``sort``/``direction``/``since``), replies (``POST
.../comments/{id}/replies``: 201 with ``Location``, ``in_reply_to_id`` the thread's first
comment) and ``PUT .../merge``. Forgejo (API v1): reviews (list, create: 200, get, dismiss),
a review's code comments (list, and add one: ``new_position``/``old_position``, Forgejo's only
way to answer a conversation) and ``POST .../merge`` (``Do``). Closing is ``PATCH``
``state=closed`` on both (forge_api.py). The routes go before the flavour's own, so a
branch-name catch-all never swallows them.
"""

from __future__ import annotations

from typing import Any

from runner.testing.forge_api import BaseApi, ForgejoApi, GitHubApi, Reply, Request
from runner.testing.forge_review_json import forgejo_line_comment, github_line_comment
from runner.testing.forge_reviews import NewLineComment, Reviews
from runner.testing.forge_state import EmulatorError, Issue, Repo, ReviewRecord, User

# The event a create asks for -> the record's (GitHub's REST) state; anything else: PENDING.
_GITHUB_EVENTS = {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED",
                  "COMMENT": "COMMENTED"}
_FORGEJO_EVENTS = {"APPROVED": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED",
                   "COMMENT": "COMMENTED"}


def _body(req: Request) -> dict[str, Any]:
    if not isinstance(req.body, dict):
        raise EmulatorError(400, "Problems parsing JSON")
    return req.body


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise EmulatorError(422, f"Validation Failed: {what} is not a string")
    return value


def _line(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EmulatorError(422, f"Validation Failed: {what} is not a line number")
    return value


class _Routes:
    """What both flavours' review endpoints share."""

    def __init__(self, api: GitHubApi | ForgejoApi, reviews: Reviews) -> None:
        self.api = api
        self.reviews = reviews
        self.state = api.state

    def _pull(self, req: Request, p: dict[str, str], level: str = "read"
              ) -> tuple[Repo, Issue, User]:
        repo = self.api.repo(p, req.user, level)
        user = self.state.need(repo, req.user, level)
        return repo, self.state.pull(repo, int(p["number"])), user

    @staticmethod
    def _visible(issue: Issue, user: User | None) -> list[ReviewRecord]:
        """Pending reviews show only to their author, as on both forges."""
        assert issue.pull is not None
        return [v for v in issue.pull.reviews if v.state != "PENDING"
                or (user is not None and v.user.login == user.login)]

    def dismiss(self, req: Request, p: dict[str, str]) -> Reply:
        """GitHub's PUT and Forgejo's POST ``reviews/{id}/dismissals`` ``{message}``."""
        repo, issue, user = self._pull(req, p)
        review = self._review(issue, p["id"], req.user)
        message = _text(_body(req).get("message"), "message")
        self.reviews.dismiss(repo, issue, user, review, message)
        return Reply(200, self.api.r.review(repo, issue, review))

    def _review(self, issue: Issue, ident: str, user: User | None) -> ReviewRecord:
        found = next((v for v in self._visible(issue, user) if str(v.id) == ident), None)
        if found is None:
            raise EmulatorError(404, "Not Found")
        return found


class GitHubReviewRoutes(_Routes):
    """GitHub's review endpoints."""

    api: GitHubApi

    def routes(self) -> list[tuple[str, str, Any]]:
        R = "/repos/{owner}/{repo}/pulls/{number}"
        return [("GET", R + "/reviews", self.list_reviews),
                ("POST", R + "/reviews", self.create_review),
                ("GET", R + "/reviews/{id}", self.get_review),
                ("PUT", R + "/reviews/{id}/dismissals", self.dismiss),
                ("GET", R + "/comments", self.list_comments),
                ("POST", R + "/comments/{id}/replies", self.reply),
                ("PUT", R + "/merge", self.merge)]

    def list_reviews(self, req: Request, p: dict[str, str]) -> Reply:
        repo, issue, _ = self._pull(req, p)
        return self.api.page(req, [self.api.r.review(repo, issue, v)
                                   for v in self._visible(issue, req.user)])

    def get_review(self, req: Request, p: dict[str, str]) -> Reply:
        repo, issue, _ = self._pull(req, p)
        return Reply(200, self.api.r.review(repo, issue, self._review(issue, p["id"], req.user)))

    def create_review(self, req: Request, p: dict[str, str]) -> Reply:
        repo, issue, user = self._pull(req, p)
        body = _body(req)
        # Without ``event`` the 2018 recording got COMMENTED (the REST text says PENDING).
        state = _GITHUB_EVENTS.get(str(body.get("event") or "COMMENT"), "PENDING")
        asked = []
        for item in body.get("comments") or []:
            if not isinstance(item, dict) or item.get("line") is None:
                raise EmulatorError(422, "Validation Failed: a review comment needs a path "
                                         "and a line")
            side = str(item.get("side") or "RIGHT").upper()
            asked.append(NewLineComment(_text(item.get("path"), "path"),
                                        _line(item["line"], "line"),
                                        _text(item.get("body"), "body"), side))
        review = self.reviews.submit(repo, issue, user, state, _text(body.get("body"), "body"),
                                     asked, _text(body.get("commit_id"), "commit_id"))
        return Reply(200, self.api.r.review(repo, issue, review))

    def list_comments(self, req: Request, p: dict[str, str]) -> Reply:
        repo, issue, _ = self._pull(req, p)
        assert issue.pull is not None
        since = req.query.get("since")
        items = [c for c in issue.pull.line_comments
                 if not since or (c.updated_at.strftime("%Y-%m-%dT%H:%M:%SZ") >= since)]
        if req.query.get("sort") == "updated":
            items.sort(key=lambda c: (c.updated_at, c.id))
        if req.query.get("sort") and req.query.get("direction") == "desc":
            items.reverse()
        return self.api.page(req, [github_line_comment(self.api.r, repo, issue, c)
                                   for c in items])

    def reply(self, req: Request, p: dict[str, str]) -> Reply:
        repo, issue, user = self._pull(req, p)
        answered = self.reviews.find_comment(issue, int(p["id"]))
        text = _text(_body(req).get("body"), "body")
        if not text.strip():
            raise EmulatorError(422, "Validation Failed: body can not be blank")
        made = self.reviews.reply(repo, issue, user, answered, text, by_hand=False)
        shown = github_line_comment(self.api.r, repo, issue, made)
        return Reply(201, shown, {"Location": shown["url"]})

    def merge(self, req: Request, p: dict[str, str]) -> Reply:
        repo, issue, user = self._pull(req, p, "write")
        body = req.body if isinstance(req.body, dict) else {}
        title = _text(body.get("commit_title"), "commit_title")
        message = "\n\n".join(x for x in (title, _text(body.get("commit_message"),
                                                          "commit_message")) if x)
        sha = self.reviews.merge(repo, issue, user, message, body.get("sha") or None)
        return Reply(200, {"sha": sha, "merged": True,
                           "message": "Pull Request successfully merged"})


class ForgejoReviewRoutes(_Routes):
    """Forgejo's review endpoints."""

    api: ForgejoApi

    def routes(self) -> list[tuple[str, str, Any]]:
        R = "/repos/{owner}/{repo}/pulls/{number}"
        return [("GET", R + "/reviews", self.list_reviews),
                ("POST", R + "/reviews", self.create_review),
                ("GET", R + "/reviews/{id}", self.get_review),
                ("POST", R + "/reviews/{id}/dismissals", self.dismiss),
                ("GET", R + "/reviews/{id}/comments", self.review_comments),
                ("POST", R + "/reviews/{id}/comments", self.add_comment),
                ("POST", R + "/merge", self.merge)]

    def list_reviews(self, req: Request, p: dict[str, str]) -> Reply:
        repo, issue, _ = self._pull(req, p)
        return self.api.page(req, [self.api.r.review(repo, issue, v)
                                   for v in self._visible(issue, req.user)])

    def get_review(self, req: Request, p: dict[str, str]) -> Reply:
        repo, issue, _ = self._pull(req, p)
        return Reply(200, self.api.r.review(repo, issue, self._review(issue, p["id"], req.user)))

    @staticmethod
    def _where(item: dict[str, Any]) -> tuple[int, str]:
        new = _line(item.get("new_position") or 0, "new_position")
        old = _line(item.get("old_position") or 0, "old_position")
        if not new and not old:
            raise EmulatorError(422, "a code comment needs new_position or old_position")
        return (new, "RIGHT") if new else (old, "LEFT")

    def create_review(self, req: Request, p: dict[str, str]) -> Reply:
        repo, issue, user = self._pull(req, p)
        body = _body(req)
        state = _FORGEJO_EVENTS.get(str(body.get("event") or ""), "PENDING")
        asked = []
        for item in body.get("comments") or []:
            if not isinstance(item, dict):
                raise EmulatorError(422, "a review comment is an object")
            line, side = self._where(item)
            asked.append(NewLineComment(_text(item.get("path"), "path"), line,
                                        _text(item.get("body"), "body"), side))
        review = self.reviews.submit(repo, issue, user, state, _text(body.get("body"), "body"),
                                     asked, _text(body.get("commit_id"), "commit_id"))
        return Reply(200, self.api.r.review(repo, issue, review))

    def review_comments(self, req: Request, p: dict[str, str]) -> Reply:
        repo, issue, _ = self._pull(req, p)
        review = self._review(issue, p["id"], req.user)
        assert issue.pull is not None
        return Reply(200, [forgejo_line_comment(self.api.r, repo, issue, c)
                           for c in issue.pull.line_comments if c.review_id == review.id])

    def add_comment(self, req: Request, p: dict[str, str]) -> Reply:
        repo, issue, user = self._pull(req, p)
        review = self._review(issue, p["id"], req.user)
        body = _body(req)
        line, side = self._where(body)
        made = self.reviews.code_comment(repo, issue, user, review,
                                         _text(body.get("path"), "path"), line, side,
                                         _text(body.get("body"), "body"))
        return Reply(200, forgejo_line_comment(self.api.r, repo, issue, made))

    def merge(self, req: Request, p: dict[str, str]) -> Reply:
        repo, issue, user = self._pull(req, p, "write")
        body = _body(req)
        if body.get("Do") not in ("merge", "rebase", "rebase-merge", "squash",
                                  "fast-forward-only"):
            raise EmulatorError(422, "Do: must be one of merge, rebase, rebase-merge, squash, "
                                     "fast-forward-only")
        title = _text(body.get("MergeTitleField"), "MergeTitleField")
        message = "\n\n".join(x for x in (title, _text(body.get("MergeMessageField"),
                                                          "MergeMessageField")) if x)
        self.reviews.merge(repo, issue, user, message, body.get("head_commit_id") or None)
        return Reply(200)


def install_review_routes(api: BaseApi, reviews: Reviews) -> None:
    """Put the review endpoints of ``api``'s flavour in front of its routes."""
    routes: GitHubReviewRoutes | ForgejoReviewRoutes
    if isinstance(api, GitHubApi):
        routes = GitHubReviewRoutes(api, reviews)
    else:
        assert isinstance(api, ForgejoApi)
        routes = ForgejoReviewRoutes(api, reviews)
    for method, pattern, handler in reversed(routes.routes()):
        api.prepend(method, pattern, handler)
