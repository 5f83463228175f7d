"""Warm sandboxes through the whole product: a serving runner keeps them, a labelled issue's
run starts in one, the runner refills what was taken and removes the rest when it stops."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.model import RunState
from runner.testing.demo import DemoWorld
from runner.testing.llm import Reply, Request
from tests.support import ORCHESTRATOR, containers_of, worktrees_left

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def warm_ids(docker_client: Any) -> set[str]:
    """Warm sandboxes this process's runner keeps (the demo runner runs in this process)."""
    owner = f"{socket.gethostname()}:{os.getpid()}:"
    found = docker_client.api.containers(all=True, filters={"label": "orchestrator.warm"})
    return {c["Id"] for c in found if c["Labels"]["orchestrator.warm"].startswith(owner)
            and c["Names"][0].lstrip("/").startswith("orchestrator-warm-")}


def bearer(world: DemoWorld) -> dict[str, str]:
    """/healthz gives its details only with the API token."""
    return {"Authorization": f"Bearer {world.env['DEMO_API_TOKEN']}"}


def test_a_run_starts_in_a_warm_sandbox_which_is_refilled_and_drained(
        tmp_path: Path, sandbox_image: str, docker_client: Any) -> None:
    with DemoWorld(tmp_path, settings={"sandbox": {"warm": 2}}) as world:
        assert world.server is not None
        url = f"{world.server.url}/healthz"

        def ready() -> int:
            health = httpx.get(url, timeout=10, headers=bearer(world)).json()
            assert health["warm_target"] == 2
            return int(health["warm_sandboxes"])

        world.wait_for(lambda: ready() == 2, 120, "two warm sandboxes")
        before = warm_ids(docker_client)
        assert len(before) == 2

        issue = world.open_issue()
        run = world.wait_finished(issue)
        assert run.state is RunState.SUCCEEDED, run.reason
        [started] = [e for e in world.store.events(run.id, limit=1000) if e.kind == "sandbox"]
        assert started.data["warm"] is True
        assert containers_of(docker_client, run.id) == []
        assert worktrees_left(tmp_path / "data") == []

        # The one taken is replaced; the other still waits.
        world.wait_for(lambda: len(warm_ids(docker_client)) == 2, 120, "the refill")
        after = warm_ids(docker_client)
        assert len(after & before) == 1
    assert warm_ids(docker_client) == set()  # removed when the runner stopped
    assert not any((tmp_path / "data" / "sandbox" / "warm").iterdir())


def test_sandbox_env_reaches_the_agents_commands_in_a_warm_sandbox(
        tmp_path: Path, sandbox_image: str, docker_client: Any) -> None:
    def policy(request: Request) -> Reply:
        if request.turn == 0:
            return Reply.bash("echo \"index=$PIP_INDEX_URL\"")
        return Reply.finish("checked")

    settings = {"sandbox": {"warm": 1, "env": {"PIP_INDEX_URL": "http://mirror.invalid/simple"}}}
    with DemoWorld(tmp_path, settings=settings, agent=policy) as world:
        assert world.server is not None
        world.wait_for(lambda: httpx.get(f"{world.server.url}/healthz", timeout=10,
                                         headers=bearer(world))
                       .json()["warm_sandboxes"] == 1, 120, "a warm sandbox")
        issue = world.open_issue()
        run = world.wait_finished(issue)
        events = world.store.events(run.id, limit=1000)
    [started] = [e for e in events if e.kind == "sandbox"]
    assert started.data["warm"] is True
    outputs = [e.data.get("output", "") for e in events if e.kind == "agent.tool"]
    assert any("index=http://mirror.invalid/simple" in out for out in outputs), outputs


def test_a_secret_in_sandbox_env_stops_the_runner_from_starting(tmp_path: Path) -> None:
    with DemoWorld(tmp_path, start_runner=False) as world:
        secret = world.env["DEMO_API_TOKEN"]
        config = world.write_config(tmp_path / "orchestrator.yml",
                                    sandbox={"env": {"LEAK": secret, "FINE": "1"}})
        done = subprocess.run([ORCHESTRATOR, "-c", str(config), "serve"], capture_output=True,
                              text=True, timeout=120)
    assert done.returncode != 0
    assert "sandbox.env LEAK holds one of the runner's secrets" in done.stderr
    assert "Traceback" not in done.stderr and secret not in done.stderr + done.stdout
