"""What the tests share besides fixtures (those are all in tests/conftest.py): services they
start (redis-server, `orchestrator serve` processes) and the checks of what a run left behind.

A test that needs Docker or Redis fails when CI is set and the engine is missing; elsewhere it
skips with a message saying what to install (``missing``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runner.model import Run
from runner.testing.demo import REPO, DemoWorld, fixing_agent
from runner.testing.llm import Policy, Reply, Request

IN_CI = bool(os.environ.get("CI"))
ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")  # the installed command
SANDBOX_IMAGE = "orchestrator-sandbox:latest"  # scripts/build-sandbox-image builds it


def missing(what: str) -> None:
    """Fail under CI, skip elsewhere: ``what`` says what is missing and how to get it."""
    if IN_CI:
        pytest.fail(f"{what} (CI is set, so this fails instead of skipping)")
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class RedisServer:
    """A real redis-server on a free loopback port, in its own directory."""

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        self.workdir = workdir
        # persistent: an append-only file synced on every write, as a deployment runs it, so
        # the data outlives a restart; the session's shared server keeps nothing.
        self.persistent = persistent
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or shutil.which("valkey-server")
        if binary is None:
            missing("redis-server is not installed (apt-get install redis-server)")
        assert binary is not None
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(self.workdir),
             *(["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
               else ["--appendonly", "no"])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()


# ---------------------------------------------------------------- agents


def two_step_agent() -> Policy:
    """Iteration 1 fixes add() only; CI also wants sub(); iteration 2 adds it."""
    first = fixing_agent()

    def policy(request: Request) -> Reply:
        if "what failed last time" not in request.first_user_text():
            return first(request)
        if request.turn == 0:
            return Reply.bash("printf '\\n\\ndef sub(a, b):\\n    return a - b\\n' >> calc.py",
                              "CI wants sub(); adding it.")
        return Reply.finish("Added sub()")

    return policy


# ---------------------------------------------------------------- what a run left behind

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


def events_of(world: DemoWorld, run: Run) -> list[Any]:
    """Every audit event of ``run``."""
    return list(world.store.events(run.id, limit=100000))


def assert_clean(world: DemoWorld, docker_client: Any, run: Run, data_dir: Path) -> None:
    """No run lost, no orphan container or worktree, no duplicate PR or status comment."""
    assert run.terminal, f"run {run.id} is {run.state}: lost"
    assert containers_of(docker_client, run.id) == [], "orphan container"
    assert worktrees_left(data_dir) == [], "orphan worktree"
    assert len(pulls_from(world.forge, run.branch)) <= 1, "duplicate pull request"
    assert len(status_comments(world.forge, run.issue)) <= 1, "duplicate status comment"
    assert len(world.store.list_runs(repo=REPO, limit=1000)) >= 1


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


ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"  # screenshots (gitignored)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
