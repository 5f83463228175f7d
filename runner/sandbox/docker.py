"""The Docker sandbox: one locked-down container per run, seeing only the run's worktree.

The container runs ``sleep infinity`` under an init process; the agent's commands are
``docker exec``-ed into it. It gets the worktree at ``/workspace`` with the worktree's ``.git``
entry masked by a read-only empty file, the worktree owner's uid:gid (never root), a
read-only root filesystem with tmpfs ``/tmp`` and ``HOME``, no capabilities,
no-new-privileges, pids/memory/CPU limits (swap off), and no network unless configured.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import hashlib
import logging
import os
import shutil
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
from docker.types import Mount

from runner.sandbox.base import (
    BASE_ENV,
    CHANNEL,
    WORKSPACE,
    ExecResult,
    OutputCallback,
    SandboxError,
    SandboxSpec,
    leaked_names,
)

if TYPE_CHECKING:
    from runner.sandbox.warm import WarmPool

log = logging.getLogger(__name__)

LABEL_RUN = "orchestrator.run"
LABEL_REPO = "orchestrator.repo"
LABEL_ISSUE = "orchestrator.issue"
# Which runner deployment made a container: orphan removal never touches another's (two
# runners, or a runner and a test suite, may share one engine).
LABEL_INSTANCE = "orchestrator.instance"
HOME = "/home/agent"
FALLBACK_UID = 1000  # the image's unprivileged user, for worktrees owned by root
KILL_AFTER = 2.0  # seconds between SIGTERM and SIGKILL for a command past its timeout
MAX_OUTPUT = 4 * 1024 * 1024  # characters of output kept per command (the tail)


RUN_PREFIX = "orchestrator-"
WARM_PREFIX = "orchestrator-warm-"
# On a warm sandbox: the runner process ("host:pid") keeping it, until a run takes it.
LABEL_WARM = "orchestrator.warm"
CHANNEL_DIRS = "gateway"  # under the state directory: one directory per container, mode 0755


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


def container_name(run_id: str) -> str:
    """The name of a run's container: found again after a restart by this name."""
    return f"{RUN_PREFIX}{run_id}"


def _command_argv(command: str | list[str]) -> list[str]:
    return ["bash", "-lc", command] if isinstance(command, str) else list(command)


# The exec streams reading from each container now (container id -> sockets). A stopped
# container's streams do not always end (gVisor keeps them open): stop() hangs them up.
_OPEN_STREAMS: dict[str, set[Any]] = {}
_STREAMS_LOCK = threading.Lock()


def _hang_up(container_id: str) -> None:
    """End the exec streams still open on a container that was stopped."""
    with _STREAMS_LOCK:
        streams = list(_OPEN_STREAMS.get(container_id, ()))
    for stream in streams:
        with contextlib.suppress(OSError):
            stream.shutdown(socket.SHUT_RDWR)


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
        pidfile = f"/tmp/.orchestrator-exec-{token}"
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
            raise SandboxError(f"cannot run a command in {self.name}: {_explain(exc)}; is the "
                               "container running? (start the run's sandbox again)") from None
        raw = getattr(sock, "_sock", sock)
        started = time.monotonic()
        timed_out = threading.Event()
        done = threading.Event()
        if stdin is not None:
            threading.Thread(target=_feed, args=(raw, stdin), daemon=True).start()
        watchdog = None
        if timeout is not None:
            watchdog = threading.Thread(
                target=self._watchdog, args=(raw, pidfile, timeout, timed_out, done),
                daemon=True)
            watchdog.start()
        output = _Collector(on_output)
        with _STREAMS_LOCK:
            _OPEN_STREAMS.setdefault(self.id, set()).add(raw)
        try:
            for stream, chunk in _frames(raw):
                output.add(stream, chunk)
        finally:
            done.set()
            with _STREAMS_LOCK:
                open_here = _OPEN_STREAMS.get(self.id, set())
                open_here.discard(raw)
                if not open_here:
                    _OPEN_STREAMS.pop(self.id, None)
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
                raise SandboxError(f"cannot stop {self.name}: {_explain(exc)}") from None
        finally:
            _hang_up(self.id)

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
            raise SandboxError(f"cannot remove {self.name}: {_explain(exc)}") from None
        finally:
            _hang_up(self.id)
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
        self._client = client
        self.state_dir = Path(state_dir).resolve()
        self.instance = instance or hashlib.sha256(
            str(self.state_dir).encode()).hexdigest()[:16]
        self.image = image
        self._secrets = frozenset(s for s in secrets if s)

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.from_env(timeout=60)
            except docker.errors.DockerException as exc:
                raise SandboxError(f"no Docker engine answers ({exc}); start dockerd or set "
                                   "DOCKER_HOST, or set sandbox.backend: local (no isolation)"
                                   ) from None
        return self._client

    def ping(self) -> None:
        """SandboxError unless the engine answers and the image is present."""
        try:
            self.client.ping()
        except docker.errors.DockerException as exc:
            raise SandboxError(f"no Docker engine answers ({exc}); start dockerd or set "
                               "DOCKER_HOST") from None
        self._require_image(self.image)

    def _require_image(self, image: str) -> None:
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            raise SandboxError(f"the sandbox image {image} is missing: run "
                               "scripts/build-sandbox-image") from None

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
        container = self._create(
            spec, name=self._free_name(spec.run_id), workspace=worktree, uid=uid, gid=gid,
            labels={LABEL_RUN: spec.run_id, LABEL_REPO: spec.repo,
                    LABEL_ISSUE: str(spec.issue)},
            extra_mounts=[Mount(f"{WORKSPACE}/.git", str(self._mask_file()), type="bind",
                                read_only=True)])
        if container is None:  # created meanwhile by another worker: reattach
            return self.start(spec)
        return DockerSandbox(self.client, container, spec.run_id)

    def _create(self, spec: SandboxSpec, *, name: str, workspace: Path, uid: int, gid: int,
                labels: dict[str, str], extra_mounts: Sequence[Mount] = ()) -> Any:
        """Create and start a locked-down container with ``workspace`` at /workspace; None
        when a container of that name exists already."""
        leaked = leaked_names(spec.env, self._secrets)
        if leaked:
            raise SandboxError(f"refusing to pass {', '.join(leaked)} into the sandbox: "
                               "it holds one of the runner's secrets")
        self._require_image(spec.image)
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
                tmpfs={"/tmp": f"{tmpfs_opts},mode=1777",
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
            if spec.runtime and "runtime" in _explain(exc).lower():
                raise SandboxError(f"the Docker engine has no runtime {spec.runtime!r} "
                                   f"(sandbox.runtime): {_explain(exc)}; for gVisor run "
                                   "scripts/register-runsc as root, or unset sandbox.runtime"
                                   ) from None
            raise SandboxError(f"cannot create the sandbox {name}: {_explain(exc)}") from None
        try:
            container.start()
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
            if channel is not None:
                shutil.rmtree(channel, ignore_errors=True)
            raise SandboxError(f"cannot start the sandbox {name}: {_explain(exc)}") from None
        return container

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

    def _own_containers(self) -> list[Any]:
        return list(self.client.containers.list(
            all=True, filters={"label": f"{LABEL_INSTANCE}={self.instance}"}))

    def list_runs(self) -> dict[str, str]:
        """Run id -> container name, for every sandbox container this deployment made."""
        found = {}
        for container in self._own_containers():
            run_id = _run_of(container)
            if run_id is not None:
                found[run_id] = container.name
        return found

    def remove_orphans(self, live_run_ids: Iterable[str]) -> list[str]:
        """Remove the containers of runs not in ``live_run_ids``, and warm sandboxes whose
        runner process is gone; return their names."""
        live = set(live_run_ids)
        removed: list[str] = []
        kept: set[str] = set()
        for container in self._own_containers():
            run_id = _run_of(container)
            if run_id in live or (run_id is None and _owner_alive(container)):
                kept.add(container.name)
                continue
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
            removed.append(container.name)
        # (A warm sandbox made since the listing has a directory too young to be touched.)
        self.warm.remove_orphan_dirs(kept)
        self._remove_orphan_channels()
        return removed

    def _remove_orphan_channels(self) -> None:
        """Remove gateway directories no container of this deployment mounts (a crash)."""
        root = self.state_dir / CHANNEL_DIRS
        if not root.is_dir():
            return
        used = {str(m.get("Source")) for c in self._own_containers()
                for m in c.attrs.get("Mounts") or [] if m.get("Destination") == CHANNEL}
        young = time.time() - 60  # a container may be about to be made with it
        for path in root.iterdir():
            with contextlib.suppress(OSError):
                if str(path) not in used and path.stat().st_mtime < young:
                    shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------------ warm sandboxes

    def add_warm(self, template: SandboxSpec, count: int) -> bool:
        """Start one more warm sandbox if fewer than ``count`` wait; True when it did."""
        return self.warm.add(template, count)

    def take_warm(self, spec: SandboxSpec) -> bool:
        """Give the run a warm sandbox if one matching ``spec`` waits (see ``WarmPool``)."""
        return self.warm.take(spec)

    def drain_warm(self) -> None:
        """Remove the warm sandboxes no run took."""
        self.warm.drain()

    def warm_ready(self) -> int:
        """How many warm sandboxes wait now."""
        return self.warm.ready()

    @functools.cached_property
    def warm(self) -> WarmPool:
        from runner.sandbox.warm import WarmPool

        return WarmPool(self, self.state_dir / "warm")


def _run_of(container: Any) -> str | None:
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


def _owner_alive(container: Any) -> bool:
    """Whether the runner process keeping this warm sandbox still runs. Another host's
    are left alone: only that host can tell."""
    host, _, rest = str(container.labels.get(LABEL_WARM, "")).partition(":")
    if host != socket.gethostname():
        return True
    pid = rest.partition(":")[0]
    return pid.isdigit() and process_token(int(pid)) == container.labels[LABEL_WARM]


# ---------------------------------------------------------------------- stream helpers


def _feed(raw: socket.socket, data: bytes) -> None:
    """Write stdin, then half-close so the command sees end of file."""
    with contextlib.suppress(OSError):
        raw.sendall(data)
        raw.shutdown(socket.SHUT_WR)


def _frames(raw: socket.socket) -> Iterable[tuple[int, bytes]]:
    """Docker's multiplexed exec stream: 8-byte headers (stream, size), then the payload."""
    buffer = b""
    while True:
        try:
            data = raw.recv(65536)
        except OSError:
            data = b""
        if not data:
            return
        buffer += data
        while len(buffer) >= 8:
            stream, size = struct.unpack(">BxxxL", buffer[:8])
            if len(buffer) < 8 + size:
                break
            yield stream, buffer[8:8 + size]
            buffer = buffer[8 + size:]


class _Collector:
    """Decodes stdout and stderr as they come and keeps the tail of the interleaved text."""

    def __init__(self, on_output: OutputCallback | None) -> None:
        self.on_output = on_output
        self.decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in (1, 2)}
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def add(self, stream: int, chunk: bytes) -> None:
        text = self.decoders.get(stream, self.decoders[1]).decode(chunk)
        self._keep(text)

    def flush(self) -> None:
        for decoder in self.decoders.values():
            self._keep(decoder.decode(b"", final=True))

    def _keep(self, text: str) -> None:
        if not text:
            return
        if self.on_output is not None:
            self.on_output(text)
        self.parts.append(text)
        self.size += len(text)
        while self.size > MAX_OUTPUT and len(self.parts) > 1:
            self.size -= len(self.parts[0])
            self.dropped += len(self.parts.pop(0))

    def text(self) -> str:
        body = "".join(self.parts)
        if self.dropped:
            return f"[orchestrator: {self.dropped} characters of output dropped]\n{body}"
        return body


def _explain(exc: docker.errors.APIError) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def secret_values(names: Iterable[str], environ: Mapping[str, str] | None = None) -> set[str]:
    """The values of the environment variables ``names`` (the runner's secrets)."""
    env = os.environ if environ is None else environ
    return {env[n] for n in names if env.get(n)}
