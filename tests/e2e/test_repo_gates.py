"""A repository's own gate profiles (`.orchestrator/gates.yml` on its base branch, what
`orchestrator init` writes) are the ones the runner applies; a broken file fails the run with
a reason that names it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.model import RunState
from runner.paths import CONFIG_DIR
from runner.testing.demo import MAINTAINER, REPO, DemoWorld

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MARKER = "gates-from-the-repository"


def repo_gates() -> str:
    text = (CONFIG_DIR / "gates.yml").read_text()
    bundled = "tests: {run: python3 test_calc.py, fast: true, timeout: 2m}"
    assert bundled in text
    return text.replace(bundled, "tests: {run: \"echo " + MARKER + " && python3 test_calc.py\""
                        ", fast: true, timeout: 2m}")


def test_the_repositorys_gates_file_on_its_base_branch_applies(
        tmp_path: Path, sandbox_image: str, docker_client: Any) -> None:
    with DemoWorld(tmp_path) as world:
        world.forge.push_branch(REPO, "main", {".orchestrator/gates.yml": repo_gates()},
                                as_user=MAINTAINER, message="Our own gates")
        issue = world.open_issue()
        run = world.wait_finished(issue)
        assert run.state is RunState.SUCCEEDED, run.reason
        events = world.store.events(run.id, limit=1000)
    [config] = [e for e in events if e.kind == "gates_config"]
    assert config.data["source"] == f"{REPO}@main:.orchestrator/gates.yml"
    results = [r for e in events if e.kind == "gates" for r in e.data["results"]]
    tests = [r for r in results if r["gate"] == "tests"]
    assert tests and all(r["passed"] for r in tests)
    assert any(MARKER in r["details"] for r in tests), tests


def test_a_broken_gates_file_on_the_base_branch_fails_the_run_saying_where(
        tmp_path: Path, sandbox_image: str) -> None:
    with DemoWorld(tmp_path) as world:
        world.forge.push_branch(REPO, "main", {".orchestrator/gates.yml": "profiles: [nope\n"},
                                as_user=MAINTAINER, message="Broken gates")
        issue = world.open_issue()
        run = world.wait_finished(issue)
    assert run.state is RunState.FAILED
    assert ".orchestrator/gates.yml" in run.reason and "fix it on main" in run.reason
    assert not world.llm.exchanges  # the agent never started
