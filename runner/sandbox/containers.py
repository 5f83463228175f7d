"""This deployment's containers on one Docker engine, as run sandboxes and warm sandboxes
both make and find them: their names and labels, and the creation of a locked-down container.

The run sandboxes (``runner.sandbox.docker``) and the warm pool (``runner.sandbox.warm``)
each import this module and never each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import Mount

from runner.sandbox.base import (
    BASE_ENV,
    CHANNEL,
    WORKSPACE,
    SandboxError,
    SandboxSpec,
    leaked_names,
)

LABEL_RUN = "orchestrator.run"
LABEL_REPO = "orchestrator.repo"
LABEL_ISSUE = "orchestrator.issue"
# Which runner deployment made a container: orphan removal never touches another's (two
# runners, or a runner and a test suite, may share one engine).
LABEL_INSTANCE = "orchestrator.instance"
# On a warm sandbox: the runner process ("host:pid:start") keeping it, until a run takes it.
LABEL_WARM = "orchestrator.warm"
LABEL_SHAPE = "orchestrator.spec"  # on a warm sandbox: the fingerprint of its spec
HOME = "/home/agent"
FALLBACK_UID = 1000  # the image's unprivileged user, for worktrees owned by root
RUN_PREFIX = "orchestrator-"
WARM_PREFIX = "orchestrator-warm-"
CHANNEL_DIRS = "gateway"  # under the state directory: one directory per container, mode 0755
WARM_DIRS = "warm"  # under the state directory: one empty workspace per warm sandbox


def container_name(run_id: str) -> str:
    """The name of a run's container: found again after a restart by this name."""
    return f"{RUN_PREFIX}{run_id}"


def run_of(container: Any) -> str | None:
    """The run a container belongs to; None for a warm sandbox no run has taken."""
    if LABEL_RUN in container.labels:
        return str(container.labels[LABEL_RUN])
    name = str(container.name)
    if name.startswith(WARM_PREFIX) or not name.startswith(RUN_PREFIX):
        return None
    return name.removeprefix(RUN_PREFIX).split(".")[0]  # a warm sandbox renamed for its run


def process_token(pid: int | None = None) -> str:
    """"host:pid:start" naming a process for good (a pid alone is reused, by pid 1 of a
    restarted runner container among others)."""
    pid = os.getpid() if pid is None else pid
    try:
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        start = "?"
    return f"{socket.gethostname()}:{pid}:{start}"


def owner_alive(container: Any) -> bool:
    """Whether the runner process keeping this warm sandbox still runs. Another host's
    are left alone: only that host can tell."""
    host, _, rest = str(container.labels.get(LABEL_WARM, "")).partition(":")
    if host != socket.gethostname():
        return True
    pid = rest.partition(":")[0]
    return pid.isdigit() and process_token(int(pid)) == container.labels[LABEL_WARM]


def explain(exc: docker.errors.APIError) -> str:
    """The engine's own words for a failed request."""
    return str(getattr(exc, "explanation", None) or exc)


class Containers:
    """One runner deployment's containers on a Docker engine: it creates them locked down,
    and lists only its own (``instance``)."""

    def __init__(self, client: docker.DockerClient | None = None, *, state_dir: str | Path,
                 secrets: Iterable[str] = (), instance: str | None = None) -> None:
        """``state_dir`` holds the gateway channels and warm workspaces; ``secrets`` are
        values that must never reach a container (a spec carrying one is refused);
        ``instance`` names this runner deployment (default: derived from ``state_dir``)."""
        self._client = client
        self.state_dir = Path(state_dir).resolve()
        self.instance = instance or hashlib.sha256(
            str(self.state_dir).encode()).hexdigest()[:16]
        self._secrets = frozenset(s for s in secrets if s)

    @property
    def client(self) -> docker.DockerClient:
        """The engine's client, connected on first use; SandboxError when none answers."""
        if self._client is None:
            try:
                self._client = docker.from_env(timeout=60)
            except docker.errors.DockerException as exc:
                raise SandboxError(f"no Docker engine answers ({exc}); start dockerd or set "
                                   "DOCKER_HOST, or set sandbox.backend: local (no isolation)"
                                   ) from None
        return self._client

    def require_image(self, image: str) -> None:
        """SandboxError unless the engine has ``image``."""
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            raise SandboxError(f"the sandbox image {image} is missing: run "
                               "scripts/build-sandbox-image") from None

    def own(self) -> list[Any]:
        """Every container this deployment made, running or not."""
        return list(self.client.containers.list(
            all=True, filters={"label": f"{LABEL_INSTANCE}={self.instance}"}))

    def create(self, spec: SandboxSpec, *, name: str, workspace: Path, uid: int, gid: int,
               labels: dict[str, str], extra_mounts: Sequence[Mount] = ()) -> Any:
        """Create and start a locked-down container with ``workspace`` at /workspace; None
        when a container of that name exists already."""
        leaked = leaked_names(spec.env, self._secrets)
        if leaked:
            raise SandboxError(f"refusing to pass {', '.join(leaked)} into the sandbox: "
                               "it holds one of the runner's secrets")
        self.require_image(spec.image)
        mounts = [Mount(WORKSPACE, str(workspace), type="bind"), *extra_mounts]
        channel = None
        if spec.gateway:
            # The model gateway puts its socket here (runner.agent.gateway); read-only inside.
            channel = self.state_dir / CHANNEL_DIRS / uuid.uuid4().hex[:16]
            channel.mkdir(parents=True)
            channel.chmod(0o755)
            mounts.append(Mount(CHANNEL, str(channel), type="bind", read_only=True))
        tmpfs_opts = "rw,nosuid,nodev"
        try:
            container = self.client.containers.create(
                spec.image, ["sleep", "infinity"], name=name, hostname="sandbox",
                labels={**labels, LABEL_INSTANCE: self.instance},
                user=f"{uid}:{gid}", working_dir=WORKSPACE,
                environment={**BASE_ENV, "HOME": HOME, **spec.env},
                mounts=mounts, runtime=spec.runtime,
                read_only=True,
                # the container's own tmpfs, not the host's /tmp
                tmpfs={"/tmp": f"{tmpfs_opts},mode=1777",  # noqa: S108
                       HOME: f"{tmpfs_opts},mode=0700,uid={uid},gid={gid}"},
                cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
                pids_limit=spec.pids, mem_limit=spec.memory, memswap_limit=spec.memory,
                nano_cpus=int(spec.cpus * 1e9),
                network_mode="none" if spec.network == "none" else spec.network,
                init=True, ipc_mode="private", stop_signal="SIGTERM",
            )
        except docker.errors.APIError as exc:
            if channel is not None:
                shutil.rmtree(channel, ignore_errors=True)
            if exc.status_code == 409:
                return None
            if spec.runtime and "runtime" in explain(exc).lower():
                raise SandboxError(f"the Docker engine has no runtime {spec.runtime!r} "
                                   f"(sandbox.runtime): {explain(exc)}; for gVisor run "
                                   "scripts/register-runsc as root, or unset sandbox.runtime"
                                   ) from None
            raise SandboxError(f"cannot create the sandbox {name}: {explain(exc)}") from None
        try:
            container.start()
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
            if channel is not None:
                shutil.rmtree(channel, ignore_errors=True)
            raise SandboxError(f"cannot start the sandbox {name}: {explain(exc)}") from None
        return container

    def remove_orphan_warm_dirs(self, kept: set[str]) -> None:
        """Remove the empty workspace directories of warm sandboxes whose container is not
        in ``kept`` (a runner that crashed left them)."""
        root = self.state_dir / WARM_DIRS
        if not root.is_dir():
            return
        young = time.time() - 60  # another process may be about to create its container
        for path in root.iterdir():
            with contextlib.suppress(OSError):
                if path.stat().st_mtime > young:
                    continue
            if f"{WARM_PREFIX}{path.name}" not in kept:
                with contextlib.suppress(OSError):
                    path.rmdir()  # only when empty: a run's files are never here

    def remove_orphan_channels(self) -> None:
        """Remove gateway directories no container of this deployment mounts (a crash)."""
        root = self.state_dir / CHANNEL_DIRS
        if not root.is_dir():
            return
        used = {str(m.get("Source")) for c in self.own()
                for m in c.attrs.get("Mounts") or [] if m.get("Destination") == CHANNEL}
        young = time.time() - 60  # a container may be about to be made with it
        for path in root.iterdir():
            with contextlib.suppress(OSError):
                if str(path) not in used and path.stat().st_mtime < young:
                    shutil.rmtree(path, ignore_errors=True)
