"""Sample git repositories for the gates: a base commit on main and a branch on top."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True,
                          capture_output=True, text=True).stdout


class SampleRepo:
    """A checkout on branch orchestrator/issue-1 forked from main."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        git(root, "init", "-q", "-b", "main")
        self.write("src/app.py", "def add(a, b):\n    return a + b\n")
        self.write("README.md", "# sample\n")
        self.commit("base")
        git(root, "checkout", "-q", "-b", "orchestrator/issue-1")

    def write(self, path: str, text: str) -> Path:
        file = self.root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
        return file

    def commit(self, message: str = "change") -> None:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "-m", message)

    def gates(self, *args: str, config: Path | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `python -m gates` in the checkout, as CI would."""
        cmd = [sys.executable, "-m", "gates", "--base", "main", *args]
        if config is not None:
            cmd += ["--config", str(config)]
        return subprocess.run(cmd, cwd=self.root, capture_output=True, text=True,
                              timeout=timeout, env={**GIT_ENV, "COLUMNS": "200"})

    def gates_json(self, *args: str, config: Path | None = None) -> tuple[int, dict[str, Any]]:
        proc = self.gates("--json", *args, config=config)
        assert proc.returncode in (0, 1), proc.stderr
        return proc.returncode, {r["gate"]: r for r in json.loads(proc.stdout)}


@pytest.fixture
def sample_repo(tmp_path: Path) -> SampleRepo:
    return SampleRepo(tmp_path / "repo")


@pytest.fixture
def gates_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write a gates.yml outside the checkout (so it is not part of the diff)."""

    def write(text: str) -> Path:
        path = tmp_path / "gates.yml"
        path.write_text(text)
        return path

    return write
