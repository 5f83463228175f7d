"""The daily spend budget across two `serve` processes sharing Redis: once today's recorded
cost reaches the limit, a newly labelled issue waits queued (told why, once), and it starts
when the limit is raised and the processes restart with the new configuration."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from runner.model import RunState
from runner.spend import usd
from runner.testing.demo import REPO, DemoWorld
from tests.support import ORCHESTRATOR, Serve, events_of, start_serve

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _budget_comments(world: DemoWorld, issue: int) -> list[str]:
    return [c.body for c in world.forge.issue(REPO, issue).comments
            if "orchestrator:budget" in c.body]


def _restart(world: DemoWorld, tmp_path: Path, processes: list[Serve], daily: float,
             tag: str) -> tuple[Serve, Serve]:
    """Both processes stopped and started again with ``limits.daily_cost_usd`` = ``daily``."""
    for serve in processes:
        serve.stop()
    world.forge.repo(REPO).hooks.clear()
    world.overrides["limits"] = {**world.overrides["limits"], "daily_cost_usd": daily}
    return (start_serve(world, tmp_path, processes, f"a{tag}"),
            start_serve(world, tmp_path, processes, f"b{tag}", webhooks=False))


def test_a_spent_daily_budget_holds_new_runs_until_it_is_raised(
        tmp_path: Path, sandbox_image: str, redis_world: DemoWorld, docker_client: Any,
        processes: list[Serve]) -> None:
    world = redis_world
    start_serve(world, tmp_path, processes, "a")
    first = processes[0].finish(world, world.open_issue(title="first"), timeout=180)
    assert first.state is RunState.SUCCEEDED, first.reason
    cost = first.cost_usd
    assert cost > 0
    # Just above one run's cost: the next run may start, the one after it may not.
    limit = round(cost * 1.5, 6)
    a, _ = _restart(world, tmp_path, processes, limit, "1")
    second = a.finish(world, world.open_issue(title="second"), timeout=180)
    assert second.state is RunState.SUCCEEDED, second.reason
    assert not _budget_comments(world, 1) and not _budget_comments(world, 2)

    held = world.open_issue(title="held by the budget")

    def rechecked() -> bool:
        run = world.run_for(held)
        return run is not None and len([
            e for e in events_of(world, run)
            if e.kind == "waiting" and "budget" in e.data.get("reason", "")]) >= 2

    world.wait_for(rechecked, 150, "the third run waiting for the budget, looked at twice")
    world.wait_for(lambda: getattr(world.run_for(held), "waiting", False), 90,
                   "the third run parked")
    run = world.run_for(held)
    assert run is not None and run.state is RunState.QUEUED
    # Told once (whichever process looked), with the limit; audited once.
    told = _budget_comments(world, held)
    assert len(told) == 1 and usd(limit) in told[0] and "UTC" in told[0], told
    kinds = [e.kind for e in events_of(world, run)]
    assert kinds.count("budget-spent") == 1 and kinds.count("budget-warning") == 1
    assert "sizing" not in kinds  # the queued step stopped before acknowledging the issue
    assert not [c for c in world.forge.issue(REPO, held).comments
                if "orchestrator:status" in c.body]
    listing = subprocess.run([ORCHESTRATOR, "-c", str(tmp_path / "orchestrator.yml"), "runs"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    assert f"of {usd(limit)}" in listing and "spent, new runs wait" in listing, listing

    # The limit is raised: both processes restart with it and the run starts.
    b, _ = _restart(world, tmp_path, processes, round(cost * 10, 6), "2")
    done = b.finish(world, held, timeout=240)
    assert done.state is RunState.SUCCEEDED, done.reason
    told = _budget_comments(world, held)
    assert len(told) == 1 and "allows this run now" in told[0], told
