"""Warm sandboxes on the real engine: started before the run, taken by it, its worktree
checked out into the directory the container already has mounted."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from runner.sandbox.base import SandboxSpec
from runner.sandbox.docker import WARM_PREFIX, DockerBackend, container_name
from runner.sandbox.warm import WarmPool
from runner.workspace import Workspaces
from tests.integration.sandbox.conftest import IMAGE, new_run_id
from tests.integration.sandbox.test_git_escape import marker_dir, plant_script
from tests.integration.workspace.gitrepo import Upstream

pytestmark = pytest.mark.docker

REPO = "acme/widgets"


def spec(run_id: str, worktree: Path, **overrides: Any) -> SandboxSpec:
    fields: dict[str, Any] = {"run_id": run_id, "repo": REPO, "issue": 7, "worktree": worktree,
                              "image": IMAGE, "memory": 512 * 1024**2, "pids": 256, "cpus": 1.0}
    fields.update(overrides)
    return SandboxSpec(**fields)


def warm_containers(docker_client: Any, backend: DockerBackend) -> list[str]:
    found = docker_client.api.containers(
        all=True, filters={"label": f"orchestrator.instance={backend.instance}"})
    return sorted(c["Names"][0].lstrip("/") for c in found
                  if c["Names"][0].lstrip("/").startswith(WARM_PREFIX))


@pytest.fixture
def pool(backend: DockerBackend) -> Any:
    warm = WarmPool(backend.containers)
    yield warm
    warm.drain()


def test_a_run_takes_a_warm_sandbox_and_works_in_its_worktree(
        backend: DockerBackend, pool: WarmPool, docker_client: Any, workspaces: Workspaces,
        upstream: Upstream):
    template = spec("warm", Path("/nowhere"))
    assert pool.add(template, 1) is True
    assert pool.add(template, 1) is False  # one waits already
    [warm_name] = warm_containers(docker_client, backend)
    warm_id = docker_client.containers.get(warm_name).id

    run_id = new_run_id()
    path = workspaces.worktree_path(run_id)
    assert pool.take(spec(run_id, path)) is True
    assert path.is_dir() and list(path.iterdir()) == []  # its empty workspace, moved here
    assert warm_containers(docker_client, backend) == []  # renamed for the run

    wt = workspaces.prepare(run_id, REPO, 7, upstream.url)
    assert wt.path == path
    sandbox = backend.start(spec(run_id, path))
    assert sandbox.id == warm_id and sandbox.name == container_name(run_id)

    # The container sees the checkout made after it started, and the host sees its edits.
    assert sandbox.exec("cat src/app.py").output == "def answer():\n    return 41\n"
    assert sandbox.exec("echo 'def answer():\n    return 42' > src/app.py && id -u").ok
    assert workspaces.commit(wt, "the answer") is not None
    assert "return 42" in subprocess.run(
        ["git", "show", f"{wt.branch}:src/app.py"], cwd=wt.mirror, capture_output=True,
        text=True, check=True).stdout
    # As locked down as a sandbox made for the run.
    info = sandbox.inspect()
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["HostConfig"]["CapDrop"] == ["ALL"]
    assert info["HostConfig"]["NetworkMode"] == "none"
    assert sandbox.exec("id -u").output.strip() != "0"
    assert backend.find(run_id) is not None and run_id in backend.list_runs()

    sandbox.remove()
    workspaces.remove(wt)


def test_a_warm_sandbox_receives_the_spare_worktree(
        backend: DockerBackend, pool: WarmPool, workspaces: Workspaces, upstream: Upstream):
    first = workspaces.prepare(new_run_id(), REPO, 1, upstream.url)
    assert workspaces.fill_spare(REPO)
    spare = workspaces.spare_path(REPO)
    assert (spare / "README.md").is_file()
    upstream.write({"src/app.py": "def answer():\n    return 43\n"}, "newer")

    assert pool.add(spec("warm", Path("/nowhere")), 1)
    run_id = new_run_id()
    path = workspaces.worktree_path(run_id)
    assert pool.take(spec(run_id, path))
    wt = workspaces.prepare(run_id, REPO, 2, upstream.url)
    assert not spare.exists()  # its files moved into the warm sandbox's directory
    sandbox = backend.start(spec(run_id, path))
    assert sandbox.exec("cat src/app.py").output == "def answer():\n    return 43\n"
    assert sandbox.exec("touch new.txt").ok
    assert workspaces.commit(wt, "new file") is not None
    sandbox.remove()
    workspaces.remove(wt)
    workspaces.remove(first)


def test_an_agent_deleting_git_in_a_warm_sandbox_loses_nothing(
        backend: DockerBackend, pool: WarmPool, workspaces: Workspaces, upstream: Upstream,
        tmp_path: Path):
    # A warm sandbox cannot mask .git: the agent may delete or replace it. The worktree is
    # locked, so another run's cleanup (a prune) keeps it, and nothing planted runs here.
    assert pool.add(spec("warm", Path("/nowhere")), 1)
    run_id = new_run_id()
    path = workspaces.worktree_path(run_id)
    assert pool.take(spec(run_id, path))
    wt = workspaces.prepare(run_id, REPO, 3, upstream.url)
    sandbox = backend.start(spec(run_id, path))
    markers = marker_dir(tmp_path)
    assert sandbox.exec(plant_script(markers)).ok
    assert (path / ".git").is_dir()  # the agent really replaced it

    other = workspaces.prepare(new_run_id(), REPO, 4, upstream.url)
    workspaces.remove(other)  # prunes the mirror's worktree list

    assert workspaces.commit(wt, "agent's work") is not None
    assert list(markers.iterdir()) == []
    sandbox.remove()
    workspaces.remove(wt)
    assert not path.exists()


def test_no_warm_sandbox_of_another_shape_is_taken(
        backend: DockerBackend, pool: WarmPool, workspaces: Workspaces):
    assert pool.add(spec("warm", Path("/nowhere"), memory=256 * 1024**2), 1)
    run_id = new_run_id()
    path = workspaces.worktree_path(run_id)
    assert pool.take(spec(run_id, path)) is False  # 512 MiB wanted
    assert not path.exists()
    # A refill with the new shape replaces the old one.
    assert pool.add(spec("warm", Path("/nowhere")), 1)
    assert pool.ready() == 1
    assert pool.take(spec(run_id, path)) is True


def test_warm_sandboxes_of_a_dead_runner_are_orphans_and_drain_removes_ours(
        backend: DockerBackend, pool: WarmPool, docker_client: Any, tmp_path: Path):
    ours = pool
    assert pool.add(spec("warm", Path("/nowhere")), 1)
    # Another runner process on this host, started and gone (its pid cannot exist).
    dead = WarmPool(backend.containers)
    dead.owner = f"{dead.owner.split(':')[0]}:4999999:1"
    assert dead.add(spec("warm", Path("/nowhere")), 1)
    assert len(warm_containers(docker_client, backend)) == 2
    # It died a while ago (a directory younger than a minute may be another process's
    # warm sandbox being made, and is left alone).
    os.utime(dead._idle[0].workspace, (time.time() - 120, time.time() - 120))

    removed = backend.remove_orphans([])
    assert [name for name in removed if name.startswith(WARM_PREFIX)] == [
        dead._idle[0].container.name]
    assert warm_containers(docker_client, backend) == [ours._idle[0].container.name]
    assert not dead._idle[0].workspace.exists()  # its directory went too

    pool.drain()
    assert warm_containers(docker_client, backend) == []
    assert list((backend.state_dir / "warm").iterdir()) == []


def test_a_git_entry_the_agent_points_elsewhere_is_never_followed(
        backend: DockerBackend, pool: WarmPool, workspaces: Workspaces, upstream: Upstream,
        tmp_path: Path):
    # The agent in a warm sandbox turns .git into a symlink to a file of the runner's (or
    # into a loop). The next run's checkout, its own commit, the cleanup and the orphan sweep
    # must neither write through it nor choke on it.
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    first = workspaces.prepare(new_run_id(), REPO, 1, upstream.url)  # the mirror; a spare
    assert workspaces.fill_spare(REPO)
    assert pool.add(spec("warm", Path("/nowhere")), 2)
    assert pool.add(spec("warm", Path("/nowhere")), 2)

    run_id = new_run_id()
    path = workspaces.worktree_path(run_id)
    assert pool.take(spec(run_id, path))
    wt = workspaces.prepare(run_id, REPO, 5, upstream.url)  # takes the spare
    sandbox = backend.start(spec(run_id, path))
    assert sandbox.exec(f"rm .git && ln -s {victim} .git && echo change > new.txt").ok

    assert workspaces.fill_spare(REPO)  # a new spare, then another run takes it
    other_id = new_run_id()
    other_path = workspaces.worktree_path(other_id)
    assert pool.take(spec(other_id, other_path))
    other = workspaces.prepare(other_id, REPO, 6, upstream.url)
    assert victim.read_text() == "precious\n"

    assert workspaces.commit(wt, "agent's work") is not None
    assert sandbox.exec("rm .git && ln -s .git .git").ok  # a loop
    assert workspaces.open(run_id, REPO, 5) is not None  # still found, from the mirror's side
    assert workspaces.remove_orphans([other_id, first.run_id]) == [run_id]
    assert victim.read_text() == "precious\n"
    assert not path.exists()
    sandbox.remove()
    workspaces.remove(other)
    workspaces.remove(first)


def test_a_warm_sandbox_for_a_command_agent_brings_its_gateway_channel(
        backend: DockerBackend, pool: WarmPool, docker_client: Any, workspaces: Workspaces,
        upstream: Upstream):
    assert pool.add(spec("warm", Path("/nowhere"), gateway=True), 1) is True
    plain = new_run_id()
    # A spec without the channel is another shape: it does not take this one.
    assert pool.take(spec(plain, workspaces.worktree_path(plain))) is False
    run_id = new_run_id()
    path = workspaces.worktree_path(run_id)
    assert pool.take(spec(run_id, path, gateway=True)) is True
    workspaces.prepare(run_id, REPO, 7, upstream.url)
    sandbox = backend.start(spec(run_id, path, gateway=True))
    channel = sandbox.channel()
    assert channel is not None and channel[1] == "/run/orchestrator"
    host_dir = channel[0]
    (host_dir / "hello").write_text("from the runner")
    assert sandbox.exec("cat /run/orchestrator/hello").output == "from the runner"
    denied = sandbox.exec("touch /run/orchestrator/x")  # read-only for the agent
    assert not denied.ok and "Read-only file system" in denied.output
    sandbox.remove()
    assert not host_dir.exists()  # the directory goes with its container
