"""The disk under the data directory is full: the run fails cleanly with a reason that says
so, and the runner keeps serving: once space is back, the next issue gets its pull request."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.model import RunState
from runner.run.driver import MAX_ATTEMPTS
from runner.testing.demo import DemoWorld
from tests.support import assert_clean, events_of, missing

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs where the runner's data directory will be (needs root to mount)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        missing("mounting a tmpfs needs root (run the fault tests as root)")
    data = tmp_path / "data"
    data.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs",
                           str(data)], capture_output=True, text=True)
    if done.returncode != 0:
        missing(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left; returns it (delete it to free space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        chunk = 1 << 20
        while chunk:  # halve the write on ENOSPC until not even one byte fits
            try:
                os.write(fd, b"\0" * chunk)
            except OSError:
                chunk //= 2
    finally:
        os.close(fd)
    return filler


def test_disk_full_fails_the_run_cleanly_and_the_runner_keeps_serving(
        tmp_path: Path, sandbox_image: str, docker_client: Any, small_disk: Path) -> None:
    with DemoWorld(tmp_path) as world:
        filler = fill(small_disk)
        issue = world.open_issue()
        run = world.wait_finished(issue, timeout=180)
        assert run.state is RunState.FAILED
        assert "no space left on device" in run.reason.lower(), run.reason
        errors = [e for e in events_of(world, run) if e.kind == "error"]
        assert 1 <= len(errors) <= MAX_ATTEMPTS
        filler.unlink()
        assert_clean(world, docker_client, run, small_disk)
        assert world.server is not None
        assert httpx.get(f"{world.server.url}/healthz", timeout=10).status_code == 200
        # Space is back: the same runner serves the next issue to a green pull request.
        second = world.open_issue(title="add() is still wrong")
        done = world.wait_finished(second, timeout=180)
        assert done.state is RunState.SUCCEEDED, done.reason
        assert_clean(world, docker_client, done, small_disk)
