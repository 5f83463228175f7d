"""``push`` webhooks in the forge emulator: every push it receives over git (a branch moved,
created or deleted) is delivered as both forges deliver it.

- GitHub (``X-GitHub-Event: push``, documented at docs.github.com "Webhook events and
  payloads", push): ``{ref, before, after, created, deleted, forced, base_ref, compare,
  commits, head_commit, repository, pusher, sender}``; ``pusher`` is ``{name, email}``, a
  commit is ``{id, tree_id, distinct, message, timestamp, url, author, committer, added,
  removed, modified}``, at most 2048 of them.
- Forgejo (``X-Forgejo-Event: push``, ``X-Forgejo-Event-Type: push``; ``PushPayload`` in
  ``modules/structs/hook.go``): ``{ref, before, after, compare_url, commits, total_commits,
  head_commit, repository, pusher, sender}``; a commit is ``PayloadCommit`` of
  ``swagger.v1.json`` and the pusher a whole user.

Neither payload is in ``../shared/contracts/`` (the GitHub webhook subset has no ``push``, the
Forgejo swagger only ``PayloadCommit``): ``tests/contract/forge/test_contracts.py`` checks
the fields named here, and each Forgejo commit against ``PayloadCommit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.testing import forge_git

if TYPE_CHECKING:
    from runner.testing.forge_state import Happening

MAX_COMMITS = 20  # what the emulator lists (GitHub lists up to 2048, Forgejo its setting)


@dataclass(frozen=True)
class PushedCommit:
    sha: str
    tree: str
    message: str
    author: str
    email: str
    at: str  # ISO 8601 with offset, as git and both forges print it
    added: tuple[str, ...]
    removed: tuple[str, ...]
    modified: tuple[str, ...]


def pushed_commits(git_dir: Path, before: str, after: str) -> list[PushedCommit]:
    """The commits ``after`` has that ``before`` had not, oldest first (none for a deletion)."""
    if after == forge_git.ZERO_SHA:
        return []
    span = after if before == forge_git.ZERO_SHA else f"{before}..{after}"
    out = forge_git.git("log", f"--max-count={MAX_COMMITS}", "--reverse",
                        "--format=%x01%H%x00%T%x00%an%x00%ae%x00%cI%x00%s", "--name-status",
                        span, cwd=git_dir, check=False)
    commits = []
    for block in out.split("\x01")[1:]:
        head, _, files = block.partition("\n")
        sha, tree, name, email, at, message = (head.split("\x00") + [""] * 6)[:6]
        changes: dict[str, list[str]] = {"A": [], "D": [], "M": []}
        for line in files.splitlines():
            status, _, path = line.partition("\t")
            if path:
                changes.get(status[:1], changes["M"]).append(path.split("\t")[-1])
        commits.append(PushedCommit(sha, tree, message, name, email, at,
                                    tuple(changes["A"]), tuple(changes["D"]),
                                    tuple(changes["M"])))
    return commits


def _who(commit: PushedCommit, login: str | None) -> dict[str, Any]:
    return {"name": commit.author, "email": commit.email, "username": login or commit.author}


def github_push(root: str, repository: dict[str, Any], sender: dict[str, Any],
                h: Happening) -> dict[str, Any]:
    """GitHub's ``push`` payload for a branch that moved from ``h.before`` to ``h.after``."""
    full = h.repo.full_name
    commits = pushed_commits(h.repo.git_dir, h.before, h.after)

    def one(c: PushedCommit) -> dict[str, Any]:
        return {"id": c.sha, "tree_id": c.tree, "distinct": True, "message": c.message,
                "timestamp": c.at, "url": f"{root}/{full}/commit/{c.sha}",
                "author": _who(c, h.sender.login), "committer": _who(c, h.sender.login),
                "added": list(c.added), "removed": list(c.removed),
                "modified": list(c.modified)}

    created, deleted = h.before == forge_git.ZERO_SHA, h.after == forge_git.ZERO_SHA
    return {"ref": f"refs/heads/{h.ref}", "before": h.before, "after": h.after,
            "created": created, "deleted": deleted, "forced": False, "base_ref": None,
            "compare": f"{root}/{full}/compare/{h.before[:12]}...{h.after[:12]}",
            "commits": [one(c) for c in commits],
            "head_commit": one(commits[-1]) if commits else None,
            "repository": repository,
            "pusher": {"name": h.sender.login, "email": h.sender.email},
            "sender": sender}


def forgejo_push(root: str, repository: dict[str, Any], user: dict[str, Any],
                 h: Happening) -> dict[str, Any]:
    """Forgejo's ``PushPayload`` for a branch that moved from ``h.before`` to ``h.after``."""
    full = h.repo.full_name
    commits = pushed_commits(h.repo.git_dir, h.before, h.after)

    def one(c: PushedCommit) -> dict[str, Any]:
        return {"id": c.sha, "message": c.message + "\n", "url": f"{root}/{full}/commit/{c.sha}",
                "author": _who(c, h.sender.login), "committer": _who(c, h.sender.login),
                "verification": None, "timestamp": c.at, "added": list(c.added),
                "removed": list(c.removed), "modified": list(c.modified)}

    return {"ref": f"refs/heads/{h.ref}", "before": h.before, "after": h.after,
            "compare_url": f"{root}/{full}/compare/{h.before}...{h.after}",
            "commits": [one(c) for c in commits], "total_commits": len(commits),
            "head_commit": one(commits[-1]) if commits else None,
            "repository": repository, "pusher": user, "sender": user}
