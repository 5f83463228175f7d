"""End-to-end fixtures: the forge and LLM emulators, real Docker, real git, the runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.testing.demo import REPO
from tests.conftest import missing


@pytest.fixture(scope="session")
def sandbox_image(docker_client):  # type: ignore[no-untyped-def]
    """The sandbox image must exist: scripts/test builds it before pytest."""
    import docker

    try:
        docker_client.images.get("orchestrator-sandbox:latest")
    except docker.errors.ImageNotFound:
        missing("the image orchestrator-sandbox:latest is missing: run scripts/build-sandbox-image")
    return "orchestrator-sandbox:latest"


def containers_of(docker_client, run_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Names of the containers (running or not) that belong to a run."""
    # The low-level list: the high-level one inspects each container and races a removal.
    # By label (a container made for the run) and by name (a warm sandbox the run took,
    # whose labels were fixed before the run existed).
    by_label = docker_client.api.containers(all=True,
                                            filters={"label": f"orchestrator.run={run_id}"})
    by_name = docker_client.api.containers(all=True, filters={"name": f"orchestrator-{run_id}"})
    names = {name.lstrip("/") for c in by_label for name in c["Names"][:1]}
    names |= {name.lstrip("/") for c in by_name for name in c["Names"][:1]
              if name.lstrip("/") == f"orchestrator-{run_id}"}
    return sorted(names)


def worktrees_left(data_dir: Path) -> list[str]:
    root = data_dir / "worktrees"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def status_comments(forge, issue: int) -> list[str]:  # type: ignore[no-untyped-def]
    return [c.body for c in forge.issue(REPO, issue).comments
            if "orchestrator:status" in c.body]


def pulls_from(forge, branch: str) -> list[int]:  # type: ignore[no-untyped-def]
    return [i.number for i in forge.repo(REPO).pulls()
            if i.pull is not None and i.pull.head == branch]
