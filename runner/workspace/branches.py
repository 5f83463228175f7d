"""A run's branch: commit the worktree as the bot, read what the branch changes against the
base branch, check it for conflicts, take a commit back, push it."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from gates.diff import NAME_STATUS, diff_from_git
from gates.model import Diff
from gates.safegit import DIFF_FLAGS
from runner.process import Cancel
from runner.workspace import worktrees
from runner.workspace.errors import WorkspaceError
from runner.workspace.git import HardenedGit, auth_env, check_url
from runner.workspace.locks import MirrorLocks
from runner.workspace.mirror import Mirrors
from runner.workspace.records import REMOTE, Identity, Worktree

log = logging.getLogger("runner.workspace")


class Branches:
    """Commits, diffs and pushes of run branches, under the mirror's locks."""

    def __init__(self, git: HardenedGit, locks: MirrorLocks, mirrors: Mirrors,
                 identity: Identity) -> None:
        self.git = git
        self.locks = locks
        self.mirrors = mirrors
        self.identity = identity

    def _wt_git(self, wt: Worktree, args: Iterable[str], *, check: bool = True,
                env: dict[str, str] | None = None,
                cancel: Cancel | None = None) -> subprocess.CompletedProcess[str]:
        return self.git.run(args, git_dir=wt.git_dir, work_tree=wt.path, check=check,
                            env=env, cancel=cancel)

    def commit(self, wt: Worktree, message: str | None = None, *,
               cancel: Cancel | None = None) -> str | None:
        """Commit every change in the worktree as the bot; the new SHA, or None if clean.

        The message always references the issue. Nested repositories the agent created are
        left out (git would record them as submodule pointers, not as files).
        """
        if not worktrees.admin_dir(wt.mirror, wt.path):
            raise WorkspaceError(f"{wt.path} is no longer a worktree of {wt.mirror}; "
                                 "prepare the run's workspace again")
        text = (message or f"orchestrator: work on #{wt.issue}").strip()
        if f"#{wt.issue}" not in text:
            text += f"\n\nRefs #{wt.issue}"
        env = {
            "GIT_AUTHOR_NAME": self.identity.name, "GIT_AUTHOR_EMAIL": self.identity.email,
            "GIT_COMMITTER_NAME": self.identity.name,
            "GIT_COMMITTER_EMAIL": self.identity.email,
        }
        with self.locks.locked(wt.mirror, shared=True, cancel=cancel):
            nested = nested_repos(wt.path)
            if nested:
                log.warning("run %s: not committing nested repositories %s", wt.run_id, nested)
            # Nested repositories would become submodule pointers (or fail the add when
            # they have no commit): leave them out, by literal path.
            excludes = [f":(exclude,literal){p}" for p in nested]
            # Left by an add or commit killed outright: only the run's owner writes this
            # index, one step at a time, so a lock found here is stale.
            (wt.git_dir / "index.lock").unlink(missing_ok=True)
            # An interrupted add or commit leaves at most a staged index: the files are as the
            # agent left them, and the next commit stages them again.
            self._wt_git(wt, ["add", "--all", "--", ".", *excludes], cancel=cancel)
            self._unstage_nested_repos(wt, cancel)
            staged = self._wt_git(wt, ["diff", "--cached", "--quiet"], check=False,
                                  cancel=cancel)
            if staged.returncode == 0:
                return None
            self._wt_git(wt, ["commit", "--quiet", "--no-verify", "--no-gpg-sign",
                              "-m", text], env=env, cancel=cancel)
            return self.head(wt)

    def _unstage_nested_repos(self, wt: Worktree, cancel: Cancel | None = None) -> None:
        out = self._wt_git(wt, ["diff", "--cached", "--raw", "-z", "--no-renames",
                                "--ignore-submodules=none"], cancel=cancel).stdout
        fields = out.split("\0")
        gitlinks: list[str] = []
        for meta, path in zip(fields[0::2], fields[1::2], strict=False):
            # ":000000 160000 ..." : a new entry that is a gitlink (an embedded repository)
            if meta.startswith(":") and meta.split()[1:2] == ["160000"]:
                gitlinks.append(path)
        if gitlinks:
            log.warning("run %s: not committing nested repositories %s", wt.run_id, gitlinks)
            # update-index: a pure index edit that never looks inside the nested repository.
            self._wt_git(wt, ["update-index", "--force-remove", "--", *gitlinks])

    def reset_to(self, wt: Worktree, sha: str) -> None:
        """Move the run's branch back to ``sha``, keeping the files: a commit that failed the
        pre-push gates is taken back, so nothing failing (a secret) stays in its history."""
        with self.locks.locked(wt.mirror, shared=True):
            self._wt_git(wt, ["reset", "--quiet", "--mixed", sha])

    def head(self, wt: Worktree) -> str:
        """The SHA the run's branch points at."""
        return self.git.run(["rev-parse", f"refs/heads/{wt.branch}"],
                            git_dir=wt.mirror).stdout.strip()

    def changed_files(self, wt: Worktree) -> list[str]:
        """Paths the branch changes relative to the base branch (committed changes)."""
        base = f"refs/remotes/{REMOTE}/{wt.base_branch}"
        out = self.git.run(["diff", "--name-only", "-z", f"{base}...refs/heads/{wt.branch}"],
                           git_dir=wt.mirror).stdout
        return [p for p in out.split("\0") if p]

    def diff(self, wt: Worktree, *, cancel: Cancel | None = None) -> str:
        """The branch's committed diff against the base branch (for the reviewer)."""
        base = f"refs/remotes/{REMOTE}/{wt.base_branch}"
        return self.git.run(["diff", *DIFF_FLAGS, f"{base}...refs/heads/{wt.branch}"],
                            git_dir=wt.mirror, errors="replace", cancel=cancel).stdout

    def changes(self, wt: Worktree, *, cancel: Cancel | None = None) -> Diff:
        """The files the branch's commits change against the base branch, as git names them
        (for the pre-push gates: ``gates.diff.diff_from_git``)."""
        span = f"refs/remotes/{REMOTE}/{wt.base_branch}...refs/heads/{wt.branch}"
        names = self.git.run(["diff", *NAME_STATUS, span], git_dir=wt.mirror,
                             cancel=cancel).stdout
        patch = self.git.run(["diff", *DIFF_FLAGS, "--find-renames", "--find-copies", span],
                             git_dir=wt.mirror, cancel=cancel).stdout
        return diff_from_git(names, patch, base=wt.base_branch)

    def conflicts(self, wt: Worktree, *, url: str | None = None, token: str | None = None,
                  cancel: Cancel | None = None) -> list[str]:
        """Paths that conflict between the run's branch and the latest base branch.

        Fetches first when ``url`` is given. An empty list means the branch merges cleanly.
        """
        self.git.require_merge_tree()
        if url is not None:
            check_url(url)
            with self.locks.locked(wt.mirror, fetching=True, cancel=cancel):
                self.mirrors.fetch(wt.mirror, url, token, cancel)
        with self.locks.locked(wt.mirror, shared=True, cancel=cancel):
            proc = self.git.run(["merge-tree", "--write-tree", "--name-only", "--no-messages",
                                 "-z", f"refs/remotes/{REMOTE}/{wt.base_branch}",
                                 f"refs/heads/{wt.branch}"],
                                git_dir=wt.mirror, ok_codes=(0, 1), cancel=cancel)
        if proc.returncode == 0:
            return []
        # -z output: the tree id, then one NUL-terminated path per conflicted file.
        paths = [p for p in proc.stdout.split("\0")[1:] if p]
        return sorted(set(paths))

    def push(self, wt: Worktree, url: str, *, token: str | None = None,
             force: bool = False, cancel: Cancel | None = None) -> str:
        """Push the run's branch to ``url`` as the bot; the pushed SHA.

        Interrupted when ``cancel`` stops the push: the remote may or may not have the
        branch then (git's own push is atomic per ref), and the mirror's record of it is
        left as it was, so a later push or resume reads the remote again."""
        check_url(url)
        sha = self.head(wt)
        ref = f"refs/heads/{wt.branch}"
        spec = f"{'+' if force else ''}{ref}:{ref}"
        # In turn with fetches: a fetch --prune would race the update-ref below.
        with self.locks.locked(wt.mirror, fetching=True, cancel=cancel):
            self.git.run(["push", "--quiet", "--no-verify", url, spec], git_dir=wt.mirror,
                         env=auth_env(url, token), token=token, cancel=cancel)
            # Record what the remote now has, so a resumed run starts from it.
            self.git.run(["update-ref", f"refs/remotes/{REMOTE}/{wt.branch}", sha],
                         git_dir=wt.mirror)
        return sha


def nested_repos(root: Path) -> list[str]:
    """Directories under ``root`` (not root itself) that hold a ``.git`` entry."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            continue
        if ".git" in dirnames or ".git" in filenames:
            found.append(os.path.relpath(dirpath, root))
            dirnames[:] = []  # nothing inside a nested repository is ours
    return sorted(found)
