"""The diff of a checkout against its base: collected with git, or parsed from patch text.

The checkout may hold uncommitted and untracked files (the pre-push gates look at the agent's
work before the runner commits it), so the diff is taken from the merge base to the working
tree, and untracked files count as wholly added.

Which files a diff touches comes from git itself (``--name-status -z``: every path whole, both
names of a rename or copy, binary, empty, mode-only and deleted files included), never from
the patch text, whose ``diff --git a/x b/y`` headers cannot be split reliably (a path may hold
" b/", quotes or newlines); the patch only adds the lines each file gains.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from gates import safegit
from gates.model import Diff, FileDiff, GatesError
from gates.safegit import DIFF_FLAGS

# --name-status with both names of renamed and copied files, for every diff the gates read.
NAME_STATUS = ("--name-status", "-z", "--find-renames", "--find-copies", *DIFF_FLAGS)
_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
GIT_TIMEOUT_S = 120.0
# Untracked files larger than this are counted as changed but not read line by line.
MAX_UNTRACKED_BYTES = 2_000_000


def _git(repo: Path, *args: str, check: bool = True) -> str:
    """git's output, bytes that are not UTF-8 kept as surrogates (so a path read from it names
    the same file again)."""
    try:
        proc = safegit.run(*args, cwd=repo, timeout=GIT_TIMEOUT_S)
    except FileNotFoundError:
        raise GatesError("git is not installed (the gates need it to compute the diff)") from None
    except subprocess.TimeoutExpired:
        raise GatesError(f"git {args[0]} took more than {GIT_TIMEOUT_S:.0f}s in {repo}") from None
    if check and proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["(no message)"])[0]
        raise GatesError(f"git {' '.join(args[:2])} failed in {repo}: {first}")
    return proc.stdout


def shown(text: str) -> str:
    """Text read with surrogates for bytes that are not UTF-8, as it can be printed."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def parse_name_status(output: str) -> list[tuple[str, str, str | None]]:
    """``git diff --name-status -z`` -> (status letter, path, old path of a rename or copy)."""
    fields = output.split("\0")
    out: list[tuple[str, str, str | None]] = []
    i = 0
    while i < len(fields) and fields[i]:
        status = fields[i][:1]
        if status in ("R", "C") and i + 2 < len(fields):
            out.append((status, fields[i + 2], fields[i + 1]))
            i += 3
        elif i + 1 < len(fields):
            out.append((status, fields[i + 1], None))
            i += 2
        else:
            raise GatesError(f"git diff --name-status gave a record without a path: {output!r}")
    return out


def diff_from_git(name_status: str, patch: str, base: str = "") -> Diff:
    """The files git names (``--name-status -z`` output), with the lines each one adds and
    removes taken from the ``patch`` of the same diff where the patch names it."""
    lines = {f.path: f for f in parse_unified_diff(shown(patch)).files}
    files = []
    for status, raw_path, raw_old in parse_name_status(name_status):
        path, old = shown(raw_path), shown(raw_old) if raw_old is not None else None
        found = lines.get(path)
        kind = "B" if found is not None and found.status == "B" and status == "M" else status
        files.append(FileDiff(path=path, status=kind, added=found.added if found else (),
                              removed_count=found.removed_count if found else 0, old_path=old))
    return Diff(base=base, files=tuple(files))


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
    check = safegit.run("rev-parse", "--verify", "--quiet", f"{base}^{{commit}}", cwd=path,
                        errors="replace", timeout=GIT_TIMEOUT_S)
    if check.returncode != 0:
        raise GatesError(f"base {base!r} is not a commit in {path} (fetch it first, e.g. "
                         f"`git fetch origin {base.removeprefix('origin/')}`, or pass --base)")
    fork = merge_base(path, base)
    names = _git(path, "diff", *NAME_STATUS, fork, "--")
    patch = _git(path, "diff", *DIFF_FLAGS, "--unified=0", "--find-renames", "--find-copies",
                 fork, "--")
    files = list(diff_from_git(names, patch, base=base).files)
    untracked = _git(path, "ls-files", "--others", "--exclude-standard", "-z").split("\0")
    for name in filter(None, untracked):
        files.append(_untracked(path, name))
    return Diff(base=base, files=tuple(files))


def _untracked(repo: Path, name: str) -> FileDiff:
    file, path = repo / name, shown(name)  # ``name`` keeps its bytes: it opens the file
    try:
        if file.is_symlink() or not file.is_file() or file.stat().st_size > MAX_UNTRACKED_BYTES:
            return FileDiff(path=path, status="A")
        data = file.read_bytes()
    except OSError:
        return FileDiff(path=path, status="A")
    if b"\0" in data[:8192]:
        return FileDiff(path=path, status="B")
    lines = data.decode("utf-8", "replace").splitlines()
    return FileDiff(path=path, status="A", added=tuple(enumerate(lines, start=1)))
