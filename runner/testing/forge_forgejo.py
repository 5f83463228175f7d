"""Forgejo flavour of the forge emulator: API v1 JSON and webhook payloads.

Every object carries exactly the properties ``forgejo/swagger.v1.json`` lists for it (the
contract tests check it "closed world"), with Forgejo's habits: ``status`` instead of
``state`` on commit statuses, an empty combined state when there are none, drafts as a
``WIP:`` title prefix, label changes as ``label_updated`` without the label.
"""

from __future__ import annotations

from typing import Any

from runner.testing import forge_diff
from runner.testing.forge_push import forgejo_push
from runner.testing.forge_state import (
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
)

WIP_PREFIXES = ("wip:", "[wip]")
EPOCH = "1970-01-01T00:00:00Z"


def is_wip(title: str) -> bool:
    """Forgejo's rule: a pull request is a draft when its title starts with WIP: or [WIP]."""
    return title.strip().lower().startswith(WIP_PREFIXES)


class ForgejoRenderer:
    """Turns records into Forgejo JSON. ``root`` is the web root, the API is ``root/api/v1``."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.api = f"{root}/api/v1"

    def user(self, u: User) -> dict[str, Any]:
        return {
            "active": True, "avatar_url": f"{self.root}/avatars/{u.login}",
            "created": iso(u.created_at), "description": "", "email": u.email,
            "followers_count": 0, "following_count": 0, "full_name": "",
            "html_url": f"{self.root}/{u.login}", "id": u.id, "is_admin": u.site_admin,
            "language": "en-US", "last_login": iso(u.created_at), "location": "",
            "login": u.login, "login_name": "", "prohibit_login": False, "pronouns": "",
            "restricted": False, "source_id": 0, "starred_repos_count": 0,
            "visibility": "public", "website": "",
        }

    def repo(self, r: Repo, viewer: User | None = None) -> dict[str, Any]:
        created = iso(r.created_at)
        perm = r.permission(viewer) if viewer else "read"
        open_issues = [i for i in r.issues.values() if i.state == "open"]
        return {
            "allow_fast_forward_only_merge": True, "allow_merge_commits": True,
            "allow_rebase": True, "allow_rebase_explicit": True, "allow_rebase_update": True,
            "allow_squash_merge": True, "archived": False, "archived_at": EPOCH,
            "avatar_url": "", "clone_url": f"{self.root}/{r.full_name}.git",
            "created_at": created, "default_allow_maintainer_edit": False,
            "default_branch": r.default_branch, "default_delete_branch_after_merge": False,
            "default_merge_style": "merge", "default_update_style": "merge",
            "description": "", "empty": False, "external_tracker": None, "external_wiki": None,
            "fork": False, "forks_count": 0, "full_name": r.full_name,
            "globally_editable_wiki": False, "has_actions": True, "has_issues": True,
            "has_packages": False, "has_projects": False, "has_pull_requests": True,
            "has_releases": False, "has_wiki": False, "html_url": f"{self.root}/{r.full_name}",
            "id": r.id, "ignore_whitespace_conflicts": False, "internal": False,
            "internal_tracker": {"allow_only_contributors_to_track_time": True,
                                 "enable_issue_dependencies": True,
                                 "enable_time_tracker": False},
            "language": "", "languages_url": f"{self.api}/repos/{r.full_name}/languages",
            "link": "", "mirror": False, "mirror_interval": "", "mirror_updated": EPOCH,
            "name": r.name, "object_format_name": "sha1",
            "open_issues_count": sum(1 for i in open_issues if i.pull is None),
            "open_pr_counter": sum(1 for i in open_issues if i.pull is not None),
            "original_url": "", "owner": self.user(r.owner), "parent": None,
            "permissions": {"admin": perm == "admin", "push": perm in ("write", "admin"),
                            "pull": perm != "none"},
            "private": r.private, "release_counter": 0, "repo_transfer": None, "size": 0,
            "ssh_url": f"git@localhost:{r.full_name}.git", "stars_count": 0,
            "template": False, "topics": [], "updated_at": created,
            "url": f"{self.api}/repos/{r.full_name}", "watchers_count": 0, "website": "",
            "wiki_branch": r.default_branch,
        }

    def label(self, r: Repo, label: Label) -> dict[str, Any]:
        return {"color": label.color, "description": label.description, "exclusive": False,
                "id": label.id, "is_archived": False, "name": label.name,
                "url": f"{self.api}/repos/{r.full_name}/labels/{label.id}"}

    def issue(self, r: Repo, i: Issue) -> dict[str, Any]:
        kind = "pulls" if i.pull else "issues"
        pull_meta = None
        if i.pull is not None:
            pull_meta = {"draft": is_wip(i.title), "merged": i.pull.merged,
                         "html_url": f"{self.root}/{r.full_name}/pulls/{i.number}",
                         "merged_at": iso(i.pull.merged_at)}
        return {
            "assets": [], "assignee": None, "assignees": [], "body": i.body,
            "closed_at": iso(i.closed_at), "comments": len(i.comments),
            "created_at": iso(i.created_at), "due_date": None,
            "html_url": f"{self.root}/{r.full_name}/{kind}/{i.number}", "id": i.id,
            "is_locked": False, "labels": [self.label(r, x) for x in i.labels],
            "milestone": None, "number": i.number, "original_author": "",
            "original_author_id": 0, "pin_order": 0, "pull_request": pull_meta, "ref": "",
            "repository": {"full_name": r.full_name, "id": r.id, "name": r.name,
                           "owner": r.owner.login},
            "state": i.state, "title": i.title, "updated_at": iso(i.updated_at),
            "url": f"{self.api}/repos/{r.full_name}/issues/{i.number}",
            "user": self.user(i.user),
        }

    def comment(self, r: Repo, c: Comment) -> dict[str, Any]:
        issue = r.issues.get(c.issue_number)
        is_pull = issue is not None and issue.pull is not None
        return {
            "assets": [], "body": c.body, "created_at": iso(c.created_at),
            "html_url": f"{self.root}/{r.full_name}/issues/{c.issue_number}#issuecomment-{c.id}",
            "id": c.id,
            "issue_url": "" if is_pull else f"{self.root}/{r.full_name}/issues/{c.issue_number}",
            "original_author": "", "original_author_id": 0,
            "pull_request_url": f"{self.root}/{r.full_name}/pulls/{c.issue_number}"
            if is_pull else "",
            "updated_at": iso(c.updated_at), "user": self.user(c.user),
        }

    def reaction(self, x: Reaction) -> dict[str, Any]:
        return {"content": x.content, "created_at": iso(x.created_at), "user": self.user(x.user)}

    def _timeline(self, r: Repo, i: Issue, ident: int, kind: str, user: User, body: str,
                  at: str | None, label: Label | None) -> dict[str, Any]:
        return {
            "assignee": None, "assignee_team": None, "body": body, "created_at": at,
            "dependent_issue": None,
            "html_url": f"{self.root}/{r.full_name}/issues/{i.number}#issuecomment-{ident}",
            "id": ident, "issue_url": f"{self.root}/{r.full_name}/issues/{i.number}",
            "label": self.label(r, label) if label else None, "milestone": None,
            "new_ref": "", "new_title": "", "old_milestone": None, "old_project_id": 0,
            "old_ref": "", "old_title": "", "project_id": 0, "pull_request_url": "",
            "ref_action": "", "ref_comment": None, "ref_commit_sha": "", "ref_issue": None,
            "removed_assignee": False, "resolve_doer": None, "review_id": 0,
            "tracked_time": None, "type": kind, "updated_at": at, "user": self.user(user),
        }

    def timeline(self, r: Repo, i: Issue) -> list[dict[str, Any]]:
        """Label changes (body "1" when added, as Forgejo stores it) and comments, by time."""
        items: list[tuple[str, int, dict[str, Any]]] = []
        for e in i.events:
            items.append((iso(e.created_at) or "", e.id, self.label_event(r, i, e)))
        for c in i.comments:
            items.append((iso(c.created_at) or "", c.id, self._timeline(
                r, i, c.id, "comment", c.user, c.body, iso(c.created_at), None)))
        return [x[2] for x in sorted(items, key=lambda t: (t[0], t[1]))]

    def label_event(self, r: Repo, i: Issue, e: IssueEvent) -> dict[str, Any]:
        body = "1" if e.event == "labeled" else ""
        return self._timeline(r, i, e.id, "label", e.actor, body, iso(e.created_at), e.label)

    def branch(self, r: Repo, ref: str, sha: str) -> dict[str, Any]:
        return {"label": ref, "ref": ref, "repo": self.repo(r), "repo_id": r.id, "sha": sha}

    def pull(self, r: Repo, i: Issue) -> dict[str, Any]:
        assert i.pull is not None
        p = i.pull
        html = f"{self.root}/{r.full_name}/pulls/{i.number}"
        return {
            "additions": 0, "allow_maintainer_edit": False, "assignee": None,
            "assignees": [], "base": self.branch(r, p.base, p.base_sha), "body": i.body,
            "changed_files": 0, "closed_at": iso(i.closed_at), "comments": len(i.comments),
            "created_at": iso(i.created_at), "deletions": 0, "diff_url": f"{html}.diff",
            "draft": is_wip(i.title), "due_date": None, "flow": 0,
            "head": self.branch(r, p.head, p.head_sha), "html_url": html, "id": i.id,
            "is_locked": False, "labels": [self.label(r, x) for x in i.labels],
            "merge_base": p.base_sha, "merge_commit_sha": p.merge_sha,
            "mergeable": forge_diff.mergeable(r, i),  # computed with git (forge_diff.py)
            "merged": p.merged, "merged_at": iso(p.merged_at),
            "merged_by": self.user(p.merged_by) if p.merged_by else None, "milestone": None,
            "number": i.number, "patch_url": f"{html}.patch", "pin_order": 0,
            "requested_reviewers": [], "requested_reviewers_teams": [],
            "review_comments": len(p.line_comments), "state": i.state, "title": i.title,
            "updated_at": iso(i.updated_at), "url": html, "user": self.user(i.user),
        }

    def review(self, r: Repo, i: Issue, v: ReviewRecord) -> dict[str, Any]:
        html = f"{self.root}/{r.full_name}/pulls/{i.number}#issuecomment-{v.id}"
        state = {"COMMENTED": "COMMENT", "APPROVED": "APPROVED",
                 "CHANGES_REQUESTED": "REQUEST_CHANGES"}.get(v.state, v.state)
        assert i.pull is not None
        count = sum(1 for c in i.pull.line_comments if c.review_id == v.id)
        return {"body": v.body, "comments_count": count, "commit_id": v.commit_id,
                "dismissed": v.dismissed, "html_url": html, "id": v.id, "official": False,
                "pull_request_url": f"{self.root}/{r.full_name}/pulls/{i.number}",
                "stale": False, "state": state, "submitted_at": iso(v.submitted_at),
                "team": None, "updated_at": iso(v.submitted_at), "user": self.user(v.user)}

    def status(self, r: Repo, s: Status) -> dict[str, Any]:
        return {"context": s.context, "created_at": iso(s.created_at),
                "creator": self.user(s.creator), "description": s.description, "id": s.id,
                "status": s.state, "target_url": s.target_url,
                "updated_at": iso(s.created_at),
                "url": f"{self.api}/repos/{r.full_name}/statuses/{s.sha}"}

    def combined(self, r: Repo, sha: str, statuses: list[Status]) -> dict[str, Any]:
        states = {s.state for s in statuses}
        state = ""  # Forgejo: no statuses at all is the empty string
        for candidate in ("error", "failure", "warning", "pending", "success"):
            if candidate in states:
                state = candidate
                break
        return {"commit_url": f"{self.api}/repos/{r.full_name}/git/commits/{sha}",
                "repository": self.repo(r), "sha": sha, "state": state,
                "statuses": [self.status(r, s) for s in statuses],
                "total_count": len(statuses),
                "url": f"{self.api}/repos/{r.full_name}/commits/{sha}/status"}

    def permission(self, r: Repo, u: User, perm: str) -> dict[str, Any]:
        shown = "owner" if u.login == r.owner.login else perm
        return {"permission": shown, "role_name": shown, "user": self.user(u)}

    def error(self, status: int, message: str) -> dict[str, Any]:
        out: dict[str, Any] = {"message": message, "url": f"{self.root}/api/swagger"}
        if status == 404:
            out["errors"] = []  # only APINotFound has this field
        return out

    # ------------------------------------------------------------ webhooks

    def webhook(self, h: Happening) -> tuple[str, str, dict[str, Any]] | None:
        """(X-Forgejo-Event, X-Forgejo-Event-Type, payload), or None when nothing is sent."""
        if h.kind.startswith("pull_request_review"):
            from runner.testing.forge_review_json import forgejo_review_webhook

            return forgejo_review_webhook(self, h)
        r = h.repo
        base = {"repository": self.repo(r), "sender": self.user(h.sender)}
        if h.kind in ("issues", "pull_request") and h.issue is not None:
            action = {"labeled": "label_updated", "unlabeled": "label_updated",
                      "synchronize": "synchronized"}.get(h.action, h.action)
            is_pull = h.issue.pull is not None
            payload: dict[str, Any] = {"action": action, "number": h.issue.number, **base,
                                       "commit_id": ""}
            if is_pull:
                payload["pull_request"] = self.pull(r, h.issue)
                payload["review"] = None
            else:
                payload["issue"] = self.issue(r, h.issue)
            # Forgejo's quirk: a label change does not say which label (or whether added).
            fine = {"label_updated": "issue_label", "synchronized": "pull_request_sync"}.get(
                action, "issues" if not is_pull else "pull_request")
            if is_pull and fine == "issue_label":
                fine = "pull_request_label"
            return ("pull_request" if is_pull else "issues"), fine, payload
        if h.kind == "issue_comment" and h.issue and h.comment:
            is_pull = h.issue.pull is not None
            payload = {"action": h.action, "issue": self.issue(r, h.issue),
                       "comment": self.comment(r, h.comment), "is_pull": is_pull, **base}
            if is_pull:
                payload["pull_request"] = self.pull(r, h.issue)
            fine = "pull_request_comment" if is_pull else "issue_comment"
            return "issue_comment", fine, payload
        if h.kind == "push":
            return "push", "push", forgejo_push(self.root, self.repo(r),
                                                self.user(h.sender), h)
        if h.kind == "status" and h.status is not None:
            s = h.status
            return "status", "status", {
                "commit": {"id": s.sha, "message": "", "url": ""}, "context": s.context,
                "created_at": iso(s.created_at), "description": s.description, "id": s.id,
                "sha": s.sha, "state": s.state, "target_url": s.target_url,
                "updated_at": iso(s.created_at), **base}
        return None
