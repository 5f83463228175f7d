"""A host process that a kill interrupts: run in its own process group, waited for in short
slices, and stopped as a whole group (SIGTERM, a short grace, SIGKILL) when the run's cancel
event is set or its timeout passes.

The group matters: ``git fetch`` over HTTP runs ``git-remote-http`` and ``index-pack`` as its
children, and killing only ``git`` would leave them holding the connection and the pack.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Protocol

SLICE_S = 0.05  # how often a waiting process looks at the cancel event
GRACE_S = 0.2  # SIGTERM lets git remove its lock files; SIGKILL follows after this


class Cancel(Protocol):
    """Anything shaped like ``threading.Event``: set by a kill."""

    def is_set(self) -> bool: ...


class ProcessInterrupted(Exception):
    """The cancel event was set: the process group was stopped before it finished."""


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
        timeout: float | None = None, cancel: Cancel | None = None,
        input: str | None = None, errors: str = "strict") -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to its end and capture its text output, like ``subprocess.run``.

    Raises ``ProcessInterrupted`` within about ``SLICE_S + GRACE_S`` of ``cancel`` being set
    and ``subprocess.TimeoutExpired`` after ``timeout`` seconds; either way the whole process
    group is stopped and reaped first. ``FileNotFoundError`` when the program is missing.
    """
    # an argv list built by the runner; no shell
    proc = subprocess.Popen(list(argv), env=env, cwd=cwd, text=True, errors=errors,  # noqa: S603
                            start_new_session=True,
                            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = None if timeout is None else time.monotonic() + timeout
    # Without a cancel event there is nothing to look at in between: one wait suffices.
    step = None if cancel is None else SLICE_S
    pending = input
    while True:
        if cancel is not None and cancel.is_set():
            _stop_group(proc)
            raise ProcessInterrupted(f"{argv[0]} was stopped by a cancel")
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            _stop_group(proc)
            raise subprocess.TimeoutExpired(list(argv), timeout or 0.0)
        wait = left if step is None else (step if left is None else min(step, left))
        try:
            out, err = proc.communicate(pending, timeout=wait)
        except subprocess.TimeoutExpired:
            pending = None  # communicate keeps what it has sent and read across calls
            continue
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the process group, SIGKILL it after ``GRACE_S``, and reap the leader."""
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(GRACE_S)
    # Children (git-remote-http, index-pack) may outlive the leader: the whole group goes.
    _signal_group(proc.pid, signal.SIGKILL)
    try:
        proc.communicate(timeout=GRACE_S)  # closes the pipes, reaps the leader
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(pgid, sig)
