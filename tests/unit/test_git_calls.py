"""Every git command in ``runner`` and ``gates`` carries the hardened flags: it is made by
``gates.safegit`` (``git_argv``, ``run``) or run by ``runner.workspace.git.HardenedGit``, and
nothing imports GitPython, whose commands would not (docs/sandbox.md says why)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAKER = ROOT / "gates" / "safegit.py"


def _sources() -> list[Path]:
    return sorted([*(ROOT / "runner").rglob("*.py"), *(ROOT / "gates").rglob("*.py")])


def bare_git_calls(path: Path, root: Path = ROOT) -> list[str]:
    """Where ``path`` spells a git command line itself (a list or tuple starting "git"), or
    imports GitPython."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.List | ast.Tuple) and node.elts:
            first = node.elts[0]
            if isinstance(first, ast.Constant) and first.value == "git":
                found.append(f"{path.relative_to(root)}:{node.lineno}")
        elif isinstance(node, ast.Import | ast.ImportFrom) and "git" in _imported(node):
            found.append(f"{path.relative_to(root)}:{node.lineno} imports GitPython")
    return found


def _imported(node: ast.Import | ast.ImportFrom) -> set[str]:
    """The top-level packages an import statement names (none for a relative import)."""
    if isinstance(node, ast.ImportFrom):
        return {node.module.split(".")[0]} if node.module and not node.level else set()
    return {alias.name.split(".")[0] for alias in node.names}


def test_no_git_command_line_is_spelt_outside_safegit() -> None:
    found = [hit for path in _sources() if path != MAKER for hit in bare_git_calls(path)]
    assert found == [], "build git commands with gates.safegit.git_argv (or run them with " \
                        f"gates.safegit.run / HardenedGit.run): {found}"


def test_the_check_sees_a_bare_git_call(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('import subprocess\nimport git\nsubprocess.run(["git", "status"])\n')
    assert bare_git_calls(sample, tmp_path) == ["sample.py:2 imports GitPython", "sample.py:3"]
    assert bare_git_calls(MAKER)  # the one place that spells it
