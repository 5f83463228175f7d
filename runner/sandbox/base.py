"""The Sandbox protocol: where the agent's commands run, seeing the worktree and nothing else."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

WORKSPACE = "/workspace"  # where the worktree appears inside a sandbox
CHANNEL = "/run/orchestrator"  # where a sandbox sees its model-gateway directory (read-only)
# Set in every sandbox: no __pycache__ written into the worktree, where it would be committed
# and where a stale .pyc (same size, same second) can hide an edit from the tests.
BASE_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}


def secret_values(names: Iterable[str], environ: Mapping[str, str] | None = None) -> set[str]:
    """The values of the environment variables ``names`` (the runner's secrets)."""
    env = os.environ if environ is None else environ
    return {env[n] for n in names if env.get(n)}


def leaked_names(env: Mapping[str, str], secrets: Iterable[str]) -> list[str]:
    """The names in ``env`` whose value holds one of ``secrets`` (sorted)."""
    found = [s for s in secrets if s]
    return sorted(name for name, value in env.items() if any(s in value for s in found))


class SandboxError(Exception):
    """The sandbox could not be created or used; the message says what to do."""


@dataclass(frozen=True)
class SandboxSpec:
    """What a run's sandbox is made from. Never carries a secret."""

    run_id: str
    repo: str
    issue: int
    worktree: Path
    image: str = "orchestrator-sandbox:latest"
    cpus: float = 2.0
    memory: int = 2 * 1024**3  # bytes
    pids: int = 512
    network: str = "none"  # none | bridge
    runtime: str | None = None  # the engine's OCI runtime (runsc: gVisor); None: its default
    gateway: bool = False  # share a directory for the model gateway's socket (CHANNEL)
    env: dict[str, str] = field(default_factory=dict)  # only what the config names explicitly


@dataclass(frozen=True)
class ExecResult:
    exit_code: int  # -1 when the command was killed for its timeout or a cancel
    output: str  # stdout and stderr interleaved
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


OutputCallback = Callable[[str], None]


class Sandbox(Protocol):
    """One run's isolated place to execute commands."""

    run_id: str
    name: str  # container name (or a label for the local backend)

    def exec(self, command: str | list[str], *, timeout: float | None = None,
             on_output: OutputCallback | None = None, workdir: str = WORKSPACE,
             stdin: bytes | None = None) -> ExecResult:
        """Run a command (a string goes to ``bash -lc``), streaming output, and wait for it.

        A command still running at ``timeout`` seconds is killed (``timed_out`` is set).
        """

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, ``grace`` seconds, then SIGKILL. Safe to call twice."""

    def channel(self) -> tuple[Path, str] | None:
        """The directory shared with this sandbox for the model gateway's socket: its path
        on the host and inside the sandbox; None when the sandbox was made without one."""

    def remove(self) -> None:
        """Stop and delete the sandbox. Safe to call twice."""


class SandboxBackend(Protocol):
    """Makes sandboxes and cleans up the ones no live run owns."""

    def start(self, spec: SandboxSpec) -> Sandbox:
        """Create and start a sandbox for a run, or reattach to the run's existing one."""

    def find(self, run_id: str) -> Sandbox | None:
        """The run's sandbox, if one exists."""

    def remove_orphans(self, live_run_ids: Iterable[str]) -> list[str]:
        """Remove sandboxes whose run is not in ``live_run_ids``; return their names."""

    def ping(self) -> None:
        """SandboxError unless the backend is usable (engine reachable, image present)."""


class WarmSandboxes(Protocol):
    """Sandboxes started before any run needs them (a backend whose sandboxes start slowly
    has such a pool; one whose sandboxes start at once has none)."""

    def add(self, template: SandboxSpec, count: int) -> bool:
        """Start one more sandbox ahead of any run if fewer than ``count`` wait; True when
        it did."""

    def take(self, spec: SandboxSpec) -> bool:
        """Give run ``spec.run_id`` a warm sandbox, if one matching ``spec`` waits: its
        empty workspace directory is moved to ``spec.worktree`` (which must not exist yet),
        and the backend's ``start`` then returns that sandbox. False when none waits."""

    def drain(self) -> None:
        """Remove the warm sandboxes no run took."""

    def ready(self) -> int:
        """How many warm sandboxes wait now."""
