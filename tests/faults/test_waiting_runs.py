"""Runs waiting on CI are owned by no process: a crash while they wait loses nothing, and a
CI event reaching another process sharing the store carries the run on there."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from runner.model import RunState
from runner.testing.demo import CI_CONTEXT, REPO, TEST_COMMAND, DemoWorld
from tests.support import Serve, assert_clean, events_of, start_serve

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _all_waiting(world: DemoWorld, issues: list[int]) -> bool:
    runs = [world.run_for(issue) for issue in issues]
    return all(r is not None and r.state is RunState.GATING and r.waiting for r in runs)


def test_kill9_while_runs_wait_on_ci_then_restart_finishes_every_run(
        tmp_path: Path, sandbox_image: str, docker_client: Any,
        processes: list[Serve]) -> None:
    with DemoWorld(tmp_path, start_runner=False,
                   settings={"limits": {"max_concurrent": 2, "per_repo": 4,
                                        "lease_ttl": "5s", "ci_timeout": "10m"}}) as world:
        world.forge.configure_ci(REPO, f"sleep 15 && {TEST_COMMAND}", context=CI_CONTEXT)
        first = start_serve(world, tmp_path, processes)
        issues = [world.open_issue(title=f"waiting {i}") for i in range(3)]
        world.wait_for(lambda: _all_waiting(world, issues), 180, "three runs waiting on CI")
        first.kill9()
        # CI finishes while no runner listens: those webhooks are lost.
        world.wait_for(lambda: all(job.done.is_set() for job in world.forge.ci_jobs), 120,
                       "CI finished")
        second = first.restart()
        processes.append(second)
        runs = [second.finish(world, issue, timeout=120) for issue in issues]
        for run in runs:
            assert run.state is RunState.SUCCEEDED, run.reason
            assert_clean(world, docker_client, run, tmp_path / "data")
            entered = [e.data["to"] for e in events_of(world, run) if e.kind == "transition"]
            assert entered.count("gating") == 1, entered  # resumed, not started over


def test_a_run_pushed_by_one_process_is_carried_on_by_the_one_that_hears_its_ci(
        tmp_path: Path, sandbox_image: str, redis_world: DemoWorld, docker_client: Any,
        processes: list[Serve]) -> None:
    world = redis_world
    world.forge.configure_ci(REPO, f"sleep 15 && {TEST_COMMAND}", context=CI_CONTEXT)
    a = start_serve(world, tmp_path, processes, "a")
    issue = world.open_issue()
    world.wait_for(lambda: _all_waiting(world, [issue]), 120, "the run waiting on CI")
    run = world.run_for(issue)
    assert run is not None
    pushed_by = [e for e in events_of(world, run) if e.kind == "pushed"]
    assert len(pushed_by) == 1
    # A stops answering (a paused machine); the forge's webhooks now go to B only.
    assert a.proc is not None
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        world.forge.repo(REPO).hooks.clear()
        b = start_serve(world, tmp_path, processes, "b")
        # B hears the CI event and takes the next steps; without the event its own look
        # would come only after ci_poll_max (5 min).
        run = b.finish(world, issue, timeout=120)
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    assert run.state is RunState.SUCCEEDED, run.reason
    entered = [e.data["to"] for e in events_of(world, run) if e.kind == "transition"]
    assert entered.count("gating") == 1 and "reviewing" in entered, entered
    assert len([e for e in events_of(world, run) if e.kind == "pushed"]) == 1
    world.wait_for(lambda: not any(c for c in [run.id] if world.store.current_lease(c)),
                   30, "the lease let go")
    assert_clean(world, docker_client, run, tmp_path / "data")
