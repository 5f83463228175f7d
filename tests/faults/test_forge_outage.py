"""The forge answers 502, then 429, for 30 s while a run is under way: the run waits and goes
on to a green pull request, with no duplicate pull request or status comment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.model import RunState
from runner.testing.demo import DemoWorld
from tests.support import assert_clean, events_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

OUTAGE_S = 30.0


def test_forge_outage_mid_run_is_waited_out(tmp_path: Path, sandbox_image: str,
                                            docker_client: Any) -> None:
    with DemoWorld(tmp_path) as world:
        issue = world.open_issue()
        run = world.wait_state(issue, RunState.RUNNING, timeout=90)
        # From now on the push, the pull request and CI polling all meet the outage:
        # first bad gateways, then rate limiting (which says when to come back).
        world.forge.fail_for(OUTAGE_S / 2, status=502)
        world.forge.fail_for(OUTAGE_S, status=429, retry_after=2)
        run = world.wait_finished(issue, timeout=240)
        assert run.state is RunState.SUCCEEDED, run.reason
        assert run.pr_number is not None
        assert_clean(world, docker_client, run, tmp_path / "data")
        errors = [e.data for e in events_of(world, run) if e.kind == "error"]
        assert errors, "the run never met the outage"
        # The outage was waited out: none of it counted as one of the run's attempts.
        assert all("attempt" not in e and "forge is unavailable" in e["note"] for e in errors)
