"""Warm sandboxes through the whole product: a serving runner keeps them, a labelled issue's
run starts in one, the runner refills what was taken and removes the rest when it stops."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.model import RunState
from runner.testing.demo import DemoWorld
from tests.e2e.conftest import containers_of, worktrees_left

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def warm_ids(docker_client: Any) -> set[str]:
    """Warm sandboxes this process's runner keeps (the demo runner runs in this process)."""
    owner = f"{socket.gethostname()}:{os.getpid()}:"
    found = docker_client.api.containers(all=True, filters={"label": "orchestrator.warm"})
    return {c["Id"] for c in found if c["Labels"]["orchestrator.warm"].startswith(owner)
            and c["Names"][0].lstrip("/").startswith("orchestrator-warm-")}


def test_a_run_starts_in_a_warm_sandbox_which_is_refilled_and_drained(
        tmp_path: Path, sandbox_image: str, docker_client: Any) -> None:
    with DemoWorld(tmp_path, settings={"sandbox": {"warm": 2}}) as world:
        assert world.server is not None
        url = f"{world.server.url}/healthz"

        def ready() -> int:
            health = httpx.get(url, timeout=10).json()
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
