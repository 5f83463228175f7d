"""`kill -9` of a `serve` process while its run is in each state (preparing, running,
pushing, gating, reviewing); the restarted process picks the run up from what the store and
the branch hold and finishes it: one green pull request, one status comment, nothing left.

Each state is held open by something a real deployment meets: the mirror locked by another
fetch (preparing), a slow agent command (running), a forge outage on the pull request
(pushing), slow CI (gating), a slow reviewer reply (reviewing).
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner.model import RunState
from runner.testing.demo import (
    CI_CONTEXT,
    REPO,
    TEST_COMMAND,
    DemoWorld,
    approving_reviewer,
    fixing_agent,
    slow_agent,
)
from runner.testing.llm import Reply, Request
from tests.support import Serve, assert_clean, events_of, start_serve

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@dataclasses.dataclass
class Hold:
    """The agent and reviewer of a world whose run stays in ``state`` (set up by ``arm``)
    until ``release``."""

    state: RunState
    agent: Callable[[Request], Reply]
    reviewer: Callable[[Request], Reply]
    arm: Callable[[DemoWorld, Path], None] = lambda world, tmp: None
    release: Callable[[DemoWorld], None] = lambda world: None


def hold(state: RunState) -> Hold:
    slow = {"on": True}
    fixing, sleepy = fixing_agent(), slow_agent(120)

    def agent(request: Request) -> Reply:
        if state is RunState.RUNNING and slow["on"]:
            return sleepy(request)
        return fixing(request)

    def reviewer(request: Request) -> Reply:
        reply = approving_reviewer(request)
        if state is RunState.REVIEWING and slow["on"]:
            return dataclasses.replace(reply, delay=120.0)
        return reply

    def off(world: DemoWorld) -> None:
        slow["on"] = False

    if state is RunState.PREPARING:
        lock: dict[str, int] = {}

        def take_mirror_lock(world: DemoWorld, tmp: Path) -> None:
            # What another run fetching the same mirror holds (an fcntl lock).
            path = tmp / "data" / "mirrors" / REPO.split("/")[0] / "calculator.git.lock"
            path.parent.mkdir(parents=True, exist_ok=True)
            lock["fd"] = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(lock["fd"], fcntl.LOCK_EX)

        def drop_mirror_lock(world: DemoWorld) -> None:
            os.close(lock["fd"])

        return Hold(state, agent, reviewer, arm=take_mirror_lock, release=drop_mirror_lock)
    if state is RunState.PUSHING:
        def end_outage(world: DemoWorld) -> None:
            world.forge.clear_faults()

        return Hold(state, agent, reviewer, release=end_outage)
    if state is RunState.GATING:
        def slow_ci(world: DemoWorld, tmp: Path) -> None:
            world.forge.configure_ci(REPO, f"sleep 20 && {TEST_COMMAND}", context=CI_CONTEXT)

        def fast_ci(world: DemoWorld) -> None:
            world.forge.configure_ci(REPO, TEST_COMMAND, context=CI_CONTEXT)

        return Hold(state, agent, reviewer, arm=slow_ci, release=fast_ci)
    return Hold(state, agent, reviewer, release=off)


STATES = [RunState.PREPARING, RunState.RUNNING, RunState.PUSHING, RunState.GATING,
          RunState.REVIEWING]


@pytest.mark.parametrize("state", STATES, ids=[str(s) for s in STATES])
def test_kill9_in_each_state_then_restart_finishes_the_run(
        state: RunState, tmp_path: Path, sandbox_image: str, docker_client: Any,
        processes: list[Serve]) -> None:
    held = hold(state)
    with DemoWorld(tmp_path, agent=held.agent, reviewer=held.reviewer,
                   start_runner=False) as world:
        held.arm(world, tmp_path)
        first = start_serve(world, tmp_path, processes)
        issue = world.open_issue()
        if state is RunState.PUSHING:
            # Once the agent works, the forge's API goes down: the push goes through (git),
            # the pull request does not, and the run waits in PUSHING.
            running = world.wait_state(issue, RunState.RUNNING, timeout=90)
            world.wait_for(lambda: any(e.kind == "agent.turn" for e in
                                       events_of(world, running)), 60, "the agent working")
            world.forge.fail_for(600, status=502)
        run = world.wait_state(issue, state, timeout=120)
        if state is RunState.PUSHING:
            world.wait_for(lambda: any(e.kind == "pushed" for e in events_of(world, run)),
                           60, "the branch pushed")
        first.kill9()
        held.release(world)
        second = first.restart()
        processes.append(second)
        run = second.finish(world, issue, timeout=240)
        assert run.state is RunState.SUCCEEDED, run.reason
        assert run.pr_number is not None
        assert_clean(world, docker_client, run, tmp_path / "data")
        # Resumed where it died, not started over: it entered the held state only once.
        entered = [e.data["to"] for e in events_of(world, run) if e.kind == "transition"]
        assert entered.count(str(state)) == 1, entered
