"""The warm bare mirror of each repository, ``mirrors/<owner>/<name>.git``: origin's
branches under ``refs/remotes/origin/``, fetched once for the runs asked for together."""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path

from runner.process import Cancel
from runner.workspace.errors import WorkspaceError
from runner.workspace.git import HardenedGit, auth_env
from runner.workspace.locks import MirrorLocks
from runner.workspace.records import FETCH_STAMP, REMOTE

log = logging.getLogger("runner.workspace")


class Mirrors:
    """The bare mirrors under ``root``."""

    def __init__(self, root: Path, git: HardenedGit, locks: MirrorLocks) -> None:
        self.root = root
        self.git = git
        self.locks = locks
        self._checked: dict[Path, str] = {}  # mirror -> the origin URL it was checked to have

    def path(self, repo: str) -> Path:
        """Where ``owner/name``'s bare mirror lives."""
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo) or ".." in repo:
            raise WorkspaceError(f"{repo!r} is not a repository name (expected owner/name)")
        owner, name = repo.split("/")
        return self.root / owner / f"{name}.git"

    def ensure(self, mirror: Path, url: str) -> None:
        """Make the mirror of ``url`` unless it is ready (call with the exclusive lock)."""
        if not self.ready(mirror, url):
            self._make(mirror, url)
            self._checked[mirror] = url

    def ready(self, mirror: Path, url: str) -> bool:
        """The mirror exists with ``url`` as its origin (read without the lock: a read)."""
        if not (mirror / "HEAD").exists():
            return False
        if self._checked.get(mirror) != url:  # once per process: it costs a git process
            got = self.git.run(["config", "--get", f"remote.{REMOTE}.url"], git_dir=mirror,
                               check=False).stdout.strip()
            if got != url:
                return False
            self._checked[mirror] = url
        return True

    def _make(self, mirror: Path, url: str) -> None:
        if (mirror / "HEAD").exists():
            self.git.run(["config", f"remote.{REMOTE}.url", url], git_dir=mirror)
            return
        if mirror.exists():
            shutil.rmtree(mirror)  # a half-made mirror from a crash: start again
        mirror.parent.mkdir(parents=True, exist_ok=True)
        # Made in a side directory and renamed: a crash leaves no HEAD without the config.
        making = mirror.with_name(mirror.name + ".making")
        shutil.rmtree(making, ignore_errors=True)
        self.git.run(["init", "--quiet", "--bare", str(making)])
        for key, value in (
                (f"remote.{REMOTE}.url", url),
                # Origin's branches go to refs/remotes/origin/: a mirror refspec
                # (+refs/*:refs/*) would overwrite, or prune, the runs' local branches.
                (f"remote.{REMOTE}.fetch", f"+refs/heads/*:refs/remotes/{REMOTE}/*"),
                ("gc.auto", "0")):  # no gc racing a worktree add; see the cleanup's prune
            self.git.run(["config", key, value], git_dir=making)
        making.rename(mirror)

    def fetch(self, mirror: Path, url: str, token: str | None,
              cancel: Cancel | None = None) -> None:
        """Fetch every branch of origin with --prune (call with the fetch turn held)."""
        began = time.time()
        clear_stale_ref_locks(mirror)
        # The stamp is written only after a whole fetch: an interrupted one counts for nothing.
        self.git.run(["fetch", "--prune", "--no-tags", "--quiet", REMOTE],
                     git_dir=mirror, env=auth_env(url, token), token=token, cancel=cancel)
        (mirror / FETCH_STAMP).write_text(repr(began))

    @staticmethod
    def last_fetch_began(mirror: Path) -> float:
        """When the last completed fetch of the mirror began (0 if unknown)."""
        try:
            return float((mirror / FETCH_STAMP).read_text())
        except (OSError, ValueError):
            return 0.0

    def fresh(self, mirror: Path, url: str, token: str | None, fresh_after: float | None, *,
              fetch: bool = True, cancel: Cancel | None = None) -> None:
        """Make the mirror if needed, and fetch unless a fetch began after ``fresh_after``
        (default: now). Runs arriving together share one fetch: one that began after they
        were asked for has everything they could expect."""
        asked = time.time() if fresh_after is None else fresh_after
        if not self.ready(mirror, url):
            with self.locks.locked(mirror, cancel=cancel):
                self.ensure(mirror, url)
        if fetch and self.last_fetch_began(mirror) < asked:
            with self.locks.locked(mirror, fetching=True, cancel=cancel):
                if self.last_fetch_began(mirror) < asked:
                    self.fetch(mirror, url, token, cancel)

    def refs(self, mirror: Path, *refs: str) -> set[str]:
        """Which of ``refs`` (full names) exist in the mirror, by one git command."""
        out = self.git.run(["for-each-ref", "--format=%(refname)", *refs],
                           git_dir=mirror).stdout
        return set(out.split()) & set(refs)


def clear_stale_ref_locks(mirror: Path) -> None:
    """Delete the ref lock files a fetch left when it was killed outright (SIGKILL, or the
    runner's own kill -9); git would refuse every later fetch ("File exists"). Called with
    the fetch turn held, when no other fetch runs: only a fetch writes origin's refs, and
    only its --prune (or a branch -D, under the exclusive lock) takes packed-refs.lock."""
    remotes = mirror / "refs" / "remotes"
    stale = [*remotes.rglob("*.lock")] if remotes.is_dir() else []
    for lock in [mirror / "packed-refs.lock", *stale]:
        if lock.is_file():
            log.warning("removing %s, left by a git fetch that was killed", lock)
            lock.unlink(missing_ok=True)
