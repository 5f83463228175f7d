"""GitHub flavour of the forge emulator: REST v3 JSON and webhook payloads.

Shapes follow ``github/rest-subset.json`` and ``github/webhooks-subset.json`` in the shared
contracts (every required field present, with the right type); the contract tests validate
each response against them. Served under ``/api/v3`` as GitHub Enterprise does.
"""

from __future__ import annotations

from typing import Any

from runner.testing import forge_diff
from runner.testing.forge_push import github_push
from runner.testing.forge_review_json import github_review_webhook
from runner.testing.forge_state import (
    CheckRun,
    Comment,
    Happening,
    Issue,
    IssueEvent,
    Label,
    Reaction,
    Repo,
    ReviewRecord,
    Status,
    User,
    iso,
    node_id,
)

REACTIONS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")


class GitHubRenderer:
    """Turns records into GitHub JSON. ``root`` is the web root, the API is ``root/api/v3``."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.api = f"{root}/api/v3"

    # ------------------------------------------------------------ users and repos

    def user(self, u: User) -> dict[str, Any]:
        base = f"{self.api}/users/{u.login}"
        return {
            "login": u.login, "id": u.id, "node_id": node_id("User", u.id),
            "avatar_url": f"{self.root}/avatars/{u.login}", "gravatar_id": "",
            "url": base, "html_url": f"{self.root}/{u.login}",
            "followers_url": f"{base}/followers",
            "following_url": f"{base}/following{{/other_user}}",
            "gists_url": f"{base}/gists{{/gist_id}}",
            "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{base}/subscriptions",
            "organizations_url": f"{base}/orgs", "repos_url": f"{base}/repos",
            "events_url": f"{base}/events{{/privacy}}",
            "received_events_url": f"{base}/received_events",
            "type": "Bot" if u.login.endswith("[bot]") else "User",
            "site_admin": u.site_admin, "user_view_type": "public",
        }

    def private_user(self, u: User) -> dict[str, Any]:
        out = self.user(u)
        out.update({
            "name": u.login, "company": None, "blog": "", "location": None,
            "email": u.email, "hireable": None, "bio": None, "twitter_username": None,
            "public_repos": 0, "public_gists": 0, "followers": 0, "following": 0,
            "created_at": iso(u.created_at), "updated_at": iso(u.created_at),
            "private_gists": 0, "total_private_repos": 0, "owned_private_repos": 0,
            "disk_usage": 0, "collaborators": 0, "two_factor_authentication": False,
            "user_view_type": "private",
        })
        return out

    def repo(self, r: Repo, viewer: User | None = None) -> dict[str, Any]:
        """A superset of full-repository, repository, minimal-repository and the webhook one."""
        url = f"{self.api}/repos/{r.full_name}"
        html = f"{self.root}/{r.full_name}"
        created = iso(r.created_at)
        out: dict[str, Any] = {
            "id": r.id, "node_id": node_id("Repository", r.id), "name": r.name,
            "full_name": r.full_name, "private": r.private, "owner": self.user(r.owner),
            "html_url": html, "description": None, "fork": False, "url": url,
            "archive_url": f"{url}/{{archive_format}}{{/ref}}",
            "assignees_url": f"{url}/assignees{{/user}}",
            "blobs_url": f"{url}/git/blobs{{/sha}}", "branches_url": f"{url}/branches{{/branch}}",
            "collaborators_url": f"{url}/collaborators{{/collaborator}}",
            "comments_url": f"{url}/comments{{/number}}", "commits_url": f"{url}/commits{{/sha}}",
            "compare_url": f"{url}/compare/{{base}}...{{head}}",
            "contents_url": f"{url}/contents/{{+path}}", "contributors_url": f"{url}/contributors",
            "deployments_url": f"{url}/deployments", "downloads_url": f"{url}/downloads",
            "events_url": f"{url}/events", "forks_url": f"{url}/forks",
            "git_commits_url": f"{url}/git/commits{{/sha}}",
            "git_refs_url": f"{url}/git/refs{{/sha}}", "git_tags_url": f"{url}/git/tags{{/sha}}",
            "git_url": f"git://{self.root.split('://', 1)[1]}/{r.full_name}.git",
            "hooks_url": f"{url}/hooks",
            "issue_comment_url": f"{url}/issues/comments{{/number}}",
            "issue_events_url": f"{url}/issues/events{{/number}}",
            "issues_url": f"{url}/issues{{/number}}", "keys_url": f"{url}/keys{{/key_id}}",
            "labels_url": f"{url}/labels{{/name}}", "languages_url": f"{url}/languages",
            "merges_url": f"{url}/merges", "milestones_url": f"{url}/milestones{{/number}}",
            "notifications_url": f"{url}/notifications{{?since,all,participating}}",
            "pulls_url": f"{url}/pulls{{/number}}", "releases_url": f"{url}/releases{{/id}}",
            "ssh_url": f"git@{self.root.split('://', 1)[1].split(':')[0]}:{r.full_name}.git",
            "stargazers_url": f"{url}/stargazers", "statuses_url": f"{url}/statuses/{{sha}}",
            "subscribers_url": f"{url}/subscribers", "subscription_url": f"{url}/subscription",
            "tags_url": f"{url}/tags", "teams_url": f"{url}/teams",
            "trees_url": f"{url}/git/trees{{/sha}}", "clone_url": f"{html}.git",
            "mirror_url": None, "svn_url": html, "homepage": None, "language": None,
            "forks_count": 0, "forks": 0, "stargazers_count": 0, "watchers_count": 0,
            "watchers": 0, "size": 0, "default_branch": r.default_branch,
            "open_issues_count": sum(1 for i in r.issues.values() if i.state == "open"),
            "open_issues": sum(1 for i in r.issues.values() if i.state == "open"),
            "is_template": False, "topics": [], "has_issues": True, "has_projects": False,
            "has_wiki": False, "has_pages": False, "has_downloads": False,
            "has_discussions": False, "archived": False, "disabled": False,
            "visibility": "private" if r.private else "public", "pushed_at": created,
            "created_at": created, "updated_at": created, "license": None,
            "allow_forking": True, "web_commit_signoff_required": False,
            "network_count": 0, "subscribers_count": 0,
        }
        if viewer is not None:
            perm = r.permission(viewer)
            out["permissions"] = {"admin": perm == "admin", "maintain": perm == "admin",
                                  "push": perm in ("write", "admin"), "triage": perm != "none",
                                  "pull": perm != "none"}
        return out

    # ------------------------------------------------------------ issues

    def label(self, r: Repo, label: Label) -> dict[str, Any]:
        return {"id": label.id, "node_id": node_id("Label", label.id),
                "url": f"{self.api}/repos/{r.full_name}/labels/{label.name}",
                "name": label.name, "color": label.color,
                "description": label.description or None, "default": False}

    def rollup(self, url: str, reactions: list[Reaction]) -> dict[str, Any]:
        out: dict[str, Any] = {"url": f"{url}/reactions", "total_count": len(reactions)}
        for content in REACTIONS:
            out[content] = sum(1 for x in reactions if x.content == content)
        return out

    @staticmethod
    def association(r: Repo, u: User) -> str:
        if u.login == r.owner.login:
            return "OWNER"
        return "COLLABORATOR" if u.login.lower() in r.permissions else "NONE"

    def issue(self, r: Repo, i: Issue) -> dict[str, Any]:
        url = f"{self.api}/repos/{r.full_name}/issues/{i.number}"
        kind = "pull" if i.pull else "issues"
        html = f"{self.root}/{r.full_name}/{kind}/{i.number}"
        out: dict[str, Any] = {
            "id": i.id, "node_id": node_id("Issue", i.id), "url": url,
            "repository_url": f"{self.api}/repos/{r.full_name}",
            "labels_url": f"{url}/labels{{/name}}", "comments_url": f"{url}/comments",
            "events_url": f"{url}/events", "html_url": html, "number": i.number,
            "state": i.state,
            "title": i.title, "body": i.body, "user": self.user(i.user),
            "labels": [self.label(r, x) for x in i.labels], "assignee": None,
            "assignees": [], "milestone": None, "locked": False, "active_lock_reason": None,
            "comments": len(i.comments), "closed_at": iso(i.closed_at),
            "created_at": iso(i.created_at), "updated_at": iso(i.updated_at),
            "closed_by": None, "author_association": self.association(r, i.user),
            "reactions": self.rollup(url, i.reactions), "timeline_url": f"{url}/timeline",
            "performed_via_github_app": None,
        }
        if i.state == "closed":  # null with an enum trips validators; GitHub omits it too
            out["state_reason"] = "completed"
        if i.pull is not None:
            pull_url = f"{self.api}/repos/{r.full_name}/pulls/{i.number}"
            out["pull_request"] = {"url": pull_url, "html_url": html,
                                   "diff_url": f"{html}.diff", "patch_url": f"{html}.patch",
                                   "merged_at": iso(i.pull.merged_at)}
            out["draft"] = i.pull.draft
        return out

    def comment(self, r: Repo, c: Comment) -> dict[str, Any]:
        url = f"{self.api}/repos/{r.full_name}/issues/comments/{c.id}"
        return {
            "id": c.id, "node_id": node_id("IssueComment", c.id), "url": url,
            "html_url": f"{self.root}/{r.full_name}/issues/{c.issue_number}#issuecomment-{c.id}",
            "issue_url": f"{self.api}/repos/{r.full_name}/issues/{c.issue_number}",
            "body": c.body, "user": self.user(c.user), "created_at": iso(c.created_at),
            "updated_at": iso(c.updated_at), "author_association": self.association(r, c.user),
            "performed_via_github_app": None, "reactions": self.rollup(url, c.reactions),
        }

    def reaction(self, x: Reaction) -> dict[str, Any]:
        return {"id": x.id, "node_id": node_id("Reaction", x.id), "user": self.user(x.user),
                "content": x.content, "created_at": iso(x.created_at)}

    def event(self, r: Repo, e: IssueEvent) -> dict[str, Any]:
        return {"id": e.id, "node_id": node_id("LabeledEvent", e.id),
                "url": f"{self.api}/repos/{r.full_name}/issues/events/{e.id}",
                "actor": self.user(e.actor), "event": e.event, "commit_id": None,
                "commit_url": None, "created_at": iso(e.created_at),
                "performed_via_github_app": None,
                "label": {"name": e.label.name, "color": e.label.color}}

    # ------------------------------------------------------------ pulls

    def pull(self, r: Repo, i: Issue, full: bool = True) -> dict[str, Any]:
        assert i.pull is not None
        p = i.pull
        url = f"{self.api}/repos/{r.full_name}/pulls/{i.number}"
        html = f"{self.root}/{r.full_name}/pull/{i.number}"
        issue_url = f"{self.api}/repos/{r.full_name}/issues/{i.number}"
        statuses = f"{self.api}/repos/{r.full_name}/statuses/{p.head_sha}"
        repo_json = self.repo(r)
        owner = self.user(r.owner)
        out: dict[str, Any] = {
            "url": url, "id": i.id, "node_id": node_id("PullRequest", i.id), "html_url": html,
            "diff_url": f"{html}.diff", "patch_url": f"{html}.patch", "issue_url": issue_url,
            "commits_url": f"{url}/commits", "review_comments_url": f"{url}/comments",
            "review_comment_url": f"{self.api}/repos/{r.full_name}/pulls/comments{{/number}}",
            "comments_url": f"{issue_url}/comments", "statuses_url": statuses,
            "number": i.number, "state": i.state, "locked": False, "title": i.title,
            "user": self.user(i.user), "body": i.body or None,
            "labels": [self.label(r, x) for x in i.labels], "milestone": None,
            "active_lock_reason": None, "created_at": iso(i.created_at),
            "updated_at": iso(i.updated_at), "closed_at": iso(i.closed_at),
            "merged_at": iso(p.merged_at), "merge_commit_sha": p.merge_sha or None,
            "assignee": None, "assignees": [],
            "requested_reviewers": [], "requested_teams": [],
            "head": {"label": f"{r.owner.login}:{p.head}", "ref": p.head, "sha": p.head_sha,
                     "user": owner, "repo": repo_json},
            "base": {"label": f"{r.owner.login}:{p.base}", "ref": p.base, "sha": p.base_sha,
                     "user": owner, "repo": repo_json},
            "_links": {"self": {"href": url}, "html": {"href": html},
                       "issue": {"href": issue_url}, "comments": {"href": f"{issue_url}/comments"},
                       "review_comments": {"href": f"{url}/comments"},
                       "review_comment": {"href": out_review_comment(self.api, r)},
                       "commits": {"href": f"{url}/commits"}, "statuses": {"href": statuses}},
            "author_association": self.association(r, i.user), "auto_merge": None,
            "draft": p.draft,
        }
        if full:
            # Computed with git (forge_diff.py); null once merged, as GitHub answers then.
            clean = None if p.merged else forge_diff.mergeable(r, i)
            state = "dirty" if clean is False else "draft" if p.draft else "clean"
            out.update({"merged": p.merged, "mergeable": clean, "rebaseable": clean,
                        "mergeable_state": state,
                        "merged_by": self.user(p.merged_by) if p.merged_by else None,
                        "comments": len(i.comments), "review_comments": len(p.line_comments),
                        "maintainer_can_modify": False, "commits": 1, "additions": 0,
                        "deletions": 0, "changed_files": 0})
        return out

    def review(self, r: Repo, i: Issue, v: ReviewRecord) -> dict[str, Any]:
        html = f"{self.root}/{r.full_name}/pull/{i.number}#pullrequestreview-{v.id}"
        pull_url = f"{self.api}/repos/{r.full_name}/pulls/{i.number}"
        return {"id": v.id, "node_id": node_id("PullRequestReview", v.id),
                "user": self.user(v.user), "body": v.body,
                "state": "DISMISSED" if v.dismissed else v.state,
                "html_url": html, "pull_request_url": pull_url,
                "_links": {"html": {"href": html}, "pull_request": {"href": pull_url}},
                "submitted_at": iso(v.submitted_at), "commit_id": v.commit_id,
                "author_association": self.association(r, v.user)}

    # ------------------------------------------------------------ CI

    def status(self, r: Repo, s: Status) -> dict[str, Any]:
        return {"url": f"{self.api}/repos/{r.full_name}/statuses/{s.sha}",
                "avatar_url": None, "id": s.id, "node_id": node_id("StatusContext", s.id),
                "state": s.state, "description": s.description or None,
                "target_url": s.target_url or None, "context": s.context,
                "created_at": iso(s.created_at), "updated_at": iso(s.created_at),
                "creator": self.user(s.creator)}

    def combined(self, r: Repo, sha: str, statuses: list[Status]) -> dict[str, Any]:
        states = {s.state for s in statuses}
        if not statuses or ("pending" in states and not states & {"failure", "error"}):
            state = "pending"  # GitHub reports "no statuses" as pending, total_count 0
        elif states & {"failure", "error"}:
            state = "failure"
        else:
            state = "success"
        simple = []
        for s in statuses:
            one = self.status(r, s)
            one.pop("creator")
            simple.append(one)
        return {"state": state, "sha": sha, "total_count": len(statuses), "statuses": simple,
                "repository": self.repo(r),
                "commit_url": f"{self.api}/repos/{r.full_name}/commits/{sha}",
                "url": f"{self.api}/repos/{r.full_name}/commits/{sha}/status"}

    def check_run(self, r: Repo, c: CheckRun) -> dict[str, Any]:
        return {"id": c.id, "node_id": node_id("CheckRun", c.id), "head_sha": c.sha,
                "name": c.name, "external_id": "",
                "url": f"{self.api}/repos/{r.full_name}/check-runs/{c.id}",
                "html_url": c.details_url, "details_url": c.details_url, "status": c.status,
                "conclusion": c.conclusion, "started_at": iso(c.started_at),
                "completed_at": iso(c.completed_at),
                "output": {"title": c.name, "summary": c.conclusion or c.status, "text": None,
                           "annotations_count": 0,
                           "annotations_url": f"{self.api}/repos/{r.full_name}/check-runs/"
                                              f"{c.id}/annotations"},
                "check_suite": {"id": c.id}, "app": None, "pull_requests": []}

    def permission(self, r: Repo, u: User, perm: str) -> dict[str, Any]:
        collaborator = self.user(u)
        collaborator["role_name"] = {"admin": "admin", "write": "write"}.get(perm, perm)
        collaborator["permissions"] = {"admin": perm == "admin", "maintain": perm == "admin",
                                       "push": perm in ("write", "admin"),
                                       "triage": perm != "none", "pull": perm != "none"}
        return {"permission": perm, "role_name": collaborator["role_name"],
                "user": collaborator}

    def error(self, status: int, message: str) -> dict[str, Any]:
        return {"message": message, "documentation_url": "https://docs.github.com/rest",
                "status": str(status)}

    # ------------------------------------------------------------ webhooks

    def webhook(self, h: Happening) -> tuple[str, dict[str, Any]] | None:
        """(X-GitHub-Event, payload) for a happening, or None when GitHub sends nothing."""
        if h.kind.startswith("pull_request_review"):

            return github_review_webhook(self, h)
        r = h.repo
        base: dict[str, Any] = {"repository": self.repo(r), "sender": self.user(h.sender)}
        if h.kind == "issues" and h.issue is not None:
            payload = {"action": h.action, "issue": self.issue(r, h.issue), **base}
            if h.label is not None:
                payload["label"] = self.label(r, h.label)
            return "issues", payload
        if h.kind == "issue_comment" and h.issue and h.comment:
            return "issue_comment", {"action": h.action, "issue": self.issue(r, h.issue),
                                     "comment": self.comment(r, h.comment), **base}
        if h.kind == "pull_request" and h.issue is not None:
            payload = {"action": h.action, "number": h.issue.number,
                       "pull_request": self.pull(r, h.issue), **base}
            if h.action == "synchronize":
                payload.update({"before": h.before, "after": h.after})
            if h.label is not None:
                payload["label"] = self.label(r, h.label)
            return "pull_request", payload
        if h.kind == "status" and h.status is not None:
            return "status", self.status_event(r, h.status, base)
        if h.kind == "check_run" and h.check_run is not None:
            return "check_run", {"action": h.action,
                                 "check_run": self.check_run(r, h.check_run), **base}
        if h.kind == "push":
            return "push", github_push(self.root, self.repo(r), self.user(h.sender), h)
        if h.kind == "ping":
            return "ping", {"zen": "Keep it logically awesome.", "hook_id": 1, **base}
        return None

    def status_event(self, r: Repo, s: Status, base: dict[str, Any]) -> dict[str, Any]:
        commit_url = f"{self.api}/repos/{r.full_name}/commits/{s.sha}"
        person = {"name": s.creator.login, "email": s.creator.email,
                  "date": iso(s.created_at)}
        return {
            "id": s.id, "sha": s.sha, "name": r.full_name, "target_url": s.target_url or None,
            "context": s.context, "description": s.description or None, "state": s.state,
            "branches": [], "created_at": iso(s.created_at), "updated_at": iso(s.created_at),
            "commit": {
                "sha": s.sha, "node_id": node_id("Commit", s.id), "url": commit_url,
                "html_url": f"{self.root}/{r.full_name}/commit/{s.sha}",
                "comments_url": f"{commit_url}/comments", "author": None, "committer": None,
                "parents": [],
                "commit": {"author": person, "committer": person, "message": "",
                           "tree": {"sha": s.sha, "url": f"{commit_url}/tree"},
                           "url": commit_url, "comment_count": 0,
                           "verification": {"verified": False, "reason": "unsigned",
                                            "signature": None, "payload": None,
                                            "verified_at": None}},
            },
            **base,
        }


def out_review_comment(api: str, r: Repo) -> str:
    return f"{api}/repos/{r.full_name}/pulls/comments{{/number}}"
