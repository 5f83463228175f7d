"""A Docker sandbox backend, a run's real worktree to mount (on the shared ``upstream`` and
``workspaces``), and the runtimes each sandbox test runs on."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.sandbox.base import SandboxSpec
from runner.sandbox.docker import DockerBackend, DockerSandbox
from runner.workspace import Workspaces, Worktree
from tests.integration.workspace.gitrepo import Upstream
from tests.support import SANDBOX_IMAGE, missing

IMAGE = SANDBOX_IMAGE
SECRET = "sk-test-SECRET-never-in-a-container"


@pytest.fixture
def backend(docker_client: Any, sandbox_image: str, tmp_path: Path) -> Iterator[DockerBackend]:
    made = DockerBackend(docker_client, state_dir=tmp_path / "sandbox-state",
                         image=sandbox_image, secrets=[SECRET])
    yield made
    # Tests name their runs r-test...; remove whatever they left.
    for run_id in made.list_runs():
        if run_id.startswith("r-7e57"):
            sandbox = made.find(run_id)
            if sandbox is not None:
                sandbox.remove()


@pytest.fixture
def worktree(workspaces: Workspaces, upstream: Upstream) -> Worktree:
    return workspaces.prepare(new_run_id(), "acme/widgets", 42, upstream.url)


def new_run_id() -> str:
    return "r-7e57" + uuid.uuid4().hex[:8]


def require_runtime(docker_client: Any, runtime: str | None) -> None:
    """Fail under CI (skip elsewhere) unless the engine has ``runtime`` registered."""
    if runtime is not None and runtime not in (docker_client.info().get("Runtimes") or {}):
        missing(f"the Docker engine has no runtime {runtime!r}: run scripts/register-runsc "
                "as root (scripts/test does)")


@pytest.fixture(params=[None, "runsc"], ids=["runc", "runsc"])
def runtime(request: pytest.FixtureRequest, docker_client: Any) -> str | None:
    """Each sandbox test runs on the engine's default runtime and under gVisor."""
    require_runtime(docker_client, request.param)
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def start(backend: DockerBackend, worktree: Worktree, runtime: str | None
          ) -> Callable[..., DockerSandbox]:
    """Start a sandbox for the worktree (limits overridable) on the test's runtime."""

    def _start(**overrides: Any) -> DockerSandbox:
        fields: dict[str, Any] = {"run_id": worktree.run_id, "repo": worktree.repo,
                                  "issue": worktree.issue, "worktree": worktree.path,
                                  "image": IMAGE, "memory": 512 * 1024**2, "pids": 256,
                                  "cpus": 1.0, "runtime": runtime}
        fields.update(overrides)
        return backend.start(SandboxSpec(**fields))

    return _start
