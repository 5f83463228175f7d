"""A mirror's worktree entries, read from the mirror's side (``<mirror>/worktrees/<id>``):
never from the worktree's ``.git``, which the agent may have replaced or pointed elsewhere.

A run's worktree is locked (what ``git worktree lock`` writes), so a prune never drops one
whose ``.git`` the agent deleted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from runner.workspace.git import HardenedGit


def admin_dir(mirror: Path, path: Path) -> Path | None:
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


def half_made(mirror: Path, path: Path, branch: str) -> bool:
    """A worktree a crash interrupted: files without an admin entry, or an admin entry
    without its directory, not yet on the run's branch, or still being made."""
    admin = admin_dir(mirror, path)
    if admin is None:
        return has_entries(path)
    head = read(admin / "HEAD")
    if head is None:
        return True
    making = read(admin / "locked") == "initializing"  # git's mark during worktree add
    # Made with --no-checkout and not yet checked out: no index yet.
    unfilled = not (admin / "index").exists()
    return not path.is_dir() or head != f"ref: refs/heads/{branch}" or making or unfilled


def branch_holder(mirror: Path, branch: str) -> str | None:
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


def listed(git: HardenedGit, mirror: Path) -> list[dict[str, str]]:
    """``git worktree list --porcelain`` of the mirror, one dict per worktree."""
    out = git.run(["worktree", "list", "--porcelain"], git_dir=mirror).stdout
    entries: list[dict[str, str]] = []
    for block in out.strip().split("\n\n"):
        entry: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(" ")
            entry[key] = value
        if "worktree" in entry:
            entries.append(entry)
    return entries


def remove(git: HardenedGit, mirror: Path, path: Path, branch: str | None, *,
           keep_dir: bool = False) -> None:
    """Remove the worktree at ``path`` (with ``keep_dir``, only what is inside it), its admin
    entry and its local ``branch``; call with the mirror's exclusive lock held."""
    admin = admin_dir(mirror, path)
    if admin is not None:
        (admin / "locked").unlink(missing_ok=True)  # else the prune below keeps it
    if keep_dir:
        empty(path)
    elif admin is not None and path.is_dir():
        # The agent may have replaced the worktree's .git; then git refuses, and the
        # directory goes by hand below, the prune clearing the admin entry.
        git.run(["worktree", "remove", "--force", "--force", str(path)], git_dir=mirror,
                check=False)
    if path.exists() and not keep_dir:
        shutil.rmtree(path, ignore_errors=True)
    git.run(["worktree", "prune"], git_dir=mirror)
    if branch and branch_holder(mirror, branch) is None:
        git.run(["branch", "--quiet", "-D", branch], git_dir=mirror, check=False)


def lock(admin: Path) -> None:
    """Lock a run's worktree (what `git worktree lock` writes): a prune never drops it, even
    when the agent deleted its .git."""
    if read(admin / "locked") in (None, "initializing"):
        (admin / "locked").write_text("a run's worktree\n")


def read(path: Path) -> str | None:
    """The stripped text of ``path``; None when it cannot be read."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def has_entries(path: Path) -> bool:
    """True when ``path`` is a file, or a directory with something in it."""
    if not path.exists() and not path.is_symlink():
        return False
    return not path.is_dir() or path.is_symlink() or any(path.iterdir())


def empty(path: Path) -> None:
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
