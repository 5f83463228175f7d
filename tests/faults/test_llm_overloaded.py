"""The Messages API answers 529 (overloaded) for 3 minutes in the middle of the agent's work:
the agent waits (backing off) and goes on, within its budget, to a green pull request; an
outage longer than ``agent.outage_timeout`` fails the run, saying why."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runner.model import RunState
from runner.testing.demo import REPO, DemoWorld, fixing_agent
from runner.testing.llm import Policy, Reply, Request
from tests.support import assert_clean, events_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

OVERLOAD_S = 180.0


class Overloaded:
    """The fixing agent, behind an API that is overloaded for ``seconds`` from its second
    turn on (so the outage falls in the middle of the agent's work)."""

    def __init__(self, inner: Policy, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds
        self.until: float | None = None
        self.refused = 0
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Reply:
        with self._lock:
            if request.turn >= 1 and self.until is None:
                self.until = time.monotonic() + self.seconds
            if self.until is not None and time.monotonic() < self.until:
                self.refused += 1
                return Reply.error(529, "Overloaded")
        return self.inner(request)


def test_llm_overloaded_for_3_minutes_is_waited_out(tmp_path: Path, sandbox_image: str,
                                              docker_client: Any) -> None:
    agent = Overloaded(fixing_agent(), OVERLOAD_S)
    with DemoWorld(tmp_path, agent=agent) as world:
        issue = world.open_issue()
        run = world.wait_finished(issue, timeout=OVERLOAD_S + 240)
        assert run.state is RunState.SUCCEEDED, run.reason
        assert agent.refused >= 2, "the outage never met the agent"
        waits = [e.data for e in events_of(world, run) if e.kind == "model_unavailable"]
        assert len(waits) == agent.refused
        assert all(w["status"] == 529 and w["who"] == "agent" for w in waits)
        # One outage, waited out well within its bound (agent.outage_timeout, 15 min).
        elapsed = [w["elapsed_s"] for w in waits]
        assert elapsed == sorted(elapsed) and elapsed[-1] < waits[-1]["timeout_s"]
        settings = world.runner.settings.agent
        assert run.cost_usd <= settings.max_cost_usd
        assert run.tokens_in + run.tokens_out <= settings.max_tokens
        assert run.iteration == 1  # waited out inside the turn, not a new attempt
        assert_clean(world, docker_client, run, tmp_path / "data")


def test_an_outage_longer_than_the_bound_fails_the_run_saying_why(
        tmp_path: Path, sandbox_image: str, docker_client: Any) -> None:
    agent = Overloaded(fixing_agent(), 600)
    with DemoWorld(tmp_path, agent=agent, settings={"agent": {"outage_timeout": "15s"}}) as world:
        issue = world.open_issue()
        run = world.wait_finished(issue, timeout=120)
        assert run.state is RunState.FAILED
        assert "529" in run.reason and "try again later" in run.reason, run.reason
        waits = [e.data for e in events_of(world, run) if e.kind == "model_unavailable"]
        assert waits and all(w["status"] == 529 for w in waits)
        assert all(w["timeout_s"] == 15 for w in waits)  # bounded by the configured time
        status = [c for c in world.forge.issue(REPO, issue).comments
                  if "orchestrator:status" in c.body]
        assert status and "529" in status[0].body
        assert_clean(world, docker_client, run, tmp_path / "data")
