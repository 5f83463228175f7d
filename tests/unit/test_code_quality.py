"""The layering is enforced (import-linter); ruff and mypy are clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_import_contracts_hold() -> None:
    proc = run(str(BIN / "lint-imports"), "--no-cache")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "broken" not in proc.stdout.lower().split("contracts:")[-1] or \
        " 0 broken" in proc.stdout


def test_ruff_is_clean() -> None:
    proc = run(str(BIN / "ruff"), "check", "runner", "gates", "tests")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean() -> None:
    proc = run(sys.executable, "-m", "mypy")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_strict_and_pre_commit_runs_the_same_checks() -> None:
    import tomllib

    import yaml

    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert mypy["strict"] is True and "ignore_missing_imports" not in mypy
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    assert {"ruff", "mypy", "import-linter", "lock"} <= set(hooks)
    # Local tools, the locked versions: no hook repository to download.
    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    assert all(hook["entry"].startswith(".venv/bin/") for hook in hooks.values())
