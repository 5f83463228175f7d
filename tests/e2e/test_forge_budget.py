"""A spent request budget is waited out: three runs on a GitHub whose budget is far too small
for them all finish, and each wait for the reset is audited."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.model import RunState
from runner.testing.demo import DemoWorld

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_three_runs_on_a_small_budget_wait_for_the_reset(tmp_path: Path,
                                                         sandbox_image: str) -> None:
    with DemoWorld(tmp_path, flavour="github") as world:
        # One run spends about 40 requests (scripts/bench forge-budget): 50 per 20 s window
        # makes the three of them run out, more than once.
        world.forge.set_budget(limit=50, reset_in=20.0)
        issues = [world.open_issue(title=f"add() is wrong ({i})") for i in range(3)]
        runs = [world.wait_finished(issue, timeout=420) for issue in issues]
        assert [r.state for r in runs] == [RunState.SUCCEEDED] * 3, [r.reason for r in runs]
        assert any(x.status == 403 for x in world.forge.exchanges)  # the budget did run out
        waits = [e.data for r in runs for e in world.store.events(r.id, limit=2000)
                 if e.kind == "forge.wait"]
        assert waits and all(w["rate_limited"] for w in waits)
        assert all(0 < float(w["wait_s"]) <= 21 for w in waits)  # until the reset, no longer
