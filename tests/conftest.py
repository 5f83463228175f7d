"""Every fixture shared by more than one folder of tests, in one place; the helpers they use
are in tests/support.py.

- services: a real redis-server (session-wide, or one that survives a restart), a real Docker
  engine and the sandbox image; `orchestrator serve` processes; a world whose `serve`
  processes share Redis;
- git: an upstream repository and the runner's workspaces on it;
- the fast tier: a ``FakeClock`` and a world of emulators and a runner in this process on the
  local sandbox backend, and the ``fast`` marker on tests/fast and tests/unit.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.clock import FakeClock
from runner.testing.demo import DemoWorld
from runner.workspace import Workspaces
from tests.integration.workspace.gitrepo import Upstream
from tests.support import CHROMIUM_ARGS, SANDBOX_IMAGE, RedisServer, Serve, missing

# ---------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A fresh (flushed) database on the session's redis-server."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server whose data survives a restart (``.stop()`` then ``.start()``)."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, persistent=True).start()
    yield server
    server.stop()


# ---------------------------------------------------------------- Docker


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
    """A client of a real Docker engine."""
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as exc:
        missing(f"no Docker engine answers ({exc}); start dockerd or set DOCKER_HOST")
    return client


@pytest.fixture(scope="session")
def sandbox_image(docker_client: Any) -> str:
    """The sandbox image, which must exist: scripts/test builds it before pytest."""
    import docker.errors

    try:
        docker_client.images.get(SANDBOX_IMAGE)
    except docker.errors.ImageNotFound:
        missing(f"the image {SANDBOX_IMAGE} is missing: run scripts/build-sandbox-image")
    return SANDBOX_IMAGE


# ---------------------------------------------------------------- `serve` processes


@pytest.fixture
def processes() -> Iterator[list[Serve]]:
    """`serve` processes a test started; stopped (SIGTERM) at the end whatever happened."""
    started: list[Serve] = []
    yield started
    for serve in started:
        serve.stop()


@pytest.fixture
def redis_world(tmp_path: Path, redis_url: str) -> Iterator[DemoWorld]:
    """The emulators, with the runner's configuration on a fresh Redis database, for `serve`
    processes that share it (``start_serve``); two slots each, a 5 s lease, CI up to 10 min."""
    with DemoWorld(tmp_path, start_runner=False,
                   settings={"store": {"redis": redis_url},
                             "limits": {"max_concurrent": 2, "lease_ttl": "5s",
                                        "ci_timeout": "10m"}}) as world:
        yield world


# ---------------------------------------------------------------- git


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    """A repository to clone, with commits on main."""
    return Upstream(tmp_path)


@pytest.fixture
def workspaces(tmp_path: Path) -> Workspaces:
    """The runner's mirrors and worktrees, in the test's directory."""
    return Workspaces(tmp_path / "data")


# ---------------------------------------------------------------- the fast tier

FAST_FOLDERS = ("tests/fast/", "tests/unit/")


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by the marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``fast``: every test in tests/fast and tests/unit that is not marked ``slow``, ``docker``
    or ``redis`` (``scripts/test -m fast``; CI runs them first)."""
    root = Path(str(config.rootpath))
    for item in items:
        where = Path(str(item.path)).relative_to(root).as_posix()
        if where.startswith(FAST_FOLDERS) and not any(
                item.get_closest_marker(name) for name in ("slow", "docker", "redis")):
            item.add_marker(pytest.mark.fast)


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves forward (``clock.advance``) instead of sleeping."""
    return FakeClock()


@pytest.fixture
def local_world(tmp_path: Path, clock: FakeClock) -> Iterator[Callable[..., DemoWorld]]:
    """``local_world(**DemoWorld options)``: the emulators and a runner in this process, on
    the local sandbox backend (no Docker) and SQLite, going by ``clock``; stopped at the end."""
    started: list[DemoWorld] = []

    def make(**options: Any) -> DemoWorld:
        world = DemoWorld(tmp_path / f"world{len(started)}", sandbox="local", clock=clock,
                          **options)
        started.append(world)
        return world.start()

    yield make
    for world in started:
        world.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium browser from Debian's package (playwright drives it; it never
    downloads one)."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        missing("Chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright-python is not installed (pip install playwright; no browser "
                "download is needed: the test uses Debian's chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
