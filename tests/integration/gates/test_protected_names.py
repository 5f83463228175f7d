"""The protected-paths gate sees a protected file however it is named or encoded.

Paths come from git (``--name-status -z``), on both sides that read a diff: the gates in a
checkout (``python -m gates``, committed or not) and the runner's pre-push check on the
mirror (``Workspaces.changes``). Each case changes something under ``.github/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from gates import collect_diff
from gates.checks import check_protected_paths
from gates.diff import diff_from_git, parse_name_status
from runner.workspace import Workspaces
from tests.integration.gates.conftest import git
from tests.integration.workspace.gitrepo import Upstream

PROTECTED = [".github/", ".forgejo/"]
WORKFLOW = ".github/workflows/ci.yml"
BASE_FILES = {WORKFLOW: "on: push\njobs: {}\n", "src/app.py": "def add(a, b):\n    return a + b\n"}


def _write(root: Path, name: str | bytes, data: bytes) -> None:
    path = os.path.join(os.fsencode(root), os.fsencode(name))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)


def _rename(root: Path, old: str, new: str) -> None:
    (root / new).parent.mkdir(parents=True, exist_ok=True)
    shutil.move(root / old, root / new)


Change = Callable[[Path], None]
CASES: dict[str, Change] = {
    "space in the name": lambda r: _write(r, ".github/workflows/my ci.yml", b"on: push\n"),
    "' b/' in a text file's name": lambda r: _write(r, ".github/workflows/x b/y.yml", b"a: 1\n"),
    "' b/' in a binary file's name": lambda r: _write(r, ".github/workflows/x b/y.bin",
                                                      b"\0\1\2"),
    "' b/' twice in an empty file's name": lambda r: _write(
        r, ".github/workflows/a b/c b/d.yml", b""),
    "quotes": lambda r: _write(r, '.github/workflows/"quoted".yml', b"a: 1\n"),
    "newline": lambda r: _write(r, ".github/workflows/new\nline.yml", b"a: 1\n"),
    "tab and backslash": lambda r: _write(r, ".github/workflows/t\tb\\s.yml", b"a: 1\n"),
    "bytes that are not UTF-8": lambda r: _write(r, b".github/workflows/\xff\xfe.yml", b"a: 1\n"),
    "binary file": lambda r: _write(r, ".github/workflows/blob", b"\0" * 64),
    "empty file": lambda r: _write(r, ".github/workflows/empty.yml", b""),
    "renamed out of .github": lambda r: _rename(r, WORKFLOW, "docs/ci.yml"),
    "renamed into .github": lambda r: _rename(r, "src/app.py", ".github/workflows/app.py"),
    "deleted": lambda r: (r / WORKFLOW).unlink(),
    "mode only": lambda r: (r / WORKFLOW).chmod(0o755),
    "symlink": lambda r: (r / ".github/workflows/link.yml").symlink_to("/etc/passwd"),
}


def _refused(diff_paths: list[str], result_passed: bool, message: str) -> None:
    assert not result_passed, f"not refused; paths seen: {diff_paths}"
    assert "protected paths" in message


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for name, text in BASE_FILES.items():
        _write(root, name, text.encode())
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    git(root, "checkout", "-q", "-b", "orchestrator/issue-1")
    return root


@pytest.mark.parametrize("name", list(CASES))
def test_the_gates_refuse_a_committed_change(checkout: Path, name: str) -> None:
    CASES[name](checkout)
    git(checkout, "add", "-A")
    git(checkout, "commit", "-q", "-m", name)
    diff = collect_diff(checkout, "main")
    result = check_protected_paths(diff, PROTECTED, [], "ci-change-allowed")
    _refused(diff.paths(), result.passed, result.message)


@pytest.mark.parametrize("name", list(CASES))
def test_the_gates_refuse_an_uncommitted_change(checkout: Path, name: str) -> None:
    CASES[name](checkout)
    diff = collect_diff(checkout, "main")
    result = check_protected_paths(diff, PROTECTED, [], "ci-change-allowed")
    _refused(diff.paths(), result.passed, result.message)


@pytest.mark.parametrize("name", list(CASES))
def test_the_runner_refuses_before_it_pushes(tmp_path: Path, name: str) -> None:
    upstream = Upstream(tmp_path)
    upstream.write(BASE_FILES, "workflows")
    workspaces = Workspaces(tmp_path / "data")
    wt = workspaces.prepare("r-000001", "acme/widgets", 1, upstream.url)
    CASES[name](wt.path)
    assert workspaces.commit(wt, name) is not None
    diff = workspaces.changes(wt)
    result = check_protected_paths(diff, PROTECTED, [], "ci-change-allowed")
    _refused(diff.paths(), result.passed, result.message)


def test_an_allowed_change_names_each_path_whole(checkout: Path) -> None:
    CASES["' b/' twice in an empty file's name"](checkout)
    _rename(checkout, WORKFLOW, "docs/ci.yml")
    git(checkout, "add", "-A")
    git(checkout, "commit", "-q", "-m", "both")
    paths = collect_diff(checkout, "main").paths()
    assert ".github/workflows/a b/c b/d.yml" in paths
    assert {"docs/ci.yml", WORKFLOW} <= set(paths)  # both names of the rename


def test_name_status_records_are_read_whole() -> None:
    out = "M\0a b/c\0R100\0.github/x\0docs/x\0C75\0src/a\0.github/a\0D\0new\nline\0"
    assert parse_name_status(out) == [("M", "a b/c", None), ("R", "docs/x", ".github/x"),
                                      ("C", ".github/a", "src/a"), ("D", "new\nline", None)]
    diff = diff_from_git("A\0x\udcff.yml\0", "")
    assert diff.files[0].path == "x\ufffd.yml"  # printable, whatever the bytes
