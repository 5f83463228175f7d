"""A fleet under real faults: three runner containers, one Valkey, the emulators.

The runner image is the project's Dockerfile (built once per session, tests/runner_image.py);
the store is Debian's redis-server in an image built here from Debian's packages (no
registry), with its append-only file on. Two private networks:

- ``store``: Valkey (alias ``valkey``) and the runners;
- ``edge``: the runners, and the host at the network's gateway address, where the forge and
  LLM emulators of a DemoWorld listen (the test reads and drives them in this process).

Cutting a runner off is ``docker network disconnect``: from ``store`` alone it still reaches
the forge and the LLM; from both it reaches nothing but its Docker engine (the mounted
socket, which is how it runs the agents' containers, as docs/scaling.md describes). Each
runner's data directory is mounted at the same path inside as on the host, since the engine
bind-mounts a run's worktree into the agent's container by its host path.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.model import Run, RunState
from runner.testing.demo import REPO, DemoWorld
from runner.testing.llm import Policy
from tests.runner_image import LOCAL_BASE, build_runner_image, docker
from tests.runner_image import require_docker as require_engine
from tests.support import containers_of, missing, pulls_from, status_comments, worktrees_left

FLEET_IMAGE = "orchestrator-runner:fleet"
VALKEY_IMAGE = "orchestrator-fleet-valkey:bookworm"
VALKEY_DOCKERFILE = f"""\
FROM {LOCAL_BASE}
USER root
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \\
 && rm -rf /var/lib/apt/lists/* && mkdir -p /data
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data", \\
     "--save", "", "--appendonly", "yes", "--appendfsync", "always"]
"""
LEASE_TTL = 3.0  # seconds: small, so takeovers happen within the test's budget
RUNNERS = 3


def require_docker() -> None:
    """Fail under CI, skip elsewhere, without a Docker engine, the local base image and the
    sandbox image."""
    require_engine()
    if docker("image", "inspect", "orchestrator-sandbox:latest").returncode != 0:
        missing("the image orchestrator-sandbox:latest is missing: run "
                "scripts/build-sandbox-image")


def must(*args: str, timeout: float = 120) -> str:
    """``docker ARGS``'s output; AssertionError with its stderr when it fails."""
    done = docker(*args, timeout=timeout)
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout.strip()


def build_valkey_image() -> str:
    """Debian's redis-server on the local base: no registry, apt from Debian's mirror."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "Dockerfile").write_text(VALKEY_DOCKERFILE)
        must("build", "--network", "host", "--pull=false", "-q", "-t", VALKEY_IMAGE, tmp,
             timeout=540)
    return VALKEY_IMAGE


@pytest.fixture(scope="session")
def fleet_images() -> tuple[str, str]:
    """(runner image id, Valkey image), built once per session."""
    require_docker()
    return build_runner_image(FLEET_IMAGE), build_valkey_image()


class Runner:
    """One `orchestrator serve` in its own container, with its own data directory."""

    def __init__(self, fleet: Fleet, index: int) -> None:
        self.fleet = fleet
        self.name = f"{fleet.prefix}-r{index}"
        self.data_dir = fleet.root / f"data-r{index}"
        self.config = fleet.root / f"r{index}.yml"
        self.partitioned_from: list[str] = []
        self.seen_addresses: set[str] = set()

    @property
    def worker_prefix(self) -> str:
        """The start of this runner's worker id (``host:pid``; the host is the name)."""
        return f"{self.name}:"

    def start(self) -> Runner:
        fleet = self.fleet
        self.data_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            # The image's user (10001) writes there, as in a deployment (compose.yaml).
            os.chown(self.data_dir, 10001, 10001)
            user: list[str] = []
        else:  # the test's user can then remove what the runner leaves
            user = ["--user", f"{os.getuid()}:{os.getgid()}", "-e", f"HOME={self.data_dir}"]
        settings = fleet.world.settings_dict()
        settings["data_dir"] = str(self.data_dir)
        settings["store"] = {"redis": "redis://valkey:6379/0"}
        settings["server"] = {**settings["server"], "host": "0.0.0.0", "port": 8080}
        self.config.write_text(yaml.safe_dump(settings, sort_keys=False))
        self.config.chmod(0o644)
        socket_gid = os.stat("/var/run/docker.sock").st_gid
        env = {**fleet.world.env, "ORCHESTRATOR_DATA_DIR": str(self.data_dir),
               "ORCHESTRATOR_STORE__REDIS": "redis://valkey:6379/0",
               "DOCKER_HOST": "unix:///var/run/docker.sock"}
        env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        docker("rm", "-f", self.name)
        must("run", "-d", "--name", self.name, "--hostname", self.name,
             "--label", f"orchestrator.fleet={fleet.prefix}", "--network", fleet.store_net,
             *user, "--group-add", str(socket_gid),
             "-v", "/var/run/docker.sock:/var/run/docker.sock",
             "-v", f"{self.data_dir}:{self.data_dir}",
             "-v", f"{self.config}:/etc/orchestrator/orchestrator.yml:ro",
             *env_args, fleet.runner_image, "serve")
        must("network", "connect", fleet.edge_net, self.name)
        self.partitioned_from = []
        self.seen_addresses.add(self.address)
        return self

    @property
    def address(self) -> str:
        """This runner's address on the edge network (where the forge delivers webhooks)."""
        return must("inspect", "-f",
                    f'{{{{(index .NetworkSettings.Networks "{self.fleet.edge_net}").IPAddress}}}}',
                    self.name)

    def partition(self, *, store: bool = True, edge: bool = True) -> None:
        """Cut this runner off: from Valkey (``store``), the forge and the LLM (``edge``)."""
        for net, cut in ((self.fleet.store_net, store), (self.fleet.edge_net, edge)):
            if cut:
                must("network", "disconnect", net, self.name)
                self.partitioned_from.append(net)

    def heal(self, *, store: bool = True, edge: bool = True) -> None:
        for net, back in ((self.fleet.store_net, store), (self.fleet.edge_net, edge)):
            if back and net in self.partitioned_from:
                must("network", "connect", net, self.name)
                self.partitioned_from.remove(net)
        if self.fleet.edge_net not in self.partitioned_from:
            self.seen_addresses.add(self.address)

    def kill(self) -> None:
        must("kill", self.name)

    def stop(self) -> None:
        must("stop", "-t", "20", self.name, timeout=60)

    def logs(self) -> str:
        done = docker("logs", "--tail", "60", self.name)
        return done.stdout + done.stderr

    def running(self) -> bool:
        return must("inspect", "-f", "{{.State.Running}}", self.name) == "true"


class Fleet:
    """Three runners sharing one Valkey, the emulators of ``world`` on the edge network."""

    def __init__(self, root: Path, images: tuple[str, str], agent: Policy | None) -> None:
        self.root = root
        self.runner_image, self.valkey_image = images
        self.prefix = f"fleet-{secrets.token_hex(3)}"
        self.store_net, self.edge_net = f"{self.prefix}-store", f"{self.prefix}-edge"
        self.valkey = f"{self.prefix}-valkey"
        self.agent = agent
        self.runners: list[Runner] = []
        self.world: DemoWorld

    def start(self) -> Fleet:
        must("network", "create", "--label", f"orchestrator.fleet={self.prefix}",
             self.store_net)
        must("network", "create", "--label", f"orchestrator.fleet={self.prefix}",
             self.edge_net)
        gateway = must("network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}",
                       self.edge_net)
        self.start_valkey()
        self.world = DemoWorld(
            self.root / "world", agent=self.agent, start_runner=False, host=gateway,
            settings={"store": {"redis": self.valkey_url},
                      "limits": {"max_concurrent": 2, "per_repo": 10, "poll_interval": "3s",
                                 "lease_ttl": f"{LEASE_TTL:g}s", "ci_timeout": "120s",
                                 "ci_poll_interval": "2s"}}).start()
        self.runners = [Runner(self, i) for i in range(1, RUNNERS + 1)]
        for runner in self.runners:
            runner.start()
        for runner in self.runners:
            self.wait_healthy(runner)
            self.world.forge.add_webhook(REPO, f"http://{runner.address}:8080/webhooks/github",
                                         self.world.secret)
        return self

    def start_valkey(self) -> None:
        must("run", "-d", "--name", self.valkey, "--label", f"orchestrator.fleet={self.prefix}",
             "--network", self.store_net, "--network-alias", "valkey", self.valkey_image)
        self.wait_valkey()

    @property
    def valkey_url(self) -> str:
        """Valkey as the test (on the host) reaches it: by its address on the store network."""
        address = must("inspect", "-f",
                       f'{{{{(index .NetworkSettings.Networks "{self.store_net}").IPAddress}}}}',
                       self.valkey)
        return f"redis://{address}:6379/0"

    def reopen_store(self) -> None:
        """The test's own connection to Valkey, opened again at its current address."""
        from runner.store.redis import RedisStore

        self.world._store = RedisStore(self.valkey_url)

    def wait_valkey(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if docker("exec", self.valkey, "redis-cli", "ping").stdout.strip() == "PONG":
                return
            time.sleep(0.2)
        raise AssertionError(f"Valkey did not answer within {timeout:.0f}s")

    def wait_healthy(self, runner: Runner, timeout: float = 90) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, AssertionError):
                if httpx.get(f"http://{runner.address}:8080/healthz", timeout=2).is_success:
                    return
            time.sleep(0.3)
        raise AssertionError(f"{runner.name} not healthy within {timeout:.0f}s:\n"
                             f"{runner.logs()}")

    def owner(self, run: Run) -> Runner | None:
        """The runner holding ``run``'s lease now, if any."""
        lease = self.world.store.current_lease(run.id)
        if lease is None:
            return None
        return next((r for r in self.runners if lease.worker.startswith(r.worker_prefix)),
                    None)

    def logs(self) -> str:
        return "\n".join(f"--- {r.name}\n{r.logs()}" for r in self.runners)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.world.stop()
        names = [r.name for r in self.runners] + [self.valkey]
        docker("rm", "-f", *names, timeout=120)
        # The agents' containers (and warm sandboxes) the runners started and did not remove
        # (a killed runner cannot): those with a mount in one of this fleet's data dirs.
        ids = docker("ps", "-aq").stdout.split()
        mounts = docker("inspect", "-f", "{{.Id}} {{range .Mounts}}{{.Source}} {{end}}",
                        *ids).stdout.splitlines() if ids else []
        ours = [line.split()[0] for line in mounts
                if any(f" {r.data_dir}/" in f" {line} " for r in self.runners)]
        if ours:
            docker("rm", "-f", *ours, timeout=120)
        docker("network", "rm", self.store_net, self.edge_net)


@pytest.fixture
def fleet_factory(fleet_images: tuple[str, str], tmp_path: Path) -> Iterator[Any]:
    """``fleet_factory(agent=...)``: a started Fleet, torn down at the end."""
    started: list[Fleet] = []

    def make(agent: Policy | None = None) -> Fleet:
        fleet = Fleet(tmp_path, fleet_images, agent).start()
        started.append(fleet)
        return fleet

    yield make
    for fleet in started:
        fleet.stop()


def assert_fleet_clean(fleet: Fleet, docker_client: Any, run: Run) -> None:
    """tests/faults' end state, over the whole fleet: the run ended once, no runner left a
    container or a worktree for it, one status comment, one PR (at most one if it did not
    succeed), one run for the issue."""
    world = fleet.world
    assert run.terminal, f"run {run.id} is {run.state}: lost"
    # A runner that took one of the run's steps keeps its worktree (and a container it still
    # had) until its next poll sees that the run ended elsewhere (limits.poll_interval).
    with contextlib.suppress(TimeoutError):
        world.wait_for(lambda: not containers_of(docker_client, run.id) and
                       not any(worktrees_left(r.data_dir) for r in fleet.runners), 20,
                       "the removal of the run's containers and worktrees")
    assert containers_of(docker_client, run.id) == [], "orphan container"
    for runner in fleet.runners:
        assert worktrees_left(runner.data_dir) == [], f"orphan worktree on {runner.name}"
    pulls = pulls_from(world.forge, run.branch)
    assert len(pulls) == (1 if run.state is RunState.SUCCEEDED else len(pulls[:1])), \
        f"pull requests for #{run.issue}: {pulls}"
    assert len(status_comments(world.forge, run.issue)) == 1, "not one status comment"
    runs = [r for r in world.store.list_runs(repo=REPO, limit=1000) if r.issue == run.issue]
    assert [r.id for r in runs] == [run.id], f"more than one run for #{run.issue}: {runs}"
    endings = [e for e in world.store.events(run.id, limit=100000) if e.kind == "transition"
               and e.data.get("to") in ("succeeded", "failed", "cancelled")]
    assert len(endings) == 1, f"run {run.id} ended {len(endings)} times"


def forge_writes_by(world: DemoWorld, addresses: set[str], since: float) -> list[str]:
    """The forge writes (API or git push) made from ``addresses`` after ``since``."""
    return [f"{w.method} {w.path}" for w in list(world.forge.writes)
            if w.client in addresses and w.at >= since]


def runner_processes(name: str) -> list[str]:
    """The command lines running in container ``name`` (for a failure message)."""
    done = subprocess.run(["docker", "top", name], capture_output=True, text=True)
    return done.stdout.splitlines()


def stale_writes_by(world: DemoWorld, runner_addresses: set[str], run_id: str,
                    worker_prefix: str, since: float) -> list[str]:
    """The forge writes made from ``runner_addresses`` after ``since`` and before that runner
    claimed ``run_id`` again: writes under the lease it held at ``since``. A healed runner
    may rightly resume a run that waits (under a new fence); what it must never do is write
    for the lease it lost."""
    reclaims = [e.at for e in world.store.events(run_id, limit=100000)
                if e.kind == "claimed" and e.at >= since
                and str(e.data.get("worker", "")).startswith(worker_prefix)]
    until = min(reclaims, default=float("inf"))
    return [f"{w.method} {w.path}" for w in list(world.forge.writes)
            if w.client in runner_addresses and since <= w.at < until]
