"""Real git answers about pull requests, for the forge emulator: where a line sits in the
pull request's diff (GitHub's ``diff_hunk`` and ``position``), whether the pull request merges
cleanly into its base as the base is now (``git merge-tree``), and the merge itself.

The diff is the one both forges show: from the merge base of the base branch and the head.
"""

from __future__ import annotations

import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from runner.testing import forge_git
from runner.testing.forge_state import EmulatorError, Issue, Repo, User

_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")
_clean: dict[tuple[str, str, str], bool] = {}  # (git dir, base, head) -> merges cleanly
_clean_lock = threading.Lock()


@dataclass(frozen=True)
class Anchor:
    """Where a commented line sits in a file's diff."""

    diff_hunk: str  # the hunk's header and its lines down to the commented one
    position: int  # lines below the file's first hunk header (GitHub's ``position``)


def base_tip(repo: Repo, pull_base: str, fallback: str) -> str:
    """The SHA the base branch points at now (``fallback`` when it is gone)."""
    return forge_git.refs(repo.git_dir).get(pull_base, fallback)


def file_diff(git_dir: Path, base_sha: str, head_sha: str, path: str) -> list[str]:
    """The lines of ``path``'s diff from the merge base to ``head_sha``, from its first hunk
    header on (empty when the pull request does not change the file)."""
    merge_base = forge_git.git("merge-base", base_sha, head_sha, cwd=git_dir,
                               check=False).strip() or base_sha
    text = forge_git.git("diff", "--no-color", "--no-ext-diff", "-U3", merge_base, head_sha,
                         "--", path, cwd=git_dir)
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("@@")), len(lines))
    return lines[first:]


def anchor(lines: list[str], line: int, side: str = "RIGHT") -> Anchor | None:
    """Where new-file line ``line`` (``side`` RIGHT) or old-file line (LEFT) is in the diff
    ``lines``; None when the diff does not show it."""
    position, start, old, new = 0, 0, 0, 0
    for index, text in enumerate(lines):
        header = _HUNK.match(text)
        if header is not None:
            if index > 0:  # later hunk headers count as positions, the first does not
                position += 1
            start, old, new = index, int(header.group(1)), int(header.group(2))
            continue
        position += 1
        kind = text[:1]
        if kind == "\\":  # "\ No newline at end of file"
            continue
        this_old, this_new = old, new
        if kind in (" ", "+"):
            new += 1
        if kind in (" ", "-"):
            old += 1
        if (side == "RIGHT" and kind in (" ", "+") and this_new == line) or (
                side == "LEFT" and kind in (" ", "-") and this_old == line):
            return Anchor("\n".join(lines[start:index + 1]), position)
    return None


def merges_cleanly(git_dir: Path, base_sha: str, head_sha: str) -> bool:
    """True when merging ``head_sha`` into ``base_sha`` has no conflict (cached per pair)."""
    key = (str(git_dir), base_sha, head_sha)
    with _clean_lock:
        if key in _clean:
            return _clean[key]
    done = subprocess.run(["git", "merge-tree", "--write-tree", "--no-messages", base_sha,
                           head_sha], cwd=git_dir, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"git merge-tree failed: {done.stderr.strip()}")
    with _clean_lock:
        _clean[key] = done.returncode == 0
    return done.returncode == 0


def mergeable(repo: Repo, issue: Issue) -> bool:
    """Whether the open pull request merges cleanly into its base as the base is now."""
    pull = issue.pull
    assert pull is not None
    if issue.state != "open" or pull.merged:
        return False
    return merges_cleanly(repo.git_dir, base_tip(repo, pull.base, pull.base_sha),
                          pull.head_sha)


def merge(repo: Repo, issue: Issue, user: User, message: str) -> str:
    """Merge the pull request's head into its base with a merge commit by ``user``; returns
    the commit's SHA. 405 when it conflicts (both forges refuse the merge then)."""
    pull = issue.pull
    assert pull is not None
    base = base_tip(repo, pull.base, pull.base_sha)
    done = subprocess.run(["git", "merge-tree", "--write-tree", "--no-messages", base,
                           pull.head_sha], cwd=repo.git_dir, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise EmulatorError(405, "Pull Request is not mergeable")
    tree = done.stdout.split()[0]
    env = {"GIT_AUTHOR_NAME": user.login, "GIT_AUTHOR_EMAIL": user.email,
           "GIT_COMMITTER_NAME": user.login, "GIT_COMMITTER_EMAIL": user.email}
    sha = forge_git.git("commit-tree", tree, "-p", base, "-p", pull.head_sha, "-m", message,
                        cwd=repo.git_dir, env=env).strip()
    forge_git.git("update-ref", f"refs/heads/{pull.base}", sha, base, cwd=repo.git_dir)
    return sha
