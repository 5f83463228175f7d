"""Label to pull request with a command agent: a script on the anthropic SDK in the run's
container fixes the demo's bug, reaching the LLM emulator only through the run's gateway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runner.model import RunState
from runner.testing.demo import REPO, DemoWorld
from tests.integration.agent.sdk_image import AGENT, sdk_image
from tests.support import containers_of, worktrees_left

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def command_agent(image: str, **agent: Any) -> dict[str, Any]:
    return {"agent": {"kind": "command", "command": AGENT, **agent},
            "sandbox": {"image": image, "warm": 0}}


def test_a_command_agent_gives_a_green_pull_request_through_its_gateway(
        tmp_path: Path, sandbox_image: str, docker_client: Any) -> None:
    image = sdk_image(docker_client)
    with DemoWorld(tmp_path, settings=command_agent(image)) as world:
        issue = world.open_issue()
        run = world.wait_finished(issue)
        key = world.llm.api_key
        events = world.store.events(run.id, limit=10000)
        agent_calls = [e for e in world.llm.exchanges if "reviewer" not in e.request.system]
    assert run.state is RunState.SUCCEEDED, run.reason
    pr = world.forge.issue(REPO, run.pr_number or 0)
    assert pr.pull is not None and not pr.pull.draft
    turns = [e.data for e in events if e.kind == "agent.turn"]
    assert len(turns) == len(agent_calls) == 5
    assert all(t["tokens_in"] > 0 and t["cost_usd"] > 0 for t in turns)
    assert run.cost_usd == pytest.approx(sum(t["cost_usd"] for t in turns), rel=1e-3)
    assert key not in json.dumps([e.data for e in events], default=str)
    assert containers_of(docker_client, run.id) == []
    assert worktrees_left(tmp_path / "data") == []
    assert not list((tmp_path / "data" / "sandbox" / "gateway").iterdir())


def test_a_command_agent_over_budget_fails_the_run_with_reason_budget(
        tmp_path: Path, sandbox_image: str, docker_client: Any) -> None:
    image = sdk_image(docker_client)
    settings = command_agent(image, max_cost_usd=0.0001)
    with DemoWorld(tmp_path, settings=settings) as world:
        run = world.wait_finished(world.open_issue())
        events = world.store.events(run.id, limit=10000)
    assert run.state is RunState.FAILED
    assert "the agent stopped: budget" in run.reason and "agent.max_cost_usd" in run.reason
    assert [e.data["reason"] for e in events if e.kind == "agent.stop"] == ["budget"]
    turns = [e.data for e in events if e.kind == "agent.turn"]
    assert len(turns) == 1 and turns[0]["cost_usd"] > 0.0001
