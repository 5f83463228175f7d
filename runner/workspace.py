"""Workspaces: a warm bare mirror per repository and a git worktree per run.

Layout under the data directory::

    mirrors/<owner>/<name>.git        bare repository; origin's branches under refs/remotes/origin/
    mirrors/<owner>/<name>.git.lock   fcntl lock: exclusive to create or prune the mirror,
                                      shared to fetch, check out, commit and push
    mirrors/<owner>/<name>.git.fetch.lock   fetches and pushes take turns here
    mirrors/<owner>/<name>.git.gate   a turnstile: a process waiting for the exclusive lock
                                      holds it, so shared holders cannot starve it
    mirrors/<owner>/<name>.git.add.lock   worktree entries are made one at a time here
    worktrees/<run_id>/               the run's working files, on branch orchestrator/issue-<n>

A run's worktree may be an empty directory first (a warm sandbox's workspace, mounted
before the run existed); it is filled in place, never replaced. Run worktrees are locked, so
a prune never drops one whose ``.git`` the agent deleted.

The worktree is handed to an untrusted agent. Every git command the runner runs for it names
the run's git directory inside the mirror explicitly (``GIT_DIR``/``GIT_WORK_TREE``), turns
hooks and fsmonitor off, and never reads the ``.git`` entry in the worktree, which the agent
may have replaced. The forge token reaches git only through an ``http.<url>.extraheader``
passed in the environment of the one command that needs it: it is never written to a config
file, a remote URL, a command line or a log.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import git

from gates.diff import NAME_STATUS, diff_from_git
from gates.model import Diff
from gates.safegit import DIFF_FLAGS, git_argv, git_env
from runner import process
from runner.model import branch_name
from runner.process import Cancel

log = logging.getLogger(__name__)

REMOTE = "origin"
FETCH_STAMP = "orchestrator-fetch-began"  # in the mirror: when its last completed fetch began


class WorkspaceError(Exception):
    """A git operation on a mirror or worktree failed; the message says what to do."""


class Interrupted(WorkspaceError):
    """The run's cancel event stopped a git command (or a wait for the mirror's lock).

    The git process group was stopped and every lock released; a worktree left half-made
    is made again by the next ``prepare``, a fetch left half-done is redone by the next one.
    """


@dataclass(frozen=True)
class Identity:
    """Who the runner's commits are by (the bot account)."""

    name: str = "orchestrator[bot]"
    email: str = "orchestrator-bot@users.noreply.localhost"


@dataclass(frozen=True)
class Worktree:
    """One run's checkout. ``git_dir`` is inside the mirror, out of the agent's reach."""

    run_id: str
    repo: str  # owner/name
    issue: int
    path: Path
    branch: str
    git_dir: Path
    mirror: Path
    base_branch: str
    resumed: bool = False  # cut from the remote branch of an earlier run


@dataclass(frozen=True)
class WorktreeInfo:
    """A worktree found on disk, for cleanup."""

    run_id: str
    repo: str
    path: Path
    branch: str | None


def _auth_env(url: str, token: str | None) -> dict[str, str]:
    """Config, by environment variables, that sends the token to ``url``'s host only."""
    if not token:
        return {}
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return {}  # file and local paths need no token; ssh uses keys
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"http.{parts.scheme}://{parts.netloc}/.extraheader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
    }


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and (parts.username or parts.password):
        raise WorkspaceError(
            f"the repository URL for {parts.hostname} carries credentials; give the URL "
            "without them and pass the token separately (it must never be stored in a URL)"
        )


def _base_env() -> dict[str, str]:
    """The runner's environment without anything that would redirect or reconfigure git."""
    return {**git_env(), "LC_ALL": "C"}


class Workspaces:
    """Mirrors and worktrees under one data directory."""

    def __init__(self, data_dir: str | Path, *, identity: Identity | None = None,
                 lock_timeout: float = 960.0, git_timeout: float = 900.0) -> None:
        # Resolved: git records real paths, and the admin lookup compares them.
        self.root = Path(data_dir).resolve()
        self.mirrors = self.root / "mirrors"
        self.worktrees = self.root / "worktrees"
        self.identity = identity or Identity()
        self.lock_timeout = lock_timeout
        self.git_timeout = git_timeout
        self._checked: dict[Path, str] = {}  # mirror -> the origin URL it was checked to have
        # (mirror, branch, file) -> (the mirror's fetch stamp when read, the text or None)
        self._base_files: dict[tuple[Path, str, str], tuple[float, str | None]] = {}

    # ------------------------------------------------------------------ plumbing

    def _git(self, args: Iterable[str], *, git_dir: Path | None = None,
             work_tree: Path | None = None, env: dict[str, str] | None = None,
             token: str | None = None, check: bool = True, ok_codes: tuple[int, ...] = (0,),
             cancel: Cancel | None = None,
             errors: str = "surrogateescape") -> subprocess.CompletedProcess[str]:
        """Run git with an explicit repository and the safe flags (``gates.safegit``);
        WorkspaceError on failure, Interrupted when ``cancel`` is set while it runs (its
        process group is stopped). Output that is not UTF-8 (a path the agent named so) keeps
        its bytes as surrogates by default, so a path read back names the same file."""
        full_env = _base_env()
        if git_dir is not None:
            full_env["GIT_DIR"] = str(git_dir)
        if work_tree is not None:
            full_env["GIT_WORK_TREE"] = str(work_tree)
        full_env.update(env or {})
        argv = git_argv(*args)
        try:
            proc = process.run(argv, env=full_env, cwd=str(work_tree or git_dir or self.root),
                               timeout=self.git_timeout, cancel=cancel, errors=errors)
        except process.ProcessInterrupted:
            raise Interrupted(f"git {_shown(args)} was stopped: the run was cancelled") from None
        except FileNotFoundError:
            raise WorkspaceError("git is not installed (apt-get install git)") from None
        except subprocess.TimeoutExpired:
            raise WorkspaceError(
                f"git {_shown(args)} took over {self.git_timeout:.0f}s; check the network "
                "and the size of the repository") from None
        if check and proc.returncode not in ok_codes:
            detail = (proc.stderr or proc.stdout).strip()
            if token:
                detail = detail.replace(token, "***")
            raise WorkspaceError(f"git {_shown(args)} failed (exit {proc.returncode}): "
                                 f"{detail[-2000:]}")
        return proc

    @contextlib.contextmanager
    def _locked(self, mirror: Path, timeout: float | None = None, *,
                shared: bool = False, fetching: bool = False,
                cancel: Cancel | None = None) -> Iterator[None]:
        """Hold the mirror's lock (fcntl locks: released even when the process dies).

        Exclusive for what changes the mirror as a whole (its creation, a prune, the spare);
        ``shared`` for work on one run's own worktree, so runs check out side by side;
        ``fetching`` for a fetch or a push: shared, plus a second lock they take in turn
        (a fetch never waits for checkouts to finish, only for another fetch or push).
        Everyone passes a turnstile first, which a process waiting for the exclusive lock
        holds: runs arriving meanwhile queue behind it instead of starving it.
        """
        deadline = time.monotonic() + (self.lock_timeout if timeout is None else timeout)
        gate = self._acquire(mirror.with_name(mirror.name + ".gate"), deadline, cancel=cancel)
        try:
            main = self._acquire(mirror.with_name(mirror.name + ".lock"), deadline,
                                 shared=shared or fetching, cancel=cancel)
        finally:
            os.close(gate)
        try:
            if fetching:
                turn = self._acquire(mirror.with_name(mirror.name + ".fetch.lock"),
                                     deadline, cancel=cancel)
                try:
                    yield
                finally:
                    os.close(turn)
            else:
                yield
        finally:
            os.close(main)  # closing releases the lock

    @contextlib.contextmanager
    def _adding(self, mirror: Path, cancel: Cancel | None = None) -> Iterator[None]:
        """Make worktree entries one at a time. Git reads every entry of the mirror when it
        makes one or switches a worktree's branch, and fails on one another git is half-way
        through writing ("failed to read .../commondir")."""
        fd = self._acquire(mirror.with_name(mirror.name + ".add.lock"),
                           time.monotonic() + self.lock_timeout, cancel=cancel)
        try:
            yield
        finally:
            os.close(fd)

    @staticmethod
    def _acquire(lock_path: Path, deadline: float, *, shared: bool = False,
                 cancel: Cancel | None = None) -> int:
        """An open descriptor holding an fcntl lock on ``lock_path``; WorkspaceError once
        ``deadline`` (monotonic) passes, Interrupted when ``cancel`` is set meanwhile."""
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if cancel is not None and cancel.is_set():
                    os.close(fd)
                    raise Interrupted(f"stopped waiting for {lock_path}: the run was "
                                      "cancelled") from None
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise WorkspaceError(
                        f"{lock_path} stayed locked too long: another run is fetching or "
                        "changing this mirror; retry later") from None
                time.sleep(0.02)

    def mirror_path(self, repo: str) -> Path:
        """Where ``owner/name``'s bare mirror lives."""
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo) or ".." in repo:
            raise WorkspaceError(f"{repo!r} is not a repository name (expected owner/name)")
        owner, name = repo.split("/")
        return self.mirrors / owner / f"{name}.git"

    # ------------------------------------------------------------------ mirrors

    def sync_mirror(self, repo: str, url: str, *, token: str | None = None,
                    cancel: Cancel | None = None) -> Path:
        """Create the mirror if needed and fetch every branch of ``url`` (with --prune).
        Interrupted when ``cancel`` is set meanwhile (as for every method taking it)."""
        _check_url(url)
        mirror = self.mirror_path(repo)
        with self._locked(mirror, cancel=cancel):
            self._ensure_mirror(mirror, url)
            self._fetch(mirror, url, token, cancel)
        return mirror

    def _ensure_mirror(self, mirror: Path, url: str) -> None:
        if not self._mirror_ready(mirror, url):
            self._make_mirror(mirror, url)
            self._checked[mirror] = url

    def _mirror_ready(self, mirror: Path, url: str) -> bool:
        """The mirror exists with ``url`` as its origin (read without the lock: a read)."""
        if not (mirror / "HEAD").exists():
            return False
        if self._checked.get(mirror) != url:  # once per process: it costs a git process
            got = self._git(["config", "--get", f"remote.{REMOTE}.url"], git_dir=mirror,
                            check=False).stdout.strip()
            if got != url:
                return False
            self._checked[mirror] = url
        return True

    def _make_mirror(self, mirror: Path, url: str) -> None:
        if not (mirror / "HEAD").exists():
            if mirror.exists():
                shutil.rmtree(mirror)  # a half-made mirror from a crash: start again
            repo = git.Repo.init(mirror, bare=True, mkdir=True)
            with repo.config_writer() as cfg:
                # Origin's branches go to refs/remotes/origin/: a mirror refspec
                # (+refs/*:refs/*) would overwrite, or prune, the runs' local branches.
                cfg.set_value(f'remote "{REMOTE}"', "url", url)
                cfg.set_value(f'remote "{REMOTE}"', "fetch",
                              f"+refs/heads/*:refs/remotes/{REMOTE}/*")
                cfg.set_value("gc", "auto", "0")  # no gc racing a worktree add; see prune
            repo.close()
            return
        repo = git.Repo(mirror)
        try:
            if repo.remotes[REMOTE].url != url:
                with repo.config_writer() as cfg:
                    cfg.set_value(f'remote "{REMOTE}"', "url", url)
        finally:
            repo.close()

    def _fetch(self, mirror: Path, url: str, token: str | None,
               cancel: Cancel | None = None) -> None:
        began = time.time()
        _clear_stale_ref_locks(mirror)
        # The stamp is written only after a whole fetch: an interrupted one counts for nothing.
        self._git(["fetch", "--prune", "--no-tags", "--quiet", REMOTE],
                  git_dir=mirror, env=_auth_env(url, token), token=token, cancel=cancel)
        (mirror / FETCH_STAMP).write_text(repr(began))

    @staticmethod
    def _last_fetch_began(mirror: Path) -> float:
        """When the last completed fetch of the mirror began (0 if unknown)."""
        try:
            return float((mirror / FETCH_STAMP).read_text())
        except (OSError, ValueError):
            return 0.0

    # ------------------------------------------------------------------ worktrees

    def _fresh_mirror(self, mirror: Path, url: str, token: str | None,
                      fresh_after: float | None, *, fetch: bool = True,
                      cancel: Cancel | None = None) -> None:
        """Make the mirror if needed, and fetch unless a fetch began after ``fresh_after``
        (default: now). Runs arriving together share one fetch: one that began after they
        were asked for has everything they could expect."""
        asked = time.time() if fresh_after is None else fresh_after
        if not self._mirror_ready(mirror, url):
            with self._locked(mirror, cancel=cancel):
                self._ensure_mirror(mirror, url)
        if fetch and self._last_fetch_began(mirror) < asked:
            with self._locked(mirror, fetching=True, cancel=cancel):
                if self._last_fetch_began(mirror) < asked:
                    self._fetch(mirror, url, token, cancel)

    def base_file(self, repo: str, url: str, base_branch: str, name: str, *,
                  token: str | None = None, fresh_after: float | None = None,
                  cancel: Cancel | None = None) -> str | None:
        """The text of file ``name`` on the remote's ``base_branch`` (fetched as ``prepare``
        does), or None when the branch has no such file."""
        _check_url(url)
        mirror = self.mirror_path(repo)
        self._fresh_mirror(mirror, url, token, fresh_after, cancel=cancel)
        key = (mirror, base_branch, name)
        stamp = self._last_fetch_began(mirror)
        cached = self._base_files.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]  # no fetch since: the base branch is where it was
        with self._locked(mirror, shared=True, cancel=cancel):
            stamp = self._last_fetch_began(mirror)
            proc = self._git(["cat-file", "blob", f"refs/remotes/{REMOTE}/{base_branch}:{name}"],
                             git_dir=mirror, check=False, cancel=cancel)
        text = proc.stdout if proc.returncode == 0 else None
        self._base_files[key] = (stamp, text)
        return text

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
        leaves half-made is made again by the next call.
        """
        _check_url(url)
        mirror = self.mirror_path(repo)
        branch = branch_name(issue)
        path = self.worktree_path(run_id)
        self._fresh_mirror(mirror, url, token, fresh_after, fetch=fetch, cancel=cancel)
        if self._half_made(mirror, path, branch):
            with self._locked(mirror, cancel=cancel):
                if self._half_made(mirror, path, branch):
                    # Left by a crash. The directory itself stays: a warm sandbox may
                    # already have it mounted as its /workspace.
                    self._remove_locked(mirror, path, None, keep_dir=path.is_dir())
        existing = self._admin_dir(mirror, path)
        if existing is not None:
            _lock(existing)  # made before worktrees were locked
            return Worktree(run_id, repo, issue, path, branch, existing, mirror, base_branch,
                            resumed=True)
        # Runs labelled together check out together.
        with self._locked(mirror, shared=True, cancel=cancel):
            holder = self._branch_holder(mirror, branch)
            if holder is not None:
                raise WorkspaceError(
                    f"branch {branch} is checked out by another worktree ({holder}); remove "
                    "that run's workspace first (Workspaces.remove_orphans cleans up runs "
                    "that are no longer live)")
            remote_branch = f"refs/remotes/{REMOTE}/{branch}"
            base = f"refs/remotes/{REMOTE}/{base_branch}"
            known = self._refs(mirror, remote_branch, base)
            resumed = remote_branch in known
            start = remote_branch if resumed else base
            if start not in known:
                raise WorkspaceError(
                    f"{repo} has no branch {base_branch!r} at {url}; set base_branch for this "
                    "repository in orchestrator.yml")
            self.worktrees.mkdir(parents=True, exist_ok=True)
            took_spare = self._take_spare(mirror, repo, path, branch, start, cancel)
            if not took_spare:
                # -B: a local branch left by an earlier, removed run is reset to the start.
                # An empty directory at ``path`` (a warm sandbox's workspace) is filled.
                # Only the entry is made in turn; the files are checked out side by side.
                with self._adding(mirror, cancel):
                    self._git(["worktree", "add", "--quiet", "--no-checkout", "--no-track",
                               "-B", branch, str(path), start], git_dir=mirror, cancel=cancel)
            admin = self._admin_dir(mirror, path)
            if admin is None:
                raise WorkspaceError(f"git worktree add made {path} but the mirror {mirror} "
                                     "does not list it; remove both and retry")
            if not took_spare:
                self._git(["reset", "--hard", "--quiet"], git_dir=admin, work_tree=path,
                          cancel=cancel)
            _lock(admin)
        return Worktree(run_id, repo, issue, path, branch, admin, mirror, base_branch, resumed)

    # ------------------------------------------------------------------ spare worktrees

    def spare_path(self, repo: str) -> Path:
        """Where ``repo``'s spare worktree waits (outside ``worktrees/``: it is no run's)."""
        mirror = self.mirror_path(repo)
        return self.root / "spares" / mirror.parent.name / mirror.name.removesuffix(".git")

    def fill_spare(self, repo: str, base_branch: str = "main") -> bool:
        """Check out a spare worktree of the base branch ahead of time, so the next run of
        ``repo`` gets its worktree by a rename and a branch switch instead of writing every
        file while it waits. True when a spare is ready; WorkspaceError when the mirror is
        busy (the refill is skipped then, not queued)."""
        mirror = self.mirror_path(repo)
        if not (mirror / "HEAD").exists():
            return False
        path = self.spare_path(repo)
        start = f"refs/remotes/{REMOTE}/{base_branch}"
        # Never wait behind runs being prepared: when the mirror is busy, skip this refill.
        with self._locked(mirror, timeout=0):
            for leftover in path.parent.glob(f"{path.name}.taken-*"):  # a take cut by a crash
                shutil.rmtree(leftover, ignore_errors=True)
            if self._admin_dir(mirror, path) is not None and path.is_dir():
                return True
            if path.exists() or self._admin_dir(mirror, path) is not None:
                self._remove_locked(mirror, path, None)
            if not self._has_ref(mirror, start):
                return False
            path.parent.mkdir(parents=True, exist_ok=True)
            self._git(["worktree", "add", "--quiet", "--detach", str(path), start],
                      git_dir=mirror)
        return True

    def _take_spare(self, mirror: Path, repo: str, path: Path, branch: str, start: str,
                    cancel: Cancel | None = None) -> bool:
        """Move the spare's files (if one is ready) into ``path`` on ``branch`` at ``start``;
        only files that differ between the spare's commit and ``start`` are rewritten. Runs
        under the shared lock: the rename that takes the spare lets one run alone have it."""
        spare = self.spare_path(repo)
        admin = self._admin_dir(mirror, spare) if spare.is_dir() else None
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
            with self._adding(mirror, cancel):  # -B reads every worktree entry: see _adding
                self._git(["checkout", "--quiet", "--no-track", "-B", branch, start],
                          git_dir=admin, work_tree=path, cancel=cancel)
            _lock(admin)
        except Interrupted:
            # A kill, not a broken spare: the half-switched entry is the run's now, and the
            # next prepare finds it half-made (not on the run's branch) and makes it again.
            raise
        except (WorkspaceError, OSError) as exc:
            log.warning("spare worktree of %s unusable (%s); checking out afresh", repo, exc)
            shutil.rmtree(taken, ignore_errors=True)
            shutil.rmtree(admin, ignore_errors=True)  # the spare's own: no prune needed
            _empty(path)
            return False
        return True

    def open(self, run_id: str, repo: str, issue: int, *, base_branch: str = "main"
             ) -> Worktree | None:
        """The run's existing worktree (after a restart), or None."""
        mirror = self.mirror_path(repo)
        path = self.worktrees / run_id
        admin = self._admin_dir(mirror, path) if mirror.exists() else None
        if admin is None or not path.is_dir():
            return None
        return Worktree(run_id, repo, issue, path, branch_name(issue), admin, mirror,
                        base_branch, resumed=True)

    def _half_made(self, mirror: Path, path: Path, branch: str) -> bool:
        """A worktree a crash interrupted: files without an admin entry, or an admin entry
        without its directory, not yet on the run's branch, or still being made."""
        admin = self._admin_dir(mirror, path)
        if admin is None:
            return _has_entries(path)
        head = _read(admin / "HEAD")
        if head is None:
            return True
        making = _read(admin / "locked") == "initializing"  # git's mark during worktree add
        # Made with --no-checkout and not yet checked out: no index yet.
        unfilled = not (admin / "index").exists()
        return (not path.is_dir() or head != f"ref: refs/heads/{branch}" or making
                or unfilled)

    def _admin_dir(self, mirror: Path, path: Path) -> Path | None:
        """The worktree's git directory, found from the mirror's side, never from its .git."""
        admin_root = mirror / "worktrees"
        if not admin_root.is_dir():
            return None
        want = path.resolve() / ".git"  # never resolve .git itself: the agent may own it
        for admin in admin_root.iterdir():
            try:
                points_to = Path((admin / "gitdir").read_text().strip())
            except OSError:
                continue
            if points_to == want:
                return admin
        return None

    def _has_ref(self, mirror: Path, ref: str) -> bool:
        return ref in self._refs(mirror, ref)

    def _refs(self, mirror: Path, *refs: str) -> set[str]:
        """Which of ``refs`` (full names) exist in the mirror, by one git command."""
        out = self._git(["for-each-ref", "--format=%(refname)", *refs], git_dir=mirror).stdout
        return set(out.split()) & set(refs)

    def _worktree_list(self, mirror: Path) -> list[dict[str, str]]:
        out = self._git(["worktree", "list", "--porcelain"], git_dir=mirror).stdout
        entries: list[dict[str, str]] = []
        for block in out.strip().split("\n\n"):
            entry: dict[str, str] = {}
            for line in block.splitlines():
                key, _, value = line.partition(" ")
                entry[key] = value
            if "worktree" in entry:
                entries.append(entry)
        return entries

    def _branch_holder(self, mirror: Path, branch: str) -> str | None:
        """The worktree that has ``branch`` checked out, read from the mirror's side."""
        admin_root = mirror / "worktrees"
        if not admin_root.is_dir():
            return None
        want = f"ref: refs/heads/{branch}"
        for admin in admin_root.iterdir():
            try:
                if (admin / "HEAD").read_text().strip() == want:
                    return str(Path((admin / "gitdir").read_text().strip()).parent)
            except OSError:
                continue
        return None

    # ------------------------------------------------------------------ commit, check, push

    def _wt_git(self, wt: Worktree, args: Iterable[str], **kw: object
                ) -> subprocess.CompletedProcess[str]:
        return self._git(args, git_dir=wt.git_dir, work_tree=wt.path, **kw)  # type: ignore[arg-type]

    def commit(self, wt: Worktree, message: str | None = None, *,
               cancel: Cancel | None = None) -> str | None:
        """Commit every change in the worktree as the bot; the new SHA, or None if clean.

        The message always references the issue. Nested repositories the agent created are
        left out (git would record them as submodule pointers, not as files).
        """
        if not self._admin_dir(wt.mirror, wt.path):
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
        with self._locked(wt.mirror, shared=True, cancel=cancel):
            nested = _nested_repos(wt.path)
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
        with self._locked(wt.mirror, shared=True):
            self._wt_git(wt, ["reset", "--quiet", "--mixed", sha])

    def head(self, wt: Worktree) -> str:
        """The SHA the run's branch points at."""
        return self._git(["rev-parse", f"refs/heads/{wt.branch}"],
                         git_dir=wt.mirror).stdout.strip()

    def changed_files(self, wt: Worktree) -> list[str]:
        """Paths the branch changes relative to the base branch (committed changes)."""
        base = f"refs/remotes/{REMOTE}/{wt.base_branch}"
        out = self._git(["diff", "--name-only", "-z", f"{base}...refs/heads/{wt.branch}"],
                        git_dir=wt.mirror).stdout
        return [p for p in out.split("\0") if p]

    def diff(self, wt: Worktree, *, cancel: Cancel | None = None) -> str:
        """The branch's committed diff against the base branch (for the reviewer)."""
        base = f"refs/remotes/{REMOTE}/{wt.base_branch}"
        return self._git(["diff", *DIFF_FLAGS, f"{base}...refs/heads/{wt.branch}"],
                         git_dir=wt.mirror, errors="replace", cancel=cancel).stdout

    def changes(self, wt: Worktree, *, cancel: Cancel | None = None) -> Diff:
        """The files the branch's commits change against the base branch, as git names them
        (for the pre-push gates: ``gates.diff.diff_from_git``)."""
        span = f"refs/remotes/{REMOTE}/{wt.base_branch}...refs/heads/{wt.branch}"
        names = self._git(["diff", *NAME_STATUS, span], git_dir=wt.mirror, cancel=cancel).stdout
        patch = self._git(["diff", *DIFF_FLAGS, "--find-renames", "--find-copies", span],
                          git_dir=wt.mirror, cancel=cancel).stdout
        return diff_from_git(names, patch, base=wt.base_branch)

    def conflicts(self, wt: Worktree, *, url: str | None = None, token: str | None = None,
                  cancel: Cancel | None = None) -> list[str]:
        """Paths that conflict between the run's branch and the latest base branch.

        Fetches first when ``url`` is given. An empty list means the branch merges cleanly.
        """
        _require_merge_tree()
        if url is not None:
            _check_url(url)
            with self._locked(wt.mirror, fetching=True, cancel=cancel):
                self._fetch(wt.mirror, url, token, cancel)
        with self._locked(wt.mirror, shared=True, cancel=cancel):
            proc = self._git(["merge-tree", "--write-tree", "--name-only", "--no-messages",
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
        _check_url(url)
        sha = self.head(wt)
        ref = f"refs/heads/{wt.branch}"
        spec = f"{'+' if force else ''}{ref}:{ref}"
        # In turn with fetches: a fetch --prune would race the update-ref below.
        with self._locked(wt.mirror, fetching=True, cancel=cancel):
            self._git(["push", "--quiet", "--no-verify", url, spec], git_dir=wt.mirror,
                      env=_auth_env(url, token), token=token, cancel=cancel)
            # Record what the remote now has, so a resumed run starts from it.
            self._git(["update-ref", f"refs/remotes/{REMOTE}/{wt.branch}", sha],
                      git_dir=wt.mirror)
        return sha

    # ------------------------------------------------------------------ cleanup

    def remove(self, wt: Worktree) -> None:
        """Remove the worktree, its admin entry and its local branch. Safe to call twice."""
        if not wt.mirror.exists():
            shutil.rmtree(wt.path, ignore_errors=True)
            return
        with self._locked(wt.mirror):
            self._remove_locked(wt.mirror, wt.path, wt.branch)

    def _remove_locked(self, mirror: Path, path: Path, branch: str | None, *,
                       keep_dir: bool = False) -> None:
        """Remove the worktree at ``path`` (with ``keep_dir``, only what is inside it)."""
        admin = self._admin_dir(mirror, path)
        if admin is not None:
            (admin / "locked").unlink(missing_ok=True)  # else the prune below keeps it
        if keep_dir:
            _empty(path)
        elif admin is not None and path.is_dir():
            # The agent may have replaced the worktree's .git; then git refuses, and the
            # directory goes by hand below, the prune clearing the admin entry.
            self._git(["worktree", "remove", "--force", "--force", str(path)],
                      git_dir=mirror, check=False)
        if path.exists() and not keep_dir:
            shutil.rmtree(path, ignore_errors=True)
        self._git(["worktree", "prune"], git_dir=mirror)
        if branch and self._branch_holder(mirror, branch) is None:
            self._git(["branch", "--quiet", "-D", branch], git_dir=mirror, check=False)

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
            for entry in self._worktree_list(mirror):
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
                with self._locked(mirror):
                    self._remove_locked(mirror, info.path, info.branch)
            else:
                shutil.rmtree(info.path, ignore_errors=True)
            removed.append(info.run_id)
        return removed


def _lock(admin: Path) -> None:
    """Lock a run's worktree (what `git worktree lock` writes): a prune never drops it, even
    when the agent deleted its .git."""
    if _read(admin / "locked") in (None, "initializing"):
        (admin / "locked").write_text("a run's worktree\n")


def _clear_stale_ref_locks(mirror: Path) -> None:
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


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _has_entries(path: Path) -> bool:
    """True when ``path`` is a file, or a directory with something in it."""
    if not path.exists() and not path.is_symlink():
        return False
    return not path.is_dir() or path.is_symlink() or any(path.iterdir())


def _empty(path: Path) -> None:
    """Delete what is inside the directory ``path``, keeping the directory (its inode)."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
        return
    if not path.is_dir():
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _nested_repos(root: Path) -> list[str]:
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


def _shown(args: Iterable[str]) -> str:
    """A git command for a message: the subcommand and its first arguments."""
    return " ".join(list(args)[:3])


_MERGE_TREE_OK: bool | None = None


def _require_merge_tree() -> None:
    global _MERGE_TREE_OK
    if _MERGE_TREE_OK is None:
        out = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout
        match = re.search(r"(\d+)\.(\d+)", out)
        _MERGE_TREE_OK = match is not None and (int(match[1]), int(match[2])) >= (2, 38)
    if not _MERGE_TREE_OK:
        raise WorkspaceError("the conflict check needs git 2.38 or newer "
                             "(git merge-tree --write-tree); upgrade git")
