"""End-to-end fixtures: the forge and LLM emulators, real Docker, real git, the runner."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.model import Run
from runner.testing.demo import REPO, DemoWorld
from tests.conftest import ORCHESTRATOR, free_port, missing, wait_for_port


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


class Serve:
    """One `orchestrator serve` process on its own port."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Serve:
        env = {**os.environ, "ORCHESTRATOR_SERVER__PORT": str(self.port)}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([ORCHESTRATOR, "-c", str(self.config), "serve"],
                                         stdout=out, stderr=subprocess.STDOUT, env=env)
        wait_for_port(self.port, timeout=60)
        return self

    @property
    def worker(self) -> str:
        assert self.proc is not None
        return f"{socket.gethostname()}:{self.proc.pid}"

    def restart(self) -> Serve:
        """A new process with this one's configuration, port and log (after ``kill9``)."""
        return Serve(self.config, self.port, self.log).start()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


    def finish(self, world: DemoWorld, issue: int, timeout: float) -> Run:
        """``world.wait_finished``, with this process's log in the failure."""
        try:
            return world.wait_finished(issue, timeout=timeout)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.output()}") from None


@pytest.fixture
def processes() -> Iterator[list[Serve]]:
    """`serve` processes a test started; stopped (SIGTERM) at the end whatever happened."""
    started: list[Serve] = []
    yield started
    for serve in started:
        serve.stop()


def start_serve(world: DemoWorld, tmp_path: Path, processes: list[Serve], name: str = "serve",
                *, webhooks: bool = True) -> Serve:
    """An `orchestrator serve` process running ``world``'s configuration on a free port; the
    forge's webhooks go to it when ``webhooks`` (the others learn of work from the store)."""
    config = world.write_config(tmp_path / "orchestrator.yml")
    port = free_port()
    if webhooks:
        world.forge.add_webhook(REPO, f"http://127.0.0.1:{port}/webhooks/github", world.secret)
    serve = Serve(config, port, tmp_path / f"{name}.log").start()
    processes.append(serve)
    return serve
