"""``Workspaces``: a run's worktree, cut from the repository's mirror (or a spare), and
everything the run steps do to it, under one data directory."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from gates.model import Diff
from runner.model import branch_name
from runner.process import Cancel
from runner.workspace import worktrees
from runner.workspace.branches import Branches
from runner.workspace.errors import WorkspaceError
from runner.workspace.git import HardenedGit, check_url
from runner.workspace.locks import MirrorLocks
from runner.workspace.mirror import Mirrors
from runner.workspace.records import REMOTE, Identity, Worktree, WorktreeInfo
from runner.workspace.spares import Spares


class Workspaces:
    """Mirrors and worktrees under one data directory."""

    def __init__(self, data_dir: str | Path, *, identity: Identity | None = None,
                 lock_timeout: float = 960.0, git_timeout: float = 900.0) -> None:
        # Resolved: git records real paths, and the admin lookup compares them.
        self.root = Path(data_dir).resolve()
        self.mirrors = self.root / "mirrors"
        self.worktrees = self.root / "worktrees"
        self.identity = identity or Identity()
        self.git = HardenedGit(self.root, timeout=git_timeout)
        self.locks = MirrorLocks(lock_timeout)
        self.mirror_store = Mirrors(self.mirrors, self.git, self.locks)
        self.spares = Spares(self.root / "spares", self.git, self.locks, self.mirror_store)
        self.branches = Branches(self.git, self.locks, self.mirror_store, self.identity)
        # (mirror, branch, file) -> (the mirror's fetch stamp when read, the text or None)
        self._base_files: dict[tuple[Path, str, str], tuple[float, str | None]] = {}

    # ------------------------------------------------------------------ mirrors

    def mirror_path(self, repo: str) -> Path:
        """Where ``owner/name``'s bare mirror lives."""
        return self.mirror_store.path(repo)

    def sync_mirror(self, repo: str, url: str, *, token: str | None = None,
                    cancel: Cancel | None = None) -> Path:
        """Create the mirror if needed and fetch every branch of ``url`` (with --prune).
        Interrupted when ``cancel`` is set meanwhile (as for every method taking it)."""
        check_url(url)
        mirror = self.mirror_path(repo)
        with self.locks.locked(mirror, cancel=cancel):
            self.mirror_store.ensure(mirror, url)
            self.mirror_store.fetch(mirror, url, token, cancel)
        return mirror

    def base_file(self, repo: str, url: str, base_branch: str, name: str, *,
                  token: str | None = None, fresh_after: float | None = None,
                  cancel: Cancel | None = None) -> str | None:
        """The text of file ``name`` on the remote's ``base_branch`` (fetched as ``prepare``
        does), or None when the branch has no such file."""
        check_url(url)
        mirror = self.mirror_path(repo)
        self.mirror_store.fresh(mirror, url, token, fresh_after, cancel=cancel)
        key = (mirror, base_branch, name)
        stamp = self.mirror_store.last_fetch_began(mirror)
        cached = self._base_files.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]  # no fetch since: the base branch is where it was
        with self.locks.locked(mirror, shared=True, cancel=cancel):
            stamp = self.mirror_store.last_fetch_began(mirror)
            proc = self.git.run(["cat-file", "blob",
                                 f"refs/remotes/{REMOTE}/{base_branch}:{name}"],
                                git_dir=mirror, check=False, cancel=cancel)
        text = proc.stdout if proc.returncode == 0 else None
        self._base_files[key] = (stamp, text)
        return text

    # ------------------------------------------------------------------ worktrees

    def worktree_path(self, run_id: str) -> Path:
        """Where run ``run_id``'s worktree is (or will be) checked out."""
        return self.worktrees / run_id

    def prepare(self, run_id: str, repo: str, issue: int, url: str, *,
                base_branch: str = "main", token: str | None = None,
                fetch: bool = True, fresh_after: float | None = None,
                cancel: Cancel | None = None) -> Worktree:
        """Fetch the mirror and give the run its worktree on ``orchestrator/issue-<n>``.

        The branch starts from the remote's branch of the same name when it exists (a run
        resumed after a crash or a new owner), else from ``base_branch``. A fetch that began
        after ``fresh_after`` (epoch seconds, e.g. when the run was asked for; default: now)
        is fresh enough. Calling it again for the same run returns the worktree it has.
        A ``cancel`` stops the fetch or checkout in flight (Interrupted); a worktree it
        leaves half-made is made again by the next call. A run's worktree may be an empty
        directory first (a warm sandbox's workspace): it is filled in place, never replaced.
        """
        check_url(url)
        mirror = self.mirror_path(repo)
        branch = branch_name(issue)
        path = self.worktree_path(run_id)
        self.mirror_store.fresh(mirror, url, token, fresh_after, fetch=fetch, cancel=cancel)
        if worktrees.half_made(mirror, path, branch):
            with self.locks.locked(mirror, cancel=cancel):
                if worktrees.half_made(mirror, path, branch):
                    # Left by a crash. The directory itself stays: a warm sandbox may
                    # already have it mounted as its /workspace.
                    worktrees.remove(self.git, mirror, path, None, keep_dir=path.is_dir())
        existing = worktrees.admin_dir(mirror, path)
        if existing is not None:
            worktrees.lock(existing)  # made before worktrees were locked
            return Worktree(run_id, repo, issue, path, branch, existing, mirror, base_branch,
                            resumed=True)
        # Runs labelled together check out together.
        with self.locks.locked(mirror, shared=True, cancel=cancel):
            holder = worktrees.branch_holder(mirror, branch)
            if holder is not None:
                raise WorkspaceError(
                    f"branch {branch} is checked out by another worktree ({holder}); remove "
                    "that run's workspace first (Workspaces.remove_orphans cleans up runs "
                    "that are no longer live)")
            remote_branch = f"refs/remotes/{REMOTE}/{branch}"
            base = f"refs/remotes/{REMOTE}/{base_branch}"
            known = self.mirror_store.refs(mirror, remote_branch, base)
            resumed = remote_branch in known
            start = remote_branch if resumed else base
            if start not in known:
                raise WorkspaceError(
                    f"{repo} has no branch {base_branch!r} at {url}; set base_branch for this "
                    "repository in orchestrator.yml")
            self.worktrees.mkdir(parents=True, exist_ok=True)
            took_spare = self.spares.take(mirror, repo, path, branch, start, cancel)
            if not took_spare:
                # -B: a local branch left by an earlier, removed run is reset to the start.
                # An empty directory at ``path`` (a warm sandbox's workspace) is filled.
                # Only the entry is made in turn; the files are checked out side by side.
                with self.locks.adding(mirror, cancel):
                    self.git.run(["worktree", "add", "--quiet", "--no-checkout", "--no-track",
                                  "-B", branch, str(path), start], git_dir=mirror,
                                 cancel=cancel)
            admin = worktrees.admin_dir(mirror, path)
            if admin is None:
                raise WorkspaceError(f"git worktree add made {path} but the mirror {mirror} "
                                     "does not list it; remove both and retry")
            if not took_spare:
                self.git.run(["reset", "--hard", "--quiet"], git_dir=admin, work_tree=path,
                             cancel=cancel)
            worktrees.lock(admin)
        return Worktree(run_id, repo, issue, path, branch, admin, mirror, base_branch, resumed)

    def open(self, run_id: str, repo: str, issue: int, *, base_branch: str = "main"
             ) -> Worktree | None:
        """The run's existing worktree (after a restart), or None."""
        mirror = self.mirror_path(repo)
        path = self.worktrees / run_id
        admin = worktrees.admin_dir(mirror, path) if mirror.exists() else None
        if admin is None or not path.is_dir():
            return None
        return Worktree(run_id, repo, issue, path, branch_name(issue), admin, mirror,
                        base_branch, resumed=True)

    # ------------------------------------------------------------------ spare worktrees

    def spare_path(self, repo: str) -> Path:
        """Where ``repo``'s spare worktree waits (outside ``worktrees/``: it is no run's)."""
        return self.spares.path(repo)

    def fill_spare(self, repo: str, base_branch: str = "main") -> bool:
        """Check out a spare worktree of the base branch ahead of time, so the next run of
        ``repo`` gets its worktree by a rename and a branch switch instead of writing every
        file while it waits. True when a spare is ready; WorkspaceError when the mirror is
        busy (the refill is skipped then, not queued)."""
        return self.spares.fill(repo, base_branch)

    # ------------------------------------------------------------------ the run's branch

    def commit(self, wt: Worktree, message: str | None = None, *,
               cancel: Cancel | None = None) -> str | None:
        """Commit every change in the worktree as the bot; the new SHA, or None if clean
        (``Branches.commit``)."""
        return self.branches.commit(wt, message, cancel=cancel)

    def reset_to(self, wt: Worktree, sha: str) -> None:
        """Move the run's branch back to ``sha``, keeping the files."""
        self.branches.reset_to(wt, sha)

    def head(self, wt: Worktree) -> str:
        """The SHA the run's branch points at."""
        return self.branches.head(wt)

    def changed_files(self, wt: Worktree) -> list[str]:
        """Paths the branch changes relative to the base branch (committed changes)."""
        return self.branches.changed_files(wt)

    def diff(self, wt: Worktree, *, cancel: Cancel | None = None) -> str:
        """The branch's committed diff against the base branch (for the reviewer)."""
        return self.branches.diff(wt, cancel=cancel)

    def changes(self, wt: Worktree, *, cancel: Cancel | None = None) -> Diff:
        """The files the branch's commits change against the base branch."""
        return self.branches.changes(wt, cancel=cancel)

    def conflicts(self, wt: Worktree, *, url: str | None = None, token: str | None = None,
                  cancel: Cancel | None = None) -> list[str]:
        """Paths that conflict between the run's branch and the latest base branch (fetched
        first when ``url`` is given); empty when the branch merges cleanly."""
        return self.branches.conflicts(wt, url=url, token=token, cancel=cancel)

    def push(self, wt: Worktree, url: str, *, token: str | None = None,
             force: bool = False, cancel: Cancel | None = None) -> str:
        """Push the run's branch to ``url`` as the bot; the pushed SHA (``Branches.push``)."""
        return self.branches.push(wt, url, token=token, force=force, cancel=cancel)

    # ------------------------------------------------------------------ cleanup

    def remove(self, wt: Worktree) -> None:
        """Remove the worktree, its admin entry and its local branch. Safe to call twice."""
        if not wt.mirror.exists():
            shutil.rmtree(wt.path, ignore_errors=True)
            return
        with self.locks.locked(wt.mirror):
            worktrees.remove(self.git, wt.mirror, wt.path, wt.branch)

    def discard(self, run_id: str) -> None:
        """Delete what is left at the run's worktree path when it holds no worktree (the
        empty directory of a warm sandbox whose run failed before checking out)."""
        path = self.worktree_path(run_id)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)

    def list_worktrees(self) -> list[WorktreeInfo]:
        """Every run worktree on disk, with its repository when a mirror knows it."""
        found: dict[Path, WorktreeInfo] = {}
        for mirror in sorted(self.mirrors.glob("*/*.git")):
            repo = f"{mirror.parent.name}/{mirror.name[:-4]}"
            for entry in worktrees.listed(self.git, mirror):
                path = Path(entry["worktree"])
                if path.parent != self.worktrees:
                    continue  # the mirror itself, or a worktree someone else made
                branch = entry.get("branch", "").removeprefix("refs/heads/") or None
                found[path] = WorktreeInfo(path.name, repo, path, branch)
        if self.worktrees.is_dir():
            for path in self.worktrees.iterdir():
                found.setdefault(path, WorktreeInfo(path.name, "", path, None))
        return sorted(found.values(), key=lambda info: info.run_id)

    def remove_orphans(self, live_run_ids: Iterable[str]) -> list[str]:
        """Remove worktrees of runs not in ``live_run_ids``; return their run ids."""
        live = set(live_run_ids)
        removed: list[str] = []
        for info in self.list_worktrees():
            if info.run_id in live:
                continue
            if info.repo:
                mirror = self.mirror_path(info.repo)
                with self.locks.locked(mirror):
                    worktrees.remove(self.git, mirror, info.path, info.branch)
            else:
                shutil.rmtree(info.path, ignore_errors=True)
            removed.append(info.run_id)
        return removed
