"""Shared by the dispatch and kill benchmarks: label an issue, time the agent's first tool
call in its container; comment /kill, time until the container is gone and the run cancelled.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker

from runner.model import RunState
from runner.testing.demo import MAINTAINER, REPO, DemoWorld, slow_agent
from tests.support import containers_of


@dataclass
class Samples:
    dispatch_s: list[float] = field(default_factory=list)
    kill_s: list[float] = field(default_factory=list)


def _first_turn_at(world: DemoWorld, issue: int, timeout: float = 120.0) -> float:
    def found() -> float | None:
        run = world.run_for(issue)
        if run is None:
            return None
        for event in world.store.events(run.id, limit=1000):
            if event.kind == "agent.turn":
                return event.at  # the model asked for a tool; the exec starts right after
        return None

    return float(world.wait_for(found, timeout, f"first tool call of #{issue}"))


def measure(n: int, *, kill: bool) -> Samples:
    """``n`` issues in turn: label, wait for the first tool call, then (with ``kill``) /kill."""
    client = docker.from_env()
    samples = Samples()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, \
            DemoWorld(Path(tmp), agent=slow_agent(600)) as world:
        warm = world.open_issue(title="warm-up")  # first mirror clone, first container
        _first_turn_at(world, warm)
        world.forge.comment(REPO, warm, "/kill", as_user=MAINTAINER)
        world.wait_finished(warm)
        for i in range(n):
            issue = world.forge.open_issue(REPO, f"sample {i}", "Make it faster.",
                                           as_user=MAINTAINER)
            labelled = time.time()
            world.forge.label(REPO, issue, "orchestrator", as_user=MAINTAINER)
            samples.dispatch_s.append(_first_turn_at(world, issue) - labelled)
            run = world.run_for(issue)
            assert run is not None
            if kill:
                time.sleep(0.3)  # inside its long command now
            started = time.monotonic()
            world.forge.comment(REPO, issue, "/kill bench", as_user=MAINTAINER)

            def gone(run_id: str = run.id) -> bool:
                current = world.store.get_run(run_id)
                # the low-level list: the high-level one inspects each container, which
                # races with the removal being timed
                return current.state is RunState.CANCELLED and not containers_of(client, run_id)

            world.wait_for(gone, 60, f"kill of #{issue}")
            samples.kill_s.append(time.monotonic() - started)
            world.wait_finished(issue)
            print(f"  sample {i + 1}/{n}: dispatch {samples.dispatch_s[-1]:.3f}s, "
                  f"kill {samples.kill_s[-1]:.3f}s", file=sys.stderr)
    return samples
