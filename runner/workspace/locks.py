"""The mirror's locks (fcntl: released even when the process dies).

Beside ``mirrors/<owner>/<name>.git``::

    <name>.git.lock         exclusive to create or prune the mirror, shared to fetch,
                            check out, commit and push
    <name>.git.fetch.lock   fetches and pushes take turns here
    <name>.git.gate         a turnstile: a process waiting for the exclusive lock holds it,
                            so shared holders cannot starve it
    <name>.git.add.lock     worktree entries are made one at a time here
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from runner.process import Cancel
from runner.workspace.errors import Interrupted, WorkspaceError

POLL_S = 0.02  # how often a waiter tries the lock again


class MirrorLocks:
    """Takes a mirror's locks, waiting at most ``timeout`` seconds by default."""

    def __init__(self, timeout: float = 960.0) -> None:
        self.timeout = timeout

    @contextlib.contextmanager
    def locked(self, mirror: Path, timeout: float | None = None, *,
               shared: bool = False, fetching: bool = False,
               cancel: Cancel | None = None) -> Iterator[None]:
        """Hold the mirror's lock.

        Exclusive for what changes the mirror as a whole (its creation, a prune, the spare);
        ``shared`` for work on one run's own worktree, so runs check out side by side;
        ``fetching`` for a fetch or a push: shared, plus a second lock they take in turn
        (a fetch never waits for checkouts to finish, only for another fetch or push).
        Everyone passes a turnstile first, which a process waiting for the exclusive lock
        holds: runs arriving meanwhile queue behind it instead of starving it.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        gate = acquire(mirror.with_name(mirror.name + ".gate"), deadline, cancel=cancel)
        try:
            main = acquire(mirror.with_name(mirror.name + ".lock"), deadline,
                           shared=shared or fetching, cancel=cancel)
        finally:
            os.close(gate)
        try:
            if fetching:
                turn = acquire(mirror.with_name(mirror.name + ".fetch.lock"), deadline,
                               cancel=cancel)
                try:
                    yield
                finally:
                    os.close(turn)
            else:
                yield
        finally:
            os.close(main)  # closing releases the lock

    @contextlib.contextmanager
    def adding(self, mirror: Path, cancel: Cancel | None = None) -> Iterator[None]:
        """Make worktree entries one at a time. Git reads every entry of the mirror when it
        makes one or switches a worktree's branch, and fails on one another git is half-way
        through writing ("failed to read .../commondir")."""
        fd = acquire(mirror.with_name(mirror.name + ".add.lock"),
                     time.monotonic() + self.timeout, cancel=cancel)
        try:
            yield
        finally:
            os.close(fd)


def acquire(lock_path: Path, deadline: float, *, shared: bool = False,
            cancel: Cancel | None = None) -> int:
    """An open descriptor holding an fcntl lock on ``lock_path``; WorkspaceError once
    ``deadline`` (monotonic) passes, Interrupted when ``cancel`` is set meanwhile."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if cancel is not None and cancel.is_set():
                os.close(fd)
                raise Interrupted(f"stopped waiting for {lock_path}: the run was "
                                  "cancelled") from None
            if time.monotonic() > deadline:
                os.close(fd)
                raise WorkspaceError(
                    f"{lock_path} stayed locked too long: another run is fetching or "
                    "changing this mirror; retry later") from None
            time.sleep(POLL_S)
