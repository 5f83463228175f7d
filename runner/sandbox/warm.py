"""Warm sandboxes: containers started before any run needs them.

Starting a container takes a second or more on a loaded engine, and twenty at once take many
seconds: the runner keeps some ready. Each waits with an empty workspace directory mounted at
/workspace. A run takes one by moving that directory to its worktree path (a rename: the
mount follows the directory, not its name) and renaming the container after the run; the
worktree is then checked out into the directory the container already sees.

A warm sandbox cannot mask the worktree's ``.git`` as a cold one does (the mask is a mount,
and mounts are fixed before the worktree exists). Nothing depends on the mask: host-side git
never trusts ``.git`` (see ``runner.workspace``: it names the run's git directory itself, never
resolves or repairs the entry), and run worktrees are locked against pruning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from runner.sandbox.base import SandboxError, SandboxSpec
from runner.sandbox.containers import (
    FALLBACK_UID,
    LABEL_SHAPE,
    LABEL_WARM,
    WARM_DIRS,
    WARM_PREFIX,
    Containers,
    container_name,
    process_token,
)

log = logging.getLogger(__name__)


def fingerprint(spec: SandboxSpec, uid: int, gid: int) -> str:
    """What makes two sandboxes interchangeable: image, limits, network, runtime, gateway
    channel, env and user."""
    shape = [spec.image, spec.cpus, spec.memory, spec.pids, spec.network,
             sorted(spec.env.items()), uid, gid, spec.runtime, spec.gateway]
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]


@dataclass
class _Warm:
    container: Any
    workspace: Path
    fingerprint: str


class WarmPool:
    """This process's warm sandboxes (another process never takes them). A run that took
    one finds it as its own with ``DockerBackend.start`` (same ``Containers``)."""

    def __init__(self, containers: Containers) -> None:
        self.containers = containers
        self.root = containers.state_dir / WARM_DIRS
        self.owner = process_token()
        self._idle: list[_Warm] = []
        self._lock = threading.Lock()

    def ready(self) -> int:
        """How many warm sandboxes wait now."""
        with self._lock:
            return len(self._idle)

    def _user(self) -> tuple[int, int]:
        if os.geteuid() == 0:
            return FALLBACK_UID, FALLBACK_UID
        return os.geteuid(), os.getegid()

    def add(self, template: SandboxSpec, count: int) -> bool:
        """Start one more if fewer than ``count`` wait; True when it did."""
        uid, gid = self._user()
        shape = fingerprint(template, uid, gid)
        with self._lock:
            # Sandboxes of an older shape (the configuration changed) go first.
            stale = [w for w in self._idle if w.fingerprint != shape]
            self._idle = [w for w in self._idle if w.fingerprint == shape]
            wanted = len(self._idle) < count
        for old in stale:
            self._discard(old)
        if not wanted:
            return False
        slot = uuid.uuid4().hex[:12]
        workspace = self.root / slot
        workspace.mkdir(parents=True)
        if os.geteuid() == 0:
            os.chown(workspace, uid, gid)
        try:
            container = self.containers.create(
                template, name=f"{WARM_PREFIX}{slot}", workspace=workspace, uid=uid, gid=gid,
                labels={LABEL_WARM: self.owner, LABEL_SHAPE: shape})
        except BaseException:
            with contextlib.suppress(OSError):
                workspace.rmdir()
            raise
        if container is None:
            raise SandboxError(f"a container named {WARM_PREFIX}{slot} exists already")
        with self._lock:
            self._idle.append(_Warm(container, workspace, shape))
        return True

    def take(self, spec: SandboxSpec) -> bool:
        """Hand a warm sandbox to ``spec.run_id``: its workspace directory becomes
        ``spec.worktree`` (which must not exist) and the container is renamed for the run.
        False when none matching ``spec`` waits."""
        uid, gid = self._user()
        shape = fingerprint(spec, uid, gid)
        with self._lock:
            found = next((w for w in self._idle if w.fingerprint == shape), None)
            if found is None:
                return False
            self._idle.remove(found)
        target = spec.worktree
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(found.workspace, target)
        except OSError as exc:  # e.g. the data directory spans two filesystems
            log.info("cannot hand a warm sandbox to run %s (%s); starting one", spec.run_id, exc)
            self._discard(found)
            return False
        try:
            found.container.rename(container_name(spec.run_id))
        except Exception as exc:  # an engine error, or the engine out of reach  # noqa: BLE001
            # The run has a container already (409), or the engine failed: put things back.
            log.info("cannot rename a warm sandbox for run %s: %s", spec.run_id, exc)
            with contextlib.suppress(OSError):
                os.rename(target, found.workspace)
            self._discard(found)
            return False
        return True

    def drain(self) -> None:
        """Remove every warm sandbox no run took (on shutdown), a few at a time."""
        with self._lock:
            idle, self._idle = self._idle, []
        if idle:
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(self._discard, idle))

    def _discard(self, warm: _Warm) -> None:
        with contextlib.suppress(docker.errors.APIError):
            warm.container.remove(force=True)
        with contextlib.suppress(OSError):
            warm.workspace.rmdir()
