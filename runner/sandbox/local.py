"""The local "sandbox": the agent's commands run as subprocesses in the worktree, on the host.

No isolation at all: the agent can read and write anything the runner's user can. Use it only
where Docker cannot run and the agent is trusted; the configuration must say
``sandbox.backend: local``, and every start logs a warning. The runner's secrets are still
kept out: commands get a minimal environment, not the runner's.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from runner.sandbox.base import (
    BASE_ENV,
    WORKSPACE,
    ExecResult,
    OutputCallback,
    SandboxError,
    SandboxSpec,
)

log = logging.getLogger(__name__)

KILL_AFTER = 2.0
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "TERM")


class LocalSandbox:
    """A run's commands as host subprocesses in its worktree."""

    def __init__(self, spec: SandboxSpec) -> None:
        self.run_id = spec.run_id
        self.name = f"local-{spec.run_id}"
        self.worktree = spec.worktree.resolve()
        self.home = self.worktree.parent / f".home-{spec.run_id}"
        self.env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        self.env.update(BASE_ENV, HOME=str(self.home), **spec.env)
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self.stopped = False

    def _cwd(self, workdir: str) -> Path:
        """``/workspace/x`` maps to ``<worktree>/x``; nothing outside the worktree."""
        rel = os.path.relpath(workdir, WORKSPACE) if workdir.startswith("/") else workdir
        cwd = (self.worktree / rel).resolve()
        if cwd != self.worktree and self.worktree not in cwd.parents:
            raise SandboxError(f"workdir {workdir} is outside {WORKSPACE}")
        return cwd

    def exec(self, command: str | list[str], *, timeout: float | None = None,
             on_output: OutputCallback | None = None, workdir: str = WORKSPACE,
             stdin: bytes | None = None) -> ExecResult:
        """Run a command (a string goes to ``bash -lc``) and stream its output."""
        if self.stopped:
            raise SandboxError(f"{self.name} is stopped; start the run's sandbox again")
        argv = ["bash", "-lc", command] if isinstance(command, str) else list(command)
        self.home.mkdir(parents=True, exist_ok=True)
        # an argv list; the local backend is the trusted development sandbox
        proc = subprocess.Popen(argv, cwd=self._cwd(workdir), env=self.env,  # noqa: S603
                                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own group: kill it whole
        with self._lock:
            self._procs.add(proc)
        if stdin is not None:
            threading.Thread(target=_feed, args=(proc, stdin), daemon=True).start()
        timed_out = threading.Event()
        timer = None
        if timeout is not None:
            timer = threading.Timer(timeout, self._expire, args=(proc, timed_out))
            timer.daemon = True
            timer.start()
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        parts: list[str] = []
        assert proc.stdout is not None  # Popen(stdout=PIPE) always has it  # noqa: S101
        fd = proc.stdout.fileno()
        try:
            while chunk := os.read(fd, 65536):
                text = decoder.decode(chunk)
                if text:
                    parts.append(text)
                    if on_output:
                        on_output(text)
            tail = decoder.decode(b"", final=True)
            if tail:
                parts.append(tail)
                if on_output:
                    on_output(tail)
            code = proc.wait()
        finally:
            if timer:
                timer.cancel()
            with self._lock:
                self._procs.discard(proc)
        if timed_out.is_set():
            parts.append(f"\n[orchestrator: command killed after {timeout:g}s timeout]\n")
            return ExecResult(-1, "".join(parts), timed_out=True)
        return ExecResult(code if code >= 0 else -1, "".join(parts))

    def _expire(self, proc: subprocess.Popen[bytes], timed_out: threading.Event) -> None:
        timed_out.set()
        _kill_group(proc, KILL_AFTER)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every running command's process group, ``grace`` seconds, then SIGKILL."""
        self.stopped = True
        with self._lock:
            procs = list(self._procs)
        threads = [threading.Thread(target=_kill_group, args=(p, grace)) for p in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def channel(self) -> tuple[Path, str] | None:
        """A directory beside the worktree: the host and the "sandbox" are one here."""
        path = self.worktree.parent / f".gateway-{self.run_id}"
        path.mkdir(mode=0o700, exist_ok=True)
        return path, str(path)

    def remove(self) -> None:
        """Stop every command and forget the sandbox (the worktree is the workspace's)."""
        self.stop(grace=1.0)
        shutil.rmtree(self.worktree.parent / f".gateway-{self.run_id}", ignore_errors=True)
        with contextlib.suppress(OSError):
            for path in sorted(self.home.rglob("*"), reverse=True):
                path.unlink() if not path.is_dir() or path.is_symlink() else path.rmdir()
            self.home.rmdir()


class LocalBackend:
    """Sandboxes without isolation; only when ``sandbox.backend: local`` asks for it."""

    def __init__(self) -> None:
        self._sandboxes: dict[str, LocalSandbox] = {}

    def ping(self) -> None:
        """Always usable: there is nothing to reach."""

    def start(self, spec: SandboxSpec) -> LocalSandbox:
        """A sandbox that runs commands in the worktree on the host (warns every time)."""
        log.warning("run %s: sandbox.backend is local: the agent's commands run on this host "
                    "WITHOUT isolation", spec.run_id)
        existing = self._sandboxes.get(spec.run_id)
        if existing is not None and not existing.stopped:
            return existing
        if not spec.worktree.is_dir():
            raise SandboxError(f"{spec.worktree} does not exist; prepare the run's workspace")
        sandbox = LocalSandbox(spec)
        self._sandboxes[spec.run_id] = sandbox
        return sandbox

    def find(self, run_id: str) -> LocalSandbox | None:
        """The run's sandbox, if this process started it."""
        return self._sandboxes.get(run_id)

    def remove_orphans(self, live_run_ids: Iterable[str]) -> list[str]:
        """Stop the sandboxes of runs not in ``live_run_ids``; return their names."""
        live = set(live_run_ids)
        removed = []
        for run_id in [r for r in self._sandboxes if r not in live]:
            sandbox = self._sandboxes.pop(run_id)
            sandbox.remove()
            removed.append(sandbox.name)
        return removed


def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None  # Popen(stdin=PIPE) always has it  # noqa: S101
    with contextlib.suppress(OSError):
        proc.stdin.write(data)
        proc.stdin.close()


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group, wait ``grace`` seconds, then SIGKILL it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
