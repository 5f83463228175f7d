"""Spare worktrees: one checkout of a repository's base branch made ahead of time
(``spares/<owner>/<name>``), so the next run gets its files by a rename and a branch switch
instead of writing every file while it waits."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from runner.process import Cancel
from runner.workspace import worktrees
from runner.workspace.errors import Interrupted, WorkspaceError
from runner.workspace.git import HardenedGit
from runner.workspace.locks import MirrorLocks
from runner.workspace.mirror import Mirrors
from runner.workspace.records import REMOTE

log = logging.getLogger("runner.workspace")


class Spares:
    """The spare worktrees under ``root``, one per repository mirror."""

    def __init__(self, root: Path, git: HardenedGit, locks: MirrorLocks,
                 mirrors: Mirrors) -> None:
        self.root = root
        self.git = git
        self.locks = locks
        self.mirrors = mirrors

    def path(self, repo: str) -> Path:
        """Where ``repo``'s spare worktree waits (outside ``worktrees/``: it is no run's)."""
        mirror = self.mirrors.path(repo)
        return self.root / mirror.parent.name / mirror.name.removesuffix(".git")

    def fill(self, repo: str, base_branch: str = "main") -> bool:
        """Check out the spare of ``base_branch`` unless it is ready. True when a spare is
        ready; WorkspaceError when the mirror is busy (the refill is skipped then, not
        queued)."""
        mirror = self.mirrors.path(repo)
        if not (mirror / "HEAD").exists():
            return False
        path = self.path(repo)
        start = f"refs/remotes/{REMOTE}/{base_branch}"
        # Never wait behind runs being prepared: when the mirror is busy, skip this refill.
        with self.locks.locked(mirror, timeout=0):
            for leftover in path.parent.glob(f"{path.name}.taken-*"):  # a take cut by a crash
                shutil.rmtree(leftover, ignore_errors=True)
            if worktrees.admin_dir(mirror, path) is not None and path.is_dir():
                return True
            if path.exists() or worktrees.admin_dir(mirror, path) is not None:
                worktrees.remove(self.git, mirror, path, None)
            if start not in self.mirrors.refs(mirror, start):
                return False
            path.parent.mkdir(parents=True, exist_ok=True)
            self.git.run(["worktree", "add", "--quiet", "--detach", str(path), start],
                         git_dir=mirror)
        return True

    def take(self, mirror: Path, repo: str, path: Path, branch: str, start: str,
             cancel: Cancel | None = None) -> bool:
        """Move the spare's files (if one is ready) into ``path`` on ``branch`` at ``start``;
        only files that differ between the spare's commit and ``start`` are rewritten. Runs
        under the shared lock: the rename that takes the spare lets one run alone have it."""
        spare = self.path(repo)
        admin = worktrees.admin_dir(mirror, spare) if spare.is_dir() else None
        if admin is None:
            return False
        taken = spare.with_name(f"{spare.name}.taken-{path.name}")
        try:
            os.rename(spare, taken)
        except OSError:
            return False  # another run took it first
        try:
            # ``path`` may be a warm sandbox's empty workspace, mounted by inode: the files
            # move into it rather than the directory onto it.
            path.mkdir(exist_ok=True)
            for child in taken.iterdir():
                os.rename(child, path / child.name)
            taken.rmdir()
            # Git's record of where the worktree is, written here: `git worktree repair`
            # would also "repair" other runs' .git entries, which their agents control.
            (admin / "gitdir").write_text(f"{path.resolve() / '.git'}\n")
            with self.locks.adding(mirror, cancel):  # -B reads every worktree entry
                self.git.run(["checkout", "--quiet", "--no-track", "-B", branch, start],
                             git_dir=admin, work_tree=path, cancel=cancel)
            worktrees.lock(admin)
        except Interrupted:
            # A kill, not a broken spare: the half-switched entry is the run's now, and the
            # next prepare finds it half-made (not on the run's branch) and makes it again.
            raise
        except (WorkspaceError, OSError) as exc:
            log.warning("spare worktree of %s unusable (%s); checking out afresh", repo, exc)
            shutil.rmtree(taken, ignore_errors=True)
            shutil.rmtree(admin, ignore_errors=True)  # the spare's own: no prune needed
            worktrees.empty(path)
            return False
        return True
