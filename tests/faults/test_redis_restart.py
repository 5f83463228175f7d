"""Redis restarts (down for longer than a lease) while two `serve` processes work on runs:
the runs resume and end, and a kill that reaches one process after Redis is back still stops
a run the other process owns (the bus subscription comes back too)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from runner.model import RunState
from runner.testing.demo import BUG, MAINTAINER, TEST_COMMAND, DemoWorld, slow_agent
from runner.testing.llm import Reply, Request, Script
from tests.support import ORCHESTRATOR, RedisServer, Serve, assert_clean, start_serve

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DOWN_S = 8.0  # longer than the 5-s lease: every lease lapses while Redis is away


def slow_fixer() -> Script:
    """The demo's fixing agent whose first command takes a while (Redis restarts meanwhile)."""
    path, old, new = BUG
    return Script([
        Reply.bash(f"sleep 15; {TEST_COMMAND}", "Running the tests (slowly)."),
        Reply.edit("str_replace", path, "Fixing add().", old_str=old, new_str=new),
        Reply.bash(TEST_COMMAND, "Running the tests again."),
        Reply.finish("Fixed add()."),
    ])


def test_redis_restart_mid_run(tmp_path: Path, sandbox_image: str, docker_client: Any,
                               persistent_redis: RedisServer,
                               processes: list[Serve]) -> None:
    fixer, stopper = slow_fixer(), slow_agent(120)

    def agent(request: Request) -> Reply:
        return stopper(request) if "kill me" in request.first_user_text() else fixer(request)

    with DemoWorld(tmp_path, agent=agent, start_runner=False,
                   settings={"store": {"redis": persistent_redis.url},
                             "limits": {"max_concurrent": 1}}) as world:
        # Webhooks reach A only: B hears of the kill through Redis.
        a = start_serve(world, tmp_path, processes, "a")
        b = start_serve(world, tmp_path, processes, "b", webhooks=False)
        resumed = world.open_issue(title="resume me")
        killed = world.open_issue(title="kill me")
        runs = {i: world.wait_state(i, RunState.RUNNING, timeout=90) for i in (resumed, killed)}
        world.wait_for(lambda: all(world.store.current_lease(r.id) for r in runs.values()),
                       60, "both runs claimed")

        persistent_redis.stop()
        time.sleep(DOWN_S)
        persistent_redis.start()

        try:
            world.wait_for(lambda: world.store.current_lease(runs[killed].id), 60,
                           "the run to kill claimed again")
            # `orchestrator kill` only writes to Redis: the kill reaches the owner, whichever
            # process it is, through the bus alone.
            subprocess.run([ORCHESTRATOR, "-c", str(a.config), "kill", runs[killed].id,
                            "--reason", "after the restart", "--actor", MAINTAINER],
                           check=True, capture_output=True)
            stopped = world.wait_finished(killed, timeout=60)
            done = world.wait_finished(resumed, timeout=240)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\nA:\n{a.output()}\nB:\n{b.output()}") from None
        assert stopped.state is RunState.CANCELLED, stopped.reason
        assert stopped.reason == "after the restart"
        assert done.state is RunState.SUCCEEDED, done.reason
        for run in (stopped, done):
            assert_clean(world, docker_client, run, tmp_path / "data")
        assert a.proc is not None and a.proc.poll() is None, "A died"
        assert b.proc is not None and b.proc.poll() is None, "B died"
