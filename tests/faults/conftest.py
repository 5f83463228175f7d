"""Fault fixtures: the end-state checks every fault test ends with, and `serve` processes.

Every fault test ends the same way: the run is not lost (it reached a terminal state), and it
left nothing behind: no container, no worktree, at most one pull request and one status
comment for its issue. ``assert_clean`` says that once, for all of them.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.model import Run
from runner.testing.demo import REPO, DemoWorld
from tests.conftest import free_port, missing, wait_for_port
from tests.e2e.conftest import (
    containers_of,
    pulls_from,
    sandbox_image,
    status_comments,
    worktrees_left,
)
from tests.e2e.test_processes import Serve

__all__ = ["PersistentRedis", "Serve", "assert_clean", "events_of", "processes",
           "sandbox_image"]


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


@pytest.fixture
def processes() -> Iterator[list[Serve]]:
    """`serve` processes a test started; stopped (SIGTERM) at the end whatever happened."""
    started: list[Serve] = []
    yield started
    for serve in started:
        serve.stop()


class PersistentRedis:
    """A redis-server that keeps its data across a restart (append-only file, fsync on every
    write), as a deployment would run it; the session's shared server keeps nothing."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PersistentRedis:
        binary = shutil.which("redis-server") or shutil.which("valkey-server")
        if binary is None:
            missing("redis-server is not installed (apt-get install redis-server)")
        assert binary is not None
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[PersistentRedis]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = PersistentRedis(directory).start()
    yield server
    server.stop()
