"""The REST endpoints of the forge emulator, for both flavours, as plain functions of a request.

``GitHubApi`` serves REST v3 paths under ``/api/v3`` (plus the one GraphQL mutation PyGithub
uses to mark a draft ready); ``ForgejoApi`` serves ``/api/v1``. Both work on the shared
``ForgeState`` and render with their flavour's renderer. The HTTP server is in ``forge.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlencode

from runner.testing import forge_git
from runner.testing.forge_forgejo import ForgejoRenderer, is_wip
from runner.testing.forge_github import GitHubRenderer
from runner.testing.forge_state import (
    PERMS,
    EmulatorError,
    ForgeState,
    Issue,
    Pull,
    Repo,
    User,
    iso,
    node_id,
)


@dataclass
class Request:
    method: str
    path: str  # relative to the API root, still percent-encoded
    query: dict[str, str]
    body: Any
    user: User | None
    url_base: str  # absolute URL of the API root, for Link headers
    app: Any = None  # the GitHub App a JWT authenticated (forge_apps.App)


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request, dict[str, str]], Reply]


def _route(pattern: str) -> re.Pattern[str]:
    regex = re.sub(r"\{(\w+)\+\}", r"(?P<\1>.+)", pattern)  # {name+}: may hold slashes
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex)
    return re.compile(f"^{regex}$")


def _since(query: dict[str, str]) -> datetime | None:
    raw = query.get("since")
    if not raw:
        return None
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))


def _body(req: Request) -> dict[str, Any]:
    if not isinstance(req.body, dict):
        raise EmulatorError(400, "Problems parsing JSON")
    return req.body


class BaseApi:
    """Routing, pagination and lookups shared by the two flavours."""

    per_page_key = "per_page"

    def __init__(self, state: ForgeState) -> None:
        self.state = state
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method, _route(pattern), handler))

    def prepend(self, method: str, pattern: str, handler: Handler) -> None:
        """A route tried before every other (the review routes, forge_review_api.py)."""
        self.routes.insert(0, (method, _route(pattern), handler))

    def handle(self, req: Request) -> Reply:
        """Dispatch one request; EmulatorError becomes the flavour's error document."""
        allowed = False
        for method, pattern, handler in self.routes:
            match = pattern.match(req.path)
            if match is None:
                continue
            allowed = True
            if method != req.method:
                continue
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            try:
                with self.state.lock:
                    return handler(req, params)
            except EmulatorError as exc:
                return Reply(exc.status, self.error(exc.status, exc.message))
        if allowed:
            return Reply(405, self.error(405, "Method Not Allowed"))
        return Reply(404, self.error(404, "Not Found"))

    def error(self, status: int, message: str) -> Any:
        raise NotImplementedError

    def page(self, req: Request, items: list[Any]) -> Reply:
        """One page of ``items`` with GitHub-style Link headers (both forges send them)."""
        per_page = max(1, min(int(req.query.get(self.per_page_key) or 30), 100))
        page = max(1, int(req.query.get("page") or 1))
        chunk = items[(page - 1) * per_page: page * per_page]
        last = max(1, -(-len(items) // per_page))
        links = []

        def link(p: int, rel: str) -> str:
            query = {**req.query, "page": str(p), self.per_page_key: str(per_page)}
            return f'<{req.url_base}{req.path}?{urlencode(query)}>; rel="{rel}"'

        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        headers = {"X-Total-Count": str(len(items))}
        if links:
            headers["Link"] = ", ".join(links)
        return Reply(200, chunk, headers)

    def repo(self, p: dict[str, str], user: User | None, level: str = "read") -> Repo:
        repo = self.state.repo(p["owner"], p["repo"])
        if level != "none":
            self.state.need(repo, user, level)
        return repo

    @staticmethod
    def resolve(repo: Repo, ref: str) -> str:
        """A branch name or SHA -> SHA (statuses are keyed by the exact commit)."""
        return forge_git.refs(repo.git_dir).get(ref, ref)

    def new_pull(self, repo: Repo, user: User, head: str, base: str, title: str, body: str,
                 draft: bool) -> Issue:
        branches = forge_git.refs(repo.git_dir)
        head_name = head.split(":", 1)[-1]
        if head_name not in branches or base not in branches:
            raise EmulatorError(422, f"Validation Failed: branch {head_name} or {base} "
                                     "does not exist")
        pull = Pull(head=head_name, base=base, head_sha=branches[head_name],
                    base_sha=branches[base], draft=draft)
        return self.state.create_issue(repo, user, title, body, pull=pull)

    @staticmethod
    def open_pull_for(repo: Repo, head: str, base: str) -> Issue | None:
        for issue in repo.pulls():
            assert issue.pull is not None
            if issue.state == "open" and issue.pull.head == head and issue.pull.base == base:
                return issue
        return None


class GitHubApi(BaseApi):
    """REST v3 as GitHub (Enterprise) serves it."""

    def __init__(self, state: ForgeState, render: GitHubRenderer) -> None:
        super().__init__(state)
        self.r = render
        R = "/repos/{owner}/{repo}"
        for method, pattern, handler in [
            ("GET", "/user", self.get_user),
            ("GET", R, self.get_repo),
            ("GET", R + "/issues", self.list_issues),
            ("POST", R + "/issues", self.create_issue),
            ("GET", R + "/issues/comments/{id}", self.get_comment),
            ("PATCH", R + "/issues/comments/{id}", self.edit_comment),
            ("POST", R + "/issues/comments/{id}/reactions", self.react_comment),
            ("GET", R + "/issues/{number}", self.get_issue),
            ("PATCH", R + "/issues/{number}", self.edit_issue),
            ("GET", R + "/issues/{number}/comments", self.list_comments),
            ("POST", R + "/issues/{number}/comments", self.create_comment),
            ("POST", R + "/issues/{number}/reactions", self.react_issue),
            ("GET", R + "/issues/{number}/events", self.list_events),
            ("GET", R + "/issues/{number}/labels", self.issue_labels),
            ("POST", R + "/issues/{number}/labels", self.add_labels),
            ("PUT", R + "/issues/{number}/labels", self.set_labels),
            ("DELETE", R + "/issues/{number}/labels/{name}", self.remove_label),
            ("GET", R + "/labels", self.list_labels),
            ("POST", R + "/labels", self.create_label),
            ("GET", R + "/pulls", self.list_pulls),
            ("POST", R + "/pulls", self.create_pull),
            ("GET", R + "/pulls/{number}", self.get_pull),
            ("PATCH", R + "/pulls/{number}", self.edit_pull),
            ("POST", R + "/statuses/{sha}", self.create_status),
            ("GET", R + "/commits/{ref}/status", self.combined_status),
            ("GET", R + "/commits/{ref}/statuses", self.list_statuses),
            ("GET", R + "/commits/{ref}/check-runs", self.list_check_runs),
            ("GET", R + "/check-runs/{id}", self.get_check_run),
            ("GET", R + "/collaborators/{username}/permission", self.permission),
        ]:
            self.add(method, pattern, handler)

    def error(self, status: int, message: str) -> Any:
        return self.r.error(status, message)

    def get_user(self, req: Request, p: dict[str, str]) -> Reply:
        if req.user is None:
            raise EmulatorError(401, "Requires authentication")
        return Reply(200, self.r.private_user(req.user))

    def get_repo(self, req: Request, p: dict[str, str]) -> Reply:
        return Reply(200, self.r.repo(self.repo(p, req.user), req.user))

    def list_issues(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        state = req.query.get("state", "open")
        wanted = [x.strip().lower() for x in req.query.get("labels", "").split(",") if x.strip()]
        since = _since(req.query)
        items = []
        for issue in sorted(repo.issues.values(), key=lambda i: -i.number):
            if state != "all" and issue.state != state:
                continue
            names = {x.name.lower() for x in issue.labels}
            if any(w not in names for w in wanted):
                continue
            if since and issue.updated_at < since:
                continue
            items.append(self.r.issue(repo, issue))
        return self.page(req, items)

    def create_issue(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        body = _body(req)
        assert req.user is not None
        labels = [x if isinstance(x, str) else x.get("name", "") for x in body.get("labels", [])]
        if repo.permission(req.user) not in ("write", "admin"):
            labels = []  # GitHub silently drops labels from users without push access
        issue = self.state.create_issue(repo, req.user, body["title"], body.get("body") or "",
                                        labels)
        return Reply(201, self.r.issue(repo, issue))

    def get_issue(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        return Reply(200, self.r.issue(repo, self.state.issue(repo, int(p["number"]))))

    def edit_issue(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user, "write")
        assert req.user is not None
        issue = self.state.issue(repo, int(p["number"]))
        body = _body(req)
        self.state.edit_issue(repo, issue, req.user, title=body.get("title"),
                              body=body.get("body"), state=body.get("state"))
        if "labels" in body:
            self._replace_labels(repo, issue, req.user, body["labels"])
        return Reply(200, self.r.issue(repo, issue))

    def list_comments(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        issue = self.state.issue(repo, int(p["number"]))
        since = _since(req.query)
        items = [self.r.comment(repo, c) for c in issue.comments
                 if since is None or c.updated_at >= since]
        return self.page(req, items)

    def create_comment(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        assert req.user is not None
        issue = self.state.issue(repo, int(p["number"]))
        comment = self.state.add_comment(repo, issue, req.user, _body(req)["body"])
        return Reply(201, self.r.comment(repo, comment))

    def get_comment(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        _, comment = self.state.find_comment(repo, int(p["id"]))
        return Reply(200, self.r.comment(repo, comment))

    def edit_comment(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        assert req.user is not None
        comment = self.state.edit_comment(repo, int(p["id"]), req.user, _body(req)["body"])
        return Reply(200, self.r.comment(repo, comment))

    def _react(self, req: Request, target: Any) -> Reply:
        assert req.user is not None
        content = _body(req).get("content", "")
        if content not in ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"):
            raise EmulatorError(422, f"Validation Failed: content {content!r}")
        reaction, new = self.state.react(target, req.user, content)
        return Reply(201 if new else 200, self.r.reaction(reaction))

    def react_issue(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        return self._react(req, self.state.issue(repo, int(p["number"])))

    def react_comment(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        return self._react(req, self.state.find_comment(repo, int(p["id"]))[1])

    def list_events(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        issue = self.state.issue(repo, int(p["number"]))
        return self.page(req, [self.r.event(repo, e) for e in issue.events])

    def issue_labels(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        issue = self.state.issue(repo, int(p["number"]))
        return self.page(req, [self.r.label(repo, x) for x in issue.labels])

    @staticmethod
    def _names(body: Any) -> list[str]:
        # PyGithub sends a bare JSON array; the documented form is {"labels": [...]}.
        raw = body.get("labels", []) if isinstance(body, dict) else body
        if not isinstance(raw, list):
            raise EmulatorError(422, "Validation Failed: labels must be a list")
        return [x if isinstance(x, str) else str(x.get("name", "")) for x in raw]

    def add_labels(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user, "write")
        assert req.user is not None
        issue = self.state.issue(repo, int(p["number"]))
        for name in self._names(req.body):
            self.state.add_label(repo, issue, name, req.user)  # GitHub creates missing labels
        return Reply(200, [self.r.label(repo, x) for x in issue.labels])

    def _replace_labels(self, repo: Repo, issue: Issue, user: User, names: list[Any]) -> None:
        wanted = {str(n if isinstance(n, str) else n.get("name")).lower() for n in names}
        for label in list(issue.labels):
            if label.name.lower() not in wanted:
                self.state.remove_label(repo, issue, label, user)
        for name in names:
            self.state.add_label(repo, issue, name if isinstance(name, str) else name["name"],
                                 user)

    def set_labels(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user, "write")
        assert req.user is not None
        issue = self.state.issue(repo, int(p["number"]))
        self._replace_labels(repo, issue, req.user, self._names(req.body))
        return Reply(200, [self.r.label(repo, x) for x in issue.labels])

    def remove_label(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user, "write")
        assert req.user is not None
        issue = self.state.issue(repo, int(p["number"]))
        label = next((x for x in issue.labels if x.name.lower() == p["name"].lower()), None)
        if label is None:
            raise EmulatorError(404, "Label does not exist")
        self.state.remove_label(repo, issue, label, req.user)
        return Reply(200, [self.r.label(repo, x) for x in issue.labels])

    def list_labels(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        return self.page(req, [self.r.label(repo, x) for x in repo.labels])

    def create_label(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user, "write")
        body = _body(req)
        color = str(body.get("color", "ededed")).lstrip("#")
        if not re.fullmatch(r"[0-9a-fA-F]{6}", color):
            return Reply(422, {"message": "Validation Failed", "errors": [
                {"resource": "Label", "code": "invalid", "field": "color"}],
                "documentation_url": "https://docs.github.com/rest"})
        if repo.label(body["name"]) is not None:
            return Reply(422, {"message": "Validation Failed", "errors": [
                {"resource": "Label", "code": "already_exists", "field": "name"}],
                "documentation_url": "https://docs.github.com/rest"})
        label = self.state.ensure_label(repo, body["name"], color, body.get("description") or "")
        return Reply(201, self.r.label(repo, label))

    def list_pulls(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        state = req.query.get("state", "open")
        head = req.query.get("head")
        base = req.query.get("base")
        items = []
        for issue in sorted(repo.pulls(), key=lambda i: -i.number):
            assert issue.pull is not None
            if state != "all" and issue.state != state:
                continue
            if head and f"{repo.owner.login}:{issue.pull.head}".lower() != head.lower():
                continue
            if base and issue.pull.base != base:
                continue
            items.append(self.r.pull(repo, issue, full=False))
        return self.page(req, items)

    def create_pull(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user, "write")
        assert req.user is not None
        body = _body(req)
        head = str(body["head"]).split(":", 1)[-1]
        if self.open_pull_for(repo, head, body["base"]) is not None:
            return Reply(422, {"message": "Validation Failed", "errors": [
                {"resource": "PullRequest", "code": "custom",
                 "message": f"A pull request already exists for {repo.owner.login}:{head}."}],
                "documentation_url": "https://docs.github.com/rest"})
        issue = self.new_pull(repo, req.user, head, body["base"], body.get("title", head),
                              body.get("body") or "", bool(body.get("draft", False)))
        return Reply(201, self.r.pull(repo, issue))

    def get_pull(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        return Reply(200, self.r.pull(repo, self.state.pull(repo, int(p["number"]))))

    def edit_pull(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user, "write")
        assert req.user is not None
        issue = self.state.pull(repo, int(p["number"]))
        body = _body(req)
        self.state.edit_issue(repo, issue, req.user, title=body.get("title"),
                              body=body.get("body"), state=body.get("state"))
        return Reply(200, self.r.pull(repo, issue))

    def create_status(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user, "write")
        assert req.user is not None
        body = _body(req)
        if body.get("state") not in ("pending", "success", "failure", "error"):
            raise EmulatorError(422, "Validation Failed: state")
        status = self.state.set_status(repo, p["sha"], req.user, body["state"],
                                       body.get("context") or "default",
                                       body.get("description") or "",
                                       body.get("target_url") or "")
        return Reply(201, self.r.status(repo, status))

    def combined_status(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        sha = self.resolve(repo, p["ref"])
        return Reply(200, self.r.combined(repo, sha, self.state.latest_statuses(repo, sha)))

    def list_statuses(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        sha = self.resolve(repo, p["ref"])
        items = [self.r.status(repo, s) for s in reversed(repo.statuses) if s.sha == sha]
        return self.page(req, items)

    def list_check_runs(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        sha = self.resolve(repo, p["ref"])
        runs = [self.r.check_run(repo, c) for c in repo.check_runs if c.sha == sha]
        reply = self.page(req, runs)
        reply.body = {"total_count": len(runs), "check_runs": reply.body}
        return reply

    def get_check_run(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        run = next((c for c in repo.check_runs if c.id == int(p["id"])), None)
        if run is None:
            raise EmulatorError(404, "Not Found")
        return Reply(200, self.r.check_run(repo, run))

    def permission(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        user = self.state.user(p["username"])
        perm = repo.permission(user)
        if perm == "read" and user.login.lower() not in repo.permissions:
            perm = "read"  # public repository: everyone may read
        return Reply(200, self.r.permission(repo, user, perm))

    def graphql(self, req: Request) -> Reply:
        """The draft <-> ready mutations, which GitHub offers only over GraphQL."""
        if req.user is None:
            return Reply(401, {"message": "Requires authentication"})
        query = str((req.body or {}).get("query", ""))
        if "lastEditedAt" in query:
            return self._last_edit(req)
        variables = (req.body or {}).get("variables", {}).get("input", {})
        match = re.search(r"(markPullRequestReadyForReview|convertPullRequestToDraft)\(", query)
        if match is None:
            return Reply(200, {"errors": [{"message": "the emulator knows only the draft "
                                                      "mutations"}]})
        name = match.group(1)
        with self.state.lock:
            for repo in self.state.repos.values():
                for issue in repo.pulls():
                    assert issue.pull is not None
                    if node_id("PullRequest", issue.id) == variables.get("pullRequestId"):
                        self.state.need(repo, req.user, "write")
                        issue.pull.draft = name == "convertPullRequestToDraft"
                        result = {"clientMutationId": variables.get("clientMutationId"),
                                  "pullRequest": {"isDraft": issue.pull.draft}}
                        return Reply(200, {"data": {name: result}})
        return Reply(200, {"errors": [{"message": "Could not resolve to a node"}]})

    def _last_edit(self, req: Request) -> Reply:
        """``repository(owner, name) { issue(number) { lastEditedAt editor { login }
        timelineItems(itemTypes: [RENAMED_TITLE_EVENT], last: 1) {...} } }``."""
        variables = (req.body or {}).get("variables") or {}
        try:
            repo = self.state.repo(str(variables["owner"]), str(variables["name"]))
            self.state.need(repo, req.user, "read")
            issue = self.state.issue(repo, int(variables["number"]))
        except (KeyError, ValueError, TypeError, EmulatorError):
            return Reply(200, {"errors": [{"type": "NOT_FOUND", "message": "Could not resolve "
                                                                           "to an Issue"}]})
        if issue.pull is not None:
            return Reply(200, {"data": {"repository": {"issue": None}}, "errors": [
                {"type": "NOT_FOUND", "message": "Could not resolve to an Issue"}]})
        editor, renamer = issue.body_editor, issue.retitled_by
        renames = [] if issue.retitled_at is None else [{
            "createdAt": iso(issue.retitled_at),
            "actor": {"login": renamer.login} if renamer else None}]
        return Reply(200, {"data": {"repository": {"issue": {
            "lastEditedAt": iso(issue.body_edited_at),
            "editor": {"login": editor.login} if editor else None,
            "timelineItems": {"nodes": renames}}}}})


class ForgejoApi(BaseApi):
    """API v1 as Forgejo 12 serves it."""

    per_page_key = "limit"

    def __init__(self, state: ForgeState, render: ForgejoRenderer) -> None:
        super().__init__(state)
        self.r = render
        R = "/repos/{owner}/{repo}"
        for method, pattern, handler in [
            ("GET", "/user", self.get_user),
            ("GET", R, self.get_repo),
            ("GET", R + "/issues", self.list_issues),
            ("POST", R + "/issues", self.create_issue),
            ("GET", R + "/issues/comments/{id}", self.get_comment),
            ("PATCH", R + "/issues/comments/{id}", self.edit_comment),
            ("POST", R + "/issues/comments/{id}/reactions", self.react_comment),
            ("GET", R + "/issues/{number}", self.get_issue),
            ("PATCH", R + "/issues/{number}", self.edit_issue),
            ("GET", R + "/issues/{number}/comments", self.list_comments),
            ("POST", R + "/issues/{number}/comments", self.create_comment),
            ("POST", R + "/issues/{number}/reactions", self.react_issue),
            ("GET", R + "/issues/{number}/timeline", self.timeline),
            ("GET", R + "/issues/{number}/labels", self.issue_labels),
            ("POST", R + "/issues/{number}/labels", self.add_labels),
            ("DELETE", R + "/issues/{number}/labels/{id}", self.remove_label),
            ("GET", R + "/labels", self.list_labels),
            ("POST", R + "/labels", self.create_label),
            ("GET", R + "/pulls", self.list_pulls),
            ("POST", R + "/pulls", self.create_pull),
            ("GET", R + "/pulls/{number}", self.get_pull),
            ("PATCH", R + "/pulls/{number}", self.edit_pull),
            ("POST", R + "/statuses/{sha}", self.create_status),
            ("GET", R + "/statuses/{sha}", self.list_statuses),
            ("GET", R + "/commits/{ref}/status", self.combined_status),
            ("GET", R + "/commits/{ref}/statuses", self.list_statuses),
            ("GET", R + "/collaborators/{username}/permission", self.permission),
            # Last: a branch name may contain slashes, so this pattern swallows a lot.
            ("GET", R + "/pulls/{base}/{head+}", self.pull_by_branch),
        ]:
            self.add(method, pattern, handler)

    def error(self, status: int, message: str) -> Any:
        return self.r.error(status, message)

    def get_user(self, req: Request, p: dict[str, str]) -> Reply:
        if req.user is None:
            raise EmulatorError(401, "token is required")
        return Reply(200, self.r.user(req.user))

    def get_repo(self, req: Request, p: dict[str, str]) -> Reply:
        return Reply(200, self.r.repo(self.repo(p, req.user), req.user))

    def list_issues(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        state = req.query.get("state", "open")
        kind = req.query.get("type", "")
        wanted = [x.strip().lower() for x in req.query.get("labels", "").split(",") if x.strip()]
        since = _since(req.query)
        items = []
        for issue in sorted(repo.issues.values(), key=lambda i: -i.number):
            if state != "all" and issue.state != state:
                continue
            if (kind == "issues" and issue.pull) or (kind == "pulls" and not issue.pull):
                continue
            names = {x.name.lower() for x in issue.labels}
            if any(w not in names for w in wanted):
                continue
            if since and issue.updated_at < since:
                continue
            items.append(self.r.issue(repo, issue))
        return self.page(req, items)

    def create_issue(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        assert req.user is not None
        body = _body(req)
        issue = self.state.create_issue(repo, req.user, body["title"], body.get("body") or "")
        for ident in body.get("labels") or []:
            label = next((x for x in repo.labels if x.id == ident), None)
            if label is not None:
                self.state.add_label(repo, issue, label.name, req.user)
        return Reply(201, self.r.issue(repo, issue))

    def get_issue(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        return Reply(200, self.r.issue(repo, self.state.issue(repo, int(p["number"]))))

    def edit_issue(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user, "write")
        assert req.user is not None
        issue = self.state.issue(repo, int(p["number"]))
        body = _body(req)
        self.state.edit_issue(repo, issue, req.user, title=body.get("title"),
                              body=body.get("body"), state=body.get("state"))
        return Reply(201, self.r.issue(repo, issue))

    def list_comments(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        issue = self.state.issue(repo, int(p["number"]))
        since = _since(req.query)
        # Forgejo answers every comment in one list (no paging on this endpoint).
        return Reply(200, [self.r.comment(repo, c) for c in issue.comments
                           if since is None or c.updated_at >= since])

    def create_comment(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        assert req.user is not None
        issue = self.state.issue(repo, int(p["number"]))
        comment = self.state.add_comment(repo, issue, req.user, _body(req)["body"])
        return Reply(201, self.r.comment(repo, comment))

    def get_comment(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        return Reply(200, self.r.comment(repo, self.state.find_comment(repo, int(p["id"]))[1]))

    def edit_comment(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        assert req.user is not None
        comment = self.state.edit_comment(repo, int(p["id"]), req.user, _body(req)["body"])
        return Reply(200, self.r.comment(repo, comment))

    def _react(self, req: Request, target: Any) -> Reply:
        assert req.user is not None
        reaction, new = self.state.react(target, req.user, str(_body(req).get("content", "")))
        return Reply(201 if new else 200, self.r.reaction(reaction))

    def react_issue(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        return self._react(req, self.state.issue(repo, int(p["number"])))

    def react_comment(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        return self._react(req, self.state.find_comment(repo, int(p["id"]))[1])

    def timeline(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        issue = self.state.issue(repo, int(p["number"]))
        return self.page(req, self.r.timeline(repo, issue))

    def issue_labels(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        issue = self.state.issue(repo, int(p["number"]))
        return Reply(200, [self.r.label(repo, x) for x in issue.labels])

    def add_labels(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user, "write")
        assert req.user is not None
        issue = self.state.issue(repo, int(p["number"]))
        for ident in _body(req).get("labels") or []:
            if isinstance(ident, int):
                label = next((x for x in repo.labels if x.id == ident), None)
                if label is not None:
                    self.state.add_label(repo, issue, label.name, req.user)
            else:  # a name: unknown names are ignored, never created
                self.state.add_label(repo, issue, str(ident), req.user, create=False)
        return Reply(200, [self.r.label(repo, x) for x in issue.labels])

    def remove_label(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user, "write")
        assert req.user is not None
        issue = self.state.issue(repo, int(p["number"]))
        if not p["id"].isdigit():
            raise EmulatorError(422, "labels are removed by id")
        label = next((x for x in repo.labels if x.id == int(p["id"])), None)
        if label is None:
            raise EmulatorError(404, "label not found")
        self.state.remove_label(repo, issue, label, req.user)
        return Reply(204)

    def list_labels(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        return self.page(req, [self.r.label(repo, x) for x in repo.labels])

    def create_label(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user, "write")
        body = _body(req)
        color = str(body.get("color", "")).lstrip("#")
        if not re.fullmatch(r"[0-9a-fA-F]{6}", color):
            raise EmulatorError(422, "Color: invalid color")
        label = self.state.ensure_label(repo, body["name"], color, body.get("description") or "")
        return Reply(201, self.r.label(repo, label))

    def list_pulls(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        state = req.query.get("state", "open")
        items = [self.r.pull(repo, i) for i in sorted(repo.pulls(), key=lambda i: -i.number)
                 if state == "all" or i.state == state]
        return self.page(req, items)

    def create_pull(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user, "write")
        assert req.user is not None
        body = _body(req)
        head = str(body["head"]).split(":", 1)[-1]
        existing = self.open_pull_for(repo, head, body["base"])
        if existing is not None:
            raise EmulatorError(409, f"pull request already exists for these targets "
                                     f"[id: {existing.id}, issue_id: {existing.id}, head_repo_id:"
                                     f" {repo.id}, base_repo_id: {repo.id}, head_branch: {head},"
                                     f" base_branch: {body['base']}]")
        title = body.get("title", head)
        issue = self.new_pull(repo, req.user, head, body["base"], title, body.get("body") or "",
                              is_wip(title))
        return Reply(201, self.r.pull(repo, issue))

    def get_pull(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        return Reply(200, self.r.pull(repo, self.state.pull(repo, int(p["number"]))))

    def pull_by_branch(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        candidates = [i for i in repo.pulls() if i.pull is not None
                      and i.pull.base == p["base"] and i.pull.head == p["head"]]
        if not candidates:
            raise EmulatorError(404, "pull request does not exist")
        return Reply(200, self.r.pull(repo, max(candidates, key=lambda i: i.number)))

    def edit_pull(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user, "write")
        assert req.user is not None
        issue = self.state.pull(repo, int(p["number"]))
        assert issue.pull is not None
        body = _body(req)
        self.state.edit_issue(repo, issue, req.user, title=body.get("title"),
                              body=body.get("body"), state=body.get("state"))
        issue.pull.draft = is_wip(issue.title)
        return Reply(201, self.r.pull(repo, issue))

    def create_status(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user, "write")
        assert req.user is not None
        body = _body(req)
        if body.get("state") not in ("pending", "success", "failure", "error", "warning"):
            raise EmulatorError(400, "invalid state")
        status = self.state.set_status(repo, p["sha"], req.user, body["state"],
                                       body.get("context") or "default",
                                       body.get("description") or "",
                                       body.get("target_url") or "")
        return Reply(201, self.r.status(repo, status))

    def combined_status(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        sha = self.resolve(repo, p["ref"])
        return Reply(200, self.r.combined(repo, sha, self.state.latest_statuses(repo, sha)))

    def list_statuses(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        sha = self.resolve(repo, p.get("ref") or p["sha"])
        items = [self.r.status(repo, s) for s in reversed(repo.statuses) if s.sha == sha]
        return self.page(req, items)

    def permission(self, req: Request, p: dict[str, str]) -> Reply:
        repo = self.repo(p, req.user)
        assert req.user is not None
        # Forgejo answers only repository admins, or the user asking about themselves.
        if repo.permission(req.user) != "admin" and req.user.login != p["username"]:
            raise EmulatorError(403, "Only admins can query all permissions, repo admins "
                                     "can query all repo permissions, collaborators can "
                                     "query only their own")
        user = self.state.user(p["username"])
        perm = repo.permission(user)
        return Reply(200, self.r.permission(repo, user, perm if perm in PERMS else "none"))


def dumps(body: Any) -> bytes:
    """JSON as both forges send it."""
    return json.dumps(body, separators=(",", ":")).encode()
