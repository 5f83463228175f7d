"""Fault fixtures: the end-state checks every fault test ends with, and `serve` processes.

Every fault test ends the same way: the run is not lost (it reached a terminal state), and it
left nothing behind: no container, no worktree, at most one pull request and one status
comment for its issue. ``assert_clean`` says that once, for all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.model import Run
from runner.testing.demo import REPO, DemoWorld
from tests.conftest import RedisServer
from tests.e2e.conftest import (
    Serve,
    containers_of,
    processes,
    pulls_from,
    sandbox_image,
    start_serve,
    status_comments,
    worktrees_left,
)

__all__ = ["RedisServer", "Serve", "assert_clean", "events_of", "processes",
           "sandbox_image", "start_serve"]


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
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server whose data survives a restart (``.stop()`` then ``.start()``)."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, persistent=True).start()
    yield server
    server.stop()
