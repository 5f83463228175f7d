"""The Docker engine refuses to create the run's container (its image does not exist): the
run fails with a reason that names the image, after at most MAX_ATTEMPTS attempts, and leaves
nothing behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.model import RunState
from runner.run.driver import MAX_ATTEMPTS
from runner.testing.demo import DemoWorld
from tests.support import assert_clean, events_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MISSING_IMAGE = "orchestrator-sandbox:no-such-tag"


def test_engine_refusing_the_container_fails_the_run_after_bounded_attempts(
        tmp_path: Path, sandbox_image: str, docker_client: Any) -> None:
    with DemoWorld(tmp_path, settings={"sandbox": {"image": MISSING_IMAGE}}) as world:
        issue = world.open_issue()
        run = world.wait_finished(issue, timeout=180)
        assert run.state is RunState.FAILED
        assert MISSING_IMAGE in run.reason, run.reason
        assert f"after {MAX_ATTEMPTS} attempts" in run.reason
        attempts = [e.data["attempt"] for e in events_of(world, run) if e.kind == "error"]
        assert attempts == list(range(1, MAX_ATTEMPTS + 1))
        assert not [x for x in world.llm.exchanges], "the agent ran without a sandbox"
        status = [c.body for c in world.forge.issue(run.repo, issue).comments
                  if "orchestrator:status" in c.body]
        assert "**Failed**" in status[0] and MISSING_IMAGE in status[0]
        assert_clean(world, docker_client, run, tmp_path / "data")
