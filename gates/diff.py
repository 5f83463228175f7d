"""The diff of a checkout against its base: collected with git, or parsed from patch text.

The checkout may hold uncommitted and untracked files (the pre-push gates look at the agent's
work before the runner commits it), so the diff is taken from the merge base to the working
tree, and untracked files count as wholly added.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from gates.model import Diff, FileDiff, GatesError

# git must never run code the checkout controls: no hooks, no fsmonitor, no external diff
# drivers or textconv filters (a .gitattributes written by the agent could name one).
_SAFE_GIT = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
             "-c", "core.quotePath=false", "-c", "diff.noprefix=false"]
_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
GIT_TIMEOUT_S = 120.0
# Untracked files larger than this are counted as changed but not read line by line.
MAX_UNTRACKED_BYTES = 2_000_000


def _git(repo: Path, *args: str, check: bool = True) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_EXTERNAL_DIFF": "",
           "GIT_CONFIG_NOSYSTEM": "1"}
    try:
        proc = subprocess.run(["git", *_SAFE_GIT, *args], cwd=repo, env=env, capture_output=True,
                              text=True, errors="replace", timeout=GIT_TIMEOUT_S)
    except FileNotFoundError:
        raise GatesError("git is not installed (the gates need it to compute the diff)") from None
    except subprocess.TimeoutExpired:
        raise GatesError(f"git {args[0]} took more than {GIT_TIMEOUT_S:.0f}s in {repo}") from None
    if check and proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["(no message)"])[0]
        raise GatesError(f"git {' '.join(args[:2])} failed in {repo}: {first}")
    return proc.stdout


def _unquote(path: str) -> str:
    """Undo git's C-style quoting of unusual path names ("a\\tb")."""
    if len(path) >= 2 and path[0] == path[-1] == '"':
        return path[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape") \
            .encode("latin-1", "replace").decode("utf-8", "replace")
    return path


def _strip_prefix(path: str) -> str | None:
    path = _unquote(path.strip())
    if path == "/dev/null":
        return None
    return path[2:] if path[:2] in ("a/", "b/") else path


def parse_unified_diff(text: str, base: str = "") -> Diff:
    """Parse ``git diff`` patch text (any context size) into a :class:`Diff`."""
    files: list[FileDiff] = []
    current: dict[str, object] | None = None
    added: list[tuple[int, str]] = []
    removed = 0
    new_line = 0

    def flush() -> None:
        nonlocal added, removed
        if current is not None:
            path = current.get("new") or current.get("old") or current.get("header") or "?"
            files.append(FileDiff(path=str(path), status=str(current.get("status", "M")),
                                  added=tuple(added), removed_count=removed,
                                  old_path=str(current["old"]) if current.get("old") else None))
        added, removed = [], 0

    in_hunk = False
    for line in text.splitlines():
        if line.startswith("diff --git "):
            flush()
            header = line[len("diff --git "):]
            # "a/x b/x": good enough for the fallback name; ---/+++ lines give the real ones.
            guess = header.split(" b/", 1)[-1] if " b/" in header else header
            current = {"header": _unquote(guess), "status": "M"}
            in_hunk = False
            continue
        if current is None:
            continue
        if not in_hunk:  # headers come before the first hunk of each file
            if line.startswith("new file mode"):
                current["status"] = "A"
            elif line.startswith("deleted file mode"):
                current["status"] = "D"
            elif line.startswith("rename from "):
                current["old"] = _unquote(line[len("rename from "):])
                current["status"] = "R"
            elif line.startswith("rename to "):
                current["new"] = _unquote(line[len("rename to "):])
            elif line.startswith("Binary files "):
                current["status"] = "B" if current.get("status") == "M" else current["status"]
            elif line.startswith("--- "):
                old = _strip_prefix(line[4:])
                if old and "old" not in current:
                    current["old"] = old
            elif line.startswith("+++ "):
                new = _strip_prefix(line[4:])
                if new:
                    current["new"] = new
                continue
        match = _HUNK.match(line)
        if match:
            in_hunk = True
            new_line = int(match.group(2))
            continue
        if not in_hunk:
            continue
        if line.startswith("+"):
            added.append((new_line, line[1:]))
            new_line += 1
        elif line.startswith("-"):
            removed += 1
        elif line.startswith(" "):
            new_line += 1
    flush()
    # A deletion's "old" path is its only path; a modification's old path is not a rename.
    cleaned = []
    for f in files:
        old = f.old_path if f.status == "R" else None
        cleaned.append(FileDiff(f.path, f.status, f.added, f.removed_count, old))
    return Diff(base=base, files=tuple(cleaned))


def merge_base(repo: Path, base: str) -> str:
    """The commit the branch forked from ``base``; ``base`` itself if there is no common one."""
    _git(repo, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
    out = _git(repo, "merge-base", base, "HEAD", check=False).strip()
    return out or base


def collect_diff(repo: str | os.PathLike[str], base: str) -> Diff:
    """The diff from the merge base of ``base`` and HEAD to the working tree, untracked included.

    Raises GatesError when ``repo`` is not a git checkout or ``base`` is unknown.
    """
    path = Path(repo)
    if not path.is_dir():
        raise GatesError(f"{path} is not a directory")
    inside = _git(path, "rev-parse", "--is-inside-work-tree", check=False).strip()
    if inside != "true":
        raise GatesError(f"{path} is not a git checkout (run the gates inside a clone)")
    check = subprocess.run(["git", *_SAFE_GIT, "rev-parse", "--verify", "--quiet",
                            f"{base}^{{commit}}"], cwd=path, capture_output=True, text=True,
                           timeout=GIT_TIMEOUT_S)
    if check.returncode != 0:
        raise GatesError(f"base {base!r} is not a commit in {path} (fetch it first, e.g. "
                         f"`git fetch origin {base.removeprefix('origin/')}`, or pass --base)")
    fork = merge_base(path, base)
    patch = _git(path, "diff", "--no-color", "--no-ext-diff", "--no-textconv", "--unified=0",
                 "--find-renames", fork, "--")
    diff = parse_unified_diff(patch, base=base)
    files = list(diff.files)
    untracked = _git(path, "ls-files", "--others", "--exclude-standard", "-z").split("\0")
    for name in filter(None, untracked):
        files.append(_untracked(path, name))
    return Diff(base=base, files=tuple(files))


def _untracked(repo: Path, name: str) -> FileDiff:
    file = repo / name
    try:
        if file.is_symlink() or not file.is_file() or file.stat().st_size > MAX_UNTRACKED_BYTES:
            return FileDiff(path=name, status="A")
        data = file.read_bytes()
    except OSError:
        return FileDiff(path=name, status="A")
    if b"\0" in data[:8192]:
        return FileDiff(path=name, status="B")
    lines = data.decode("utf-8", "replace").splitlines()
    return FileDiff(path=name, status="A", added=tuple(enumerate(lines, start=1)))
