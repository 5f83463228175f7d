"""An API world: the forge emulator with the sample repository, a wired runner (real SQLite
store, real forge adapter) and its HTTP server on loopback. The controller's loop is not
started, so runs created here stay where the test puts them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from runner.config import Settings
from runner.server import ServerHandle, serve_in_thread
from runner.testing.demo import DemoWorld
from runner.wiring import Runner, build


@dataclass
class ApiWorld:
    world: DemoWorld
    runner: Runner
    server: ServerHandle

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token(self) -> str:
        return self.world.env["DEMO_API_TOKEN"]

    def client(self, token: str | None = "default") -> httpx.Client:
        """An HTTP client, with the API token unless ``token`` is None (or another one)."""
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {self.token if token == 'default' else token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


def api_world_at(path: Path) -> Iterator[ApiWorld]:
    """Start an ApiWorld in ``path``; stops it when the generator is closed."""
    world = DemoWorld(path, sandbox="local", start_runner=False).start()
    try:
        runner = build(Settings.model_validate(world.settings_dict()), worker="api-test")
        server = serve_in_thread(runner, "127.0.0.1", 0)
        world.runner, world.server = runner, server
        yield ApiWorld(world, runner, server)
    finally:
        world.stop()


@pytest.fixture
def api_world(tmp_path: Path) -> Iterator[ApiWorld]:
    yield from api_world_at(tmp_path)


@pytest.fixture(scope="module")
def shared_api_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiWorld]:
    """One world for a whole module (the schemathesis run)."""
    yield from api_world_at(tmp_path_factory.mktemp("api"))
