"""The Docker sandbox: one locked-down container per run, seeing only the run's worktree.

The container runs ``sleep infinity`` under an init process; the agent's commands are
``docker exec``-ed into it. It gets the worktree at ``/workspace`` with the worktree's ``.git``
entry masked by a read-only empty file, the worktree owner's uid:gid (never root), a
read-only root filesystem with tmpfs ``/tmp`` and ``HOME``, no capabilities,
no-new-privileges, pids/memory/CPU limits (swap off), and no network unless configured
(the container itself is made by ``runner.sandbox.containers``). Warm sandboxes, started
before their run, are ``runner.sandbox.warm``'s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import docker
import docker.errors
from docker.types import Mount

from runner.sandbox import streams
from runner.sandbox.base import (
    BASE_ENV,
    CHANNEL,
    WORKSPACE,
    ExecResult,
    OutputCallback,
    SandboxError,
    SandboxSpec,
)
from runner.sandbox.containers import (
    CHANNEL_DIRS,
    FALLBACK_UID,
    HOME,
    LABEL_INSTANCE,
    LABEL_ISSUE,
    LABEL_REPO,
    LABEL_RUN,
    LABEL_WARM,
    WARM_PREFIX,
    Containers,
    container_name,
    explain,
    owner_alive,
    run_of,
)

__all__ = ["WARM_PREFIX", "DockerBackend", "DockerSandbox", "container_name"]

KILL_AFTER = 2.0  # seconds between SIGTERM and SIGKILL for a command past its timeout


# Run by every command before it starts: "<pid> <start time in clock ticks>" into a file.
# /proc/PID/stat's fields after the ")" that closes the name: the start time is the 20th.
_RECORD = ('f() { echo "$$ ${20}"; }; read -r s < /proc/$$/stat; f ${s##*) } > "$0"; '
           'exec "$@"')
# After a timeout: kill every process (but init and this shell) started since the command
# began. The agent runs one command at a time, so those are the command's.
# Three passes: a parent killed in one pass may have forked between the scan and the kill.
_SWEEP = ('read -r pid start < "$0" || exit 0; '
          'g() { [ "${20}" -ge "$start" ] && victims="$victims $p"; }; '
          'for pass in 1 2 3; do victims=; '
          'for d in /proc/[0-9]*; do p=${d#/proc/}; '
          'if [ "$p" = 1 ] || [ "$p" = $$ ]; then continue; fi; '
          'read -r s < "$d/stat" 2>/dev/null || continue; g ${s##*) }; done; '
          '[ -n "$victims" ] || break; kill -KILL $victims 2>/dev/null; done; rm -f "$0"')


def _command_argv(command: str | list[str]) -> list[str]:
    return ["bash", "-lc", command] if isinstance(command, str) else list(command)


class DockerSandbox:
    """One run's container."""

    def __init__(self, client: docker.DockerClient, container: Any, run_id: str) -> None:
        self.client = client
        self.api = client.api
        self.container = container
        self.run_id = run_id
        self.name: str = container.name

    @property
    def id(self) -> str:
        return str(self.container.id)

    def inspect(self) -> dict[str, Any]:
        """The engine's view of the container (``docker inspect``)."""
        return dict(self.api.inspect_container(self.container.id))

    def running(self) -> bool:
        try:
            return bool(self.inspect()["State"]["Running"])
        except docker.errors.NotFound:
            return False

    def exec(self, command: str | list[str], *, timeout: float | None = None,
             on_output: OutputCallback | None = None, workdir: str = WORKSPACE,
             stdin: bytes | None = None) -> ExecResult:
        """Run a command in the container, streaming its output, and wait for its exit code.

        With ``timeout``, coreutils ``timeout`` sends SIGTERM to the command's whole process
        group at the deadline and SIGKILL two seconds later; a watchdog here kills the group
        by its recorded pid if even that does not end the stream.
        """
        token = uuid.uuid4().hex
        pidfile = f"/tmp/.orchestrator-exec-{token}"  # a path inside the container's own tmpfs  # noqa: S108
        argv = _command_argv(command)
        if timeout is not None:
            # timeout(1) puts itself in a new process group and signals all of it.
            argv = ["timeout", "--kill-after", f"{KILL_AFTER:g}s", f"{timeout:.3f}s", *argv]
        # The shell records its pid (kept by exec) and start time, so that the watchdog can
        # find the group and a timed-out command's escaped children can be found.
        wrapped = ["sh", "-c", _RECORD, pidfile, *argv]
        try:
            exec_id = self.api.exec_create(self.container.id, wrapped, stdin=stdin is not None,
                                           workdir=workdir,
                                           environment={**BASE_ENV, "HOME": HOME})["Id"]
            sock = self.api.exec_start(exec_id, socket=True)
        except docker.errors.APIError as exc:
            raise SandboxError(f"cannot run a command in {self.name}: {explain(exc)}; is the "
                               "container running? (start the run's sandbox again)") from None
        # The socket under the SDK's wrapper: it is read, half-closed and shut down directly.
        raw = cast(socket.socket, getattr(sock, "_sock", sock))
        started = time.monotonic()
        timed_out = threading.Event()
        done = threading.Event()
        if stdin is not None:
            threading.Thread(target=streams.feed, args=(raw, stdin), daemon=True).start()
        watchdog = None
        if timeout is not None:
            watchdog = threading.Thread(
                target=self._watchdog, args=(raw, pidfile, timeout, timed_out, done),
                daemon=True)
            watchdog.start()
        output = streams.Collector(on_output)
        streams.opened(self.id, raw)
        try:
            for stream, chunk in streams.frames(raw):
                output.add(stream, chunk)
        finally:
            done.set()
            streams.closed(self.id, raw)
            with contextlib.suppress(OSError):
                raw.close()
        output.flush()
        try:
            exit_code = self.api.exec_inspect(exec_id).get("ExitCode")
        except docker.errors.NotFound:  # gVisor forgets the execs of a stopped container
            exit_code = None
        elapsed = time.monotonic() - started
        if timeout is not None and (timed_out.is_set() or (
                exit_code in (124, 137) and elapsed >= timeout * 0.98)):
            output.add(2, f"\n[orchestrator: command killed after {timeout:g}s timeout]\n"
                       .encode())
            output.flush()
            self._sweep(pidfile)
            return ExecResult(-1, output.text(), timed_out=True)
        self._forget_pidfile(pidfile)
        return ExecResult(-1 if exit_code is None else int(exit_code), output.text())

    def _watchdog(self, raw: socket.socket, pidfile: str, timeout: float,
                  timed_out: threading.Event, done: threading.Event) -> None:
        """Last resort when a command outlives timeout(1), e.g. by holding the pipe open."""
        if done.wait(timeout + KILL_AFTER + 3.0):
            return
        timed_out.set()
        with contextlib.suppress(Exception):
            self._run_quiet(["sh", "-c", 'read -r pid _ < "$0"; kill -KILL -- "-$pid"',
                             pidfile])
        if done.wait(2.0):
            return
        # Something in another process group holds the output open: stop waiting for it.
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)

    def _sweep(self, pidfile: str) -> None:
        """Kill what a timed-out command started and left running in a session of its own
        (``setsid``, a daemon): timeout(1) reaches only the command's process group."""
        with contextlib.suppress(Exception):
            self._run_quiet(["sh", "-c", _SWEEP, pidfile])

    def _forget_pidfile(self, pidfile: str) -> None:
        with contextlib.suppress(Exception):
            self._run_quiet(["rm", "-f", pidfile], wait=False)

    def _run_quiet(self, argv: list[str], wait: bool = True) -> None:
        exec_id = self.api.exec_create(self.container.id, argv)["Id"]
        self.api.exec_start(exec_id, detach=not wait)

    def channel(self) -> tuple[Path, str] | None:
        """The host directory mounted at ``CHANNEL`` (made with the container), if any."""
        for mount in self.container.attrs.get("Mounts") or []:
            if mount.get("Destination") == CHANNEL and mount.get("Source"):
                return Path(mount["Source"]), CHANNEL
        return None

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to everything in the container, ``grace`` seconds, then SIGKILL; the
        commands' output streams end with it."""
        try:
            self.container.stop(timeout=max(0, round(grace)))
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if "is not running" not in str(exc):
                raise SandboxError(f"cannot stop {self.name}: {explain(exc)}") from None
        finally:
            streams.hang_up(self.id)

    def remove(self) -> None:
        """Kill and delete the container (and its gateway directory). Safe to call twice."""
        channel = self.channel()
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" in str(exc):
                return
            raise SandboxError(f"cannot remove {self.name}: {explain(exc)}") from None
        finally:
            streams.hang_up(self.id)
        if channel is not None and channel[0].parent.name == CHANNEL_DIRS:
            shutil.rmtree(channel[0], ignore_errors=True)


class DockerBackend:
    """Makes run containers on a Docker engine and removes the ones no live run owns."""

    def __init__(self, client: docker.DockerClient | None = None, *, state_dir: str | Path,
                 image: str = "orchestrator-sandbox:latest",
                 secrets: Iterable[str] = (), instance: str | None = None) -> None:
        """``state_dir`` holds the empty file that masks ``.git``; ``secrets`` are values
        that must never reach a container (a spec carrying one is refused); ``instance``
        names this runner deployment (default: derived from ``state_dir``), and only its
        containers are ever treated as orphans."""
        self.containers = Containers(client, state_dir=state_dir, secrets=secrets,
                                     instance=instance)
        self.state_dir = self.containers.state_dir
        self.instance = self.containers.instance
        self.image = image

    @property
    def client(self) -> docker.DockerClient:
        return self.containers.client

    def ping(self) -> None:
        """SandboxError unless the engine answers and the image is present."""
        try:
            self.client.ping()
        except docker.errors.DockerException as exc:
            raise SandboxError(f"no Docker engine answers ({exc}); start dockerd or set "
                               "DOCKER_HOST") from None
        self.containers.require_image(self.image)

    def _mask_file(self) -> Path:
        """A read-only empty file, bind-mounted over the worktree's ``.git``."""
        path = self.state_dir / "empty-gitfile"
        if not path.is_file() or path.stat().st_size != 0:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}")
            tmp.write_bytes(b"")
            tmp.chmod(0o444)
            os.replace(tmp, path)
        return path

    def _owner(self, worktree: Path) -> tuple[int, int]:
        """The uid:gid the container runs as: the worktree's owner, and never root."""
        st = worktree.stat()
        if os.geteuid() != 0:
            if st.st_uid == 0:
                raise SandboxError(f"{worktree} is owned by root, and the sandbox never runs "
                                   "as root; run the runner as a normal user")
            return st.st_uid, st.st_gid
        # The runner runs as root (a CI job): hand the worktree to the image's user (files a
        # root git wrote into a warm sandbox's workspace too).
        for dirpath, dirnames, filenames in os.walk(worktree):
            if os.lstat(dirpath).st_uid == 0:
                os.chown(dirpath, FALLBACK_UID, FALLBACK_UID)
            for name in dirnames + filenames:
                entry = os.path.join(dirpath, name)
                if os.lstat(entry).st_uid == 0:
                    os.chown(entry, FALLBACK_UID, FALLBACK_UID, follow_symlinks=False)
        return FALLBACK_UID, FALLBACK_UID

    def start(self, spec: SandboxSpec) -> DockerSandbox:
        """Create and start the run's container, or reattach to the one it has (a warm
        sandbox it took, or its own after a restart of the runner)."""
        worktree = spec.worktree.resolve()
        existing = self.find(spec.run_id)
        if existing is not None:
            if existing.container.attrs["State"]["Running"]:  # as read by find() just now
                self._owner(worktree)
                return existing
            # Stopped (the engine restarted): its processes and tmpfs are gone anyway, and a
            # warm sandbox's recorded mount source is a path that no longer exists.
            existing.remove()
        if not (worktree / ".git").exists():
            raise SandboxError(f"{worktree} is not a git worktree (no .git entry); prepare the "
                               "run's workspace first")
        uid, gid = self._owner(worktree)
        container = self.containers.create(
            spec, name=self._free_name(spec.run_id), workspace=worktree, uid=uid, gid=gid,
            labels={LABEL_RUN: spec.run_id, LABEL_REPO: spec.repo,
                    LABEL_ISSUE: str(spec.issue)},
            extra_mounts=[Mount(f"{WORKSPACE}/.git", str(self._mask_file()), type="bind",
                                read_only=True)])
        if container is None:  # created meanwhile by another worker: reattach
            return self.start(spec)
        return DockerSandbox(self.client, container, spec.run_id)

    def find(self, run_id: str) -> DockerSandbox | None:
        """The run's container made by this deployment, running or not, if it exists."""
        for name in (container_name(run_id), self._own_name(run_id)):
            try:
                container = self.client.containers.get(name)
            except docker.errors.NotFound:
                continue
            if container.labels.get(LABEL_INSTANCE, self.instance) != self.instance:
                continue  # another runner's, on an engine they share (see _free_name)
            if container.labels.get(LABEL_RUN) != run_id and \
                    LABEL_WARM not in container.labels:
                raise SandboxError(f"a container named {container.name} exists but is not "
                                   f"the sandbox of run {run_id}; remove it (docker rm -f)")
            return DockerSandbox(self.client, container, run_id)
        return None

    def _own_name(self, run_id: str) -> str:
        return f"{container_name(run_id)}.{self.instance[:12]}"

    def _free_name(self, run_id: str) -> str:
        """The run's container name; this deployment's own variant when another runner on
        this engine has a container for the run under the usual name: that runner lost the
        run's lease to this one, and works on (or leaves) its own worktree in it, as it would
        on a machine of its own. It removes it when it learns the run went on without it."""
        try:
            other = self.client.containers.get(container_name(run_id))
        except docker.errors.NotFound:
            return container_name(run_id)
        if other.labels.get(LABEL_INSTANCE, self.instance) == self.instance:
            return container_name(run_id)
        return self._own_name(run_id)

    def list_runs(self) -> dict[str, str]:
        """Run id -> container name, for every sandbox container this deployment made."""
        found = {}
        for container in self.containers.own():
            run_id = run_of(container)
            if run_id is not None:
                found[run_id] = container.name
        return found

    def remove_orphans(self, live_run_ids: Iterable[str]) -> list[str]:
        """Remove the containers of runs not in ``live_run_ids``, and warm sandboxes whose
        runner process is gone; return their names."""
        live = set(live_run_ids)
        removed: list[str] = []
        kept: set[str] = set()
        for container in self.containers.own():
            run_id = run_of(container)
            if run_id in live or (run_id is None and owner_alive(container)):
                kept.add(container.name)
                continue
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
            removed.append(container.name)
        # (A warm sandbox made since the listing has a directory too young to be touched.)
        self.containers.remove_orphan_warm_dirs(kept)
        self.containers.remove_orphan_channels()
        return removed
