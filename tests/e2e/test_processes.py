"""`orchestrator serve` as real processes: crash recovery, and several processes on one Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.model import RunState
from runner.testing.demo import MAINTAINER, REPO, DemoWorld, fixing_agent, slow_agent
from runner.testing.llm import Reply, Request
from tests.conftest import free_port, wait_for_port
from tests.e2e.conftest import containers_of, pulls_from, status_comments, worktrees_left

pytestmark = [pytest.mark.docker, pytest.mark.slow]
ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")


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
        import socket

        assert self.proc is not None
        return f"{socket.gethostname()}:{self.proc.pid}"

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


@pytest.fixture
def processes() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for serve in started:
        serve.stop()


def test_kill9_mid_run_then_restart_ends_cleanly(tmp_path: Path, sandbox_image: str,
                                                docker_client, processes: list[Serve]) -> None:
    mode = {"slow": True}
    slow, fixing = slow_agent(60), fixing_agent()

    def agent(request: Request) -> Reply:
        return slow(request) if mode["slow"] else fixing(request)

    with DemoWorld(tmp_path, agent=agent, start_runner=False) as world:
        config = world.write_config(tmp_path / "orchestrator.yml")
        port = free_port()
        world.forge.add_webhook(REPO, f"http://127.0.0.1:{port}/webhooks/github", world.secret)
        first = Serve(config, port, tmp_path / "serve.log").start()
        processes.append(first)
        issue = world.open_issue()
        run = world.wait_state(issue, RunState.RUNNING, timeout=60)
        world.wait_for(lambda: containers_of(docker_client, run.id), 60, "the run's container")
        first.kill9()
        mode["slow"] = False
        second = Serve(config, port, tmp_path / "serve.log").start()
        processes.append(second)
        try:
            run = world.wait_finished(issue, timeout=180)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{second.output()}") from None
        assert run.state is RunState.SUCCEEDED, run.reason
        assert len(pulls_from(world.forge, f"orchestrator/issue-{issue}")) == 1
        assert len(status_comments(world.forge, issue)) == 1
        assert containers_of(docker_client, run.id) == []
        assert worktrees_left(tmp_path / "data") == []
        kinds = [e.kind for e in world.store.events(run.id, limit=10000)]
        assert "workspace" in kinds


def test_two_processes_on_redis_share_work_and_kills(tmp_path: Path, sandbox_image: str,
                                                    redis_url: str, docker_client,
                                                    processes: list[Serve]) -> None:
    with DemoWorld(tmp_path, agent=slow_agent(90), start_runner=False,
                   settings={"store": {"redis": redis_url},
                             "limits": {"max_concurrent": 1}}) as world:
        config = world.write_config(tmp_path / "orchestrator.yml")
        port_a, port_b = free_port(), free_port()
        # Webhooks reach A only; B learns of kills through Redis.
        world.forge.add_webhook(REPO, f"http://127.0.0.1:{port_a}/webhooks/github", world.secret)
        a = Serve(config, port_a, tmp_path / "a.log").start()
        b = Serve(config, port_b, tmp_path / "b.log").start()
        processes += [a, b]
        issues = [world.open_issue(title=f"bug {i}") for i in range(2)]
        runs = [world.wait_state(i, RunState.RUNNING, timeout=90) for i in issues]

        def owners() -> dict[str, str] | None:
            found = {r.id: world.store.current_lease(r.id) for r in runs}
            if all(found.values()):
                return {run_id: lease.worker for run_id, lease in found.items()}
            return None

        owner = world.wait_for(owners, 60, "both runs claimed")
        assert set(owner.values()) == {a.worker, b.worker}, (owner, a.output(), b.output())
        on_b = next(r for r in runs if owner[r.id] == b.worker)
        world.forge.comment(REPO, on_b.issue, "/kill stop it", as_user=MAINTAINER)
        killed = world.wait_state(on_b.issue, RunState.CANCELLED, timeout=30)
        assert killed.killed_by == MAINTAINER
        event = next(e for e in world.store.events(killed.id, limit=1000) if e.kind == "killed")
        assert event.data["reason"] == "stop it"
        world.wait_finished(on_b.issue)
        assert containers_of(docker_client, killed.id) == []
        other = next(r for r in runs if r.id != on_b.id)
        world.forge.comment(REPO, other.issue, "/kill", as_user=MAINTAINER)
        assert world.wait_finished(other.issue).state is RunState.CANCELLED
