"""A small repository with one bug and a test that catches it, for agent tests and benches."""

from __future__ import annotations

import subprocess
from pathlib import Path

from runner.testing.llm import Script, fix_failing_test

TEST_COMMAND = "python3 -m unittest -q test_calc"
BUGGY = "    return a - b\n"
FIXED = "    return a + b\n"

FILES = {
    "calc.py": '"""Arithmetic."""\n\n\ndef add(a, b):\n    """The sum of a and b."""\n'
               + BUGGY,
    "test_calc.py": "import unittest\n\nfrom calc import add\n\n\n"
                    "class AddTest(unittest.TestCase):\n"
                    "    def test_add(self):\n"
                    "        self.assertEqual(add(2, 3), 5)\n\n\n"
                    "if __name__ == '__main__':\n    unittest.main()\n",
    "AGENTS.md": f"Run the tests with `{TEST_COMMAND}`.\n",
}


def write_project(root: Path) -> Path:
    """Write the buggy project into ``root`` and return it."""
    for name, text in FILES.items():
        (root / name).write_text(text)
    return root


def fixing_script() -> Script:
    """The emulated model's plan: run the test, view, fix, run the test, finish."""
    return fix_failing_test(test_command=TEST_COMMAND, path="calc.py", old=BUGGY, new=FIXED,
                            summary="add() subtracted instead of adding; it adds now.")


def project_worktree(tmp_path: Path) -> Path:
    """The project committed in ``tmp_path/origin`` and a real git worktree of it on branch
    ``orchestrator/issue-1``, as a run's steps prepare one (its ``.git`` is a file)."""
    origin = tmp_path / "origin"
    origin.mkdir()
    write_project(origin)
    git = ["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "buggy"], check=True)
    repo = tmp_path / "worktree"
    subprocess.run([*git, "worktree", "add", "-q", "-b", "orchestrator/issue-1", str(repo)],
                   check=True)
    return repo
