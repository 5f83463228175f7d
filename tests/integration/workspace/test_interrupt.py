"""A kill interrupts the runner's git: a fetch or push that the forge serves slowly, a wait for
the mirror's lock, a commit. Real git over the forge emulator's smart HTTP; the run's cancel
event is a ``threading.Event`` set from another thread, as the kill handler does."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from runner import process
from runner.testing.forge import ForgeEmulator
from runner.workspace import Interrupted, Workspaces

REPO = "maintainer/app"
SLOW_S = 40.0
T = TypeVar("T")


@pytest.fixture
def forge(tmp_path: Path) -> Iterator[ForgeEmulator]:
    with ForgeEmulator("github", tmp_path / "forge") as emu:
        emu.add_user("maintainer")
        emu.add_user("bot")
        emu.create_repo(REPO, files={"README.md": "hi\n", "app.py": "x = 1\n"})
        emu.grant(REPO, "bot", "write")
        yield emu


def _cancelled_after(seconds: float, call: Callable[[threading.Event], T]) -> float:
    """Run ``call(cancel)``, set ``cancel`` after ``seconds``; how long the call took in all.
    The call must raise Interrupted."""
    cancel = threading.Event()
    timer = threading.Timer(seconds, cancel.set)
    timer.start()
    began = time.monotonic()
    try:
        with pytest.raises(Interrupted, match="cancelled"):
            call(cancel)
    finally:
        timer.cancel()
    return time.monotonic() - began


def _git_processes_of_this_test() -> list[str]:
    """Command lines of git processes descended from this process (the emulator's own
    ``git http-backend`` aside)."""
    parents: dict[int, int] = {}
    cmdlines: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        cmdlines[int(entry)] = cmd
    ours, me = [], os.getpid()
    for pid, cmd in cmdlines.items():
        ancestor = parents.get(pid)
        while ancestor and ancestor != me:
            ancestor = parents.get(ancestor)
        if ancestor == me and "git" in cmd and "http-backend" not in cmd:
            ours.append(cmd)
    return ours


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_cancel_stops_a_slow_fetch_and_the_mirror_stays_usable(
        forge: ForgeEmulator, tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "data")
    url = forge.clone_url(REPO)
    forge.slow_git(SLOW_S, service="upload-pack")

    took = _cancelled_after(0.5, lambda cancel: spaces.prepare("r-1", REPO, 7, url,
                                                                cancel=cancel))

    assert took < SLOW_S / 4, f"the fetch was not interrupted ({took:.1f}s)"
    assert _git_processes_of_this_test() == []
    # The forge saw the client hang up: the connection was closed, not left waiting.
    _wait_for(lambda: forge.git_waits_aborted >= 1, "the forge never saw the fetch end")
    # Nothing is left locked and nothing half-done counts: the next prepare fetches and
    # checks out as if the first had never begun.
    forge.slow_git(0)
    wt = spaces.prepare("r-1", REPO, 7, url, cancel=threading.Event())
    assert (wt.path / "app.py").read_text() == "x = 1\n"
    assert not wt.resumed


def test_ref_locks_of_a_fetch_killed_outright_do_not_wedge_the_mirror(
        forge: ForgeEmulator, tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "data")
    url = forge.clone_url(REPO)
    mirror = spaces.sync_mirror(REPO, url)
    # What a SIGKILLed fetch (or a kill -9 of the runner) leaves: git's own lock files.
    (mirror / "packed-refs.lock").write_text("")
    (mirror / "refs" / "remotes" / "origin" / "main.lock").write_text("")
    moved = forge.push_branch(REPO, "main", {"app.py": "x = 9\n"}, as_user="maintainer")
    wt = spaces.prepare("r-6", REPO, 12, url)
    assert spaces.head(wt) == moved
    assert (wt.path / "app.py").read_text() == "x = 9\n"


def test_a_cancel_stops_a_slow_push_and_nothing_reaches_the_forge(
        forge: ForgeEmulator, tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "data")
    url, token = forge.clone_url(REPO), forge.state.user("bot").token
    wt = spaces.prepare("r-2", REPO, 8, url)
    (wt.path / "app.py").write_text("x = 2\n")
    sha = spaces.commit(wt, "Change x")
    forge.slow_git(SLOW_S, service="receive-pack")

    took = _cancelled_after(0.5, lambda cancel: spaces.push(wt, url, token=token,
                                                             cancel=cancel))

    assert took < SLOW_S / 4, f"the push was not interrupted ({took:.1f}s)"
    assert _git_processes_of_this_test() == []
    assert forge.branch_sha(REPO, wt.branch) is None
    # The mirror's lock is free and the branch intact: a push without the delay goes through.
    forge.slow_git(0)
    assert spaces.push(wt, url, token=token) == sha
    assert forge.branch_sha(REPO, wt.branch) == sha


def test_slow_git_delays_only_the_service_it_names(forge: ForgeEmulator,
                                                   tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "data")
    url, token = forge.clone_url(REPO), forge.state.user("bot").token
    forge.slow_git(SLOW_S, service="receive-pack")
    wt = spaces.prepare("r-3", REPO, 9, url)  # a fetch: not delayed
    (wt.path / "new.txt").write_text("new\n")
    spaces.commit(wt)
    took = _cancelled_after(0.3, lambda cancel: spaces.push(wt, url, token=token,
                                                             cancel=cancel))
    assert took < SLOW_S / 4


def test_a_cancel_stops_the_wait_for_a_busy_mirror(forge: ForgeEmulator,
                                                   tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "data")
    url = forge.clone_url(REPO)
    spaces.sync_mirror(REPO, url)
    mirror = spaces.mirror_path(REPO)
    # Another process fetching this mirror holds its lock.
    fd = os.open(mirror.with_name(mirror.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        took = _cancelled_after(0.3, lambda cancel: spaces.prepare("r-4", REPO, 10, url,
                                                                    cancel=cancel))
        assert took < 10
    finally:
        os.close(fd)
    assert spaces.prepare("r-4", REPO, 10, url).path.is_dir()


def test_a_cancelled_run_commits_nothing(forge: ForgeEmulator, tmp_path: Path) -> None:
    spaces = Workspaces(tmp_path / "data")
    wt = spaces.prepare("r-5", REPO, 11, forge.clone_url(REPO))
    before = spaces.head(wt)
    (wt.path / "app.py").write_text("x = 3\n")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Interrupted):
        spaces.commit(wt, "Change x", cancel=cancel)
    assert spaces.head(wt) == before
    (wt.git_dir / "index.lock").write_text("")  # as an add killed outright leaves it
    assert spaces.commit(wt, "Change x") not in (None, before)  # without a kill it commits


def test_a_cancel_stops_the_whole_process_group(tmp_path: Path) -> None:
    # A child that starts a grandchild, as git fetch starts git-remote-http.
    marker = tmp_path / "grandchild.pid"
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(process.ProcessInterrupted):
        process.run(["sh", "-c", f"sleep 60 & echo $! > {marker}; wait"], cancel=cancel)
    grandchild = int(marker.read_text())
    _wait_for(lambda: not Path(f"/proc/{grandchild}").exists()
              or "Z" in Path(f"/proc/{grandchild}/stat").read_text().rsplit(")", 1)[1][:3],
              "the grandchild outlived the cancel")


def test_without_a_cancel_a_process_runs_to_its_end_and_its_timeout_holds() -> None:
    done = process.run(["sh", "-c", "cat; echo err >&2; exit 3"], input="in\n")
    assert (done.returncode, done.stdout, done.stderr) == (3, "in\n", "err\n")
    with pytest.raises(subprocess.TimeoutExpired):
        process.run(["sleep", "30"], timeout=0.2)
