"""The Docker sandbox on the real engine: hardening, exec, timeouts, stop, orphans."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner.sandbox.base import SandboxError, SandboxSpec
from runner.sandbox.docker import DockerBackend, DockerSandbox, container_name
from runner.workspace import Workspaces, Worktree
from tests.integration.sandbox.conftest import IMAGE, SECRET, new_run_id

pytestmark = pytest.mark.docker

Start = Callable[..., DockerSandbox]


def test_container_is_locked_down(start: Start, worktree: Worktree, backend: DockerBackend):
    sandbox = start(memory=256 * 1024**2, pids=128, cpus=0.5)
    info = sandbox.inspect()
    host, config = info["HostConfig"], info["Config"]
    assert info["Name"] == f"/{container_name(worktree.run_id)}"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert not host.get("CapAdd")
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert host["PidsLimit"] == 128
    assert host["Memory"] == 256 * 1024**2
    assert host["MemorySwap"] == 256 * 1024**2  # swap off
    assert host["NanoCpus"] == 500_000_000
    assert host["NetworkMode"] == "none"
    assert host["Init"] is True
    assert set(host["Tmpfs"]) == {"/tmp", "/home/agent"}
    uid, gid = (int(x) for x in config["User"].split(":"))
    assert uid != 0 and gid != 0
    assert uid == worktree.path.stat().st_uid  # the worktree's owner
    labels = {k: v for k, v in config["Labels"].items() if k.startswith("orchestrator.")}
    assert labels == {"orchestrator.run": worktree.run_id, "orchestrator.repo": "acme/widgets",
                      "orchestrator.issue": "42", "orchestrator.instance": backend.instance}
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert set(mounts) == {"/workspace", "/workspace/.git"}
    assert mounts["/workspace"]["RW"] is True
    assert mounts["/workspace"]["Source"] == str(worktree.path)
    assert mounts["/workspace/.git"]["RW"] is False
    assert SECRET not in str(info)
    assert sandbox.exec("id -u").output.strip() == str(uid)


def test_only_the_workspace_is_writable(start: Start, worktree: Worktree):
    sandbox = start()
    for path in ("/etc/evil", "/usr/bin/evil", "/evil", "/var/evil"):
        result = sandbox.exec(f"echo x > {path}")
        assert result.exit_code != 0, path
        assert "Read-only file system" in result.output or "Permission denied" in result.output
    assert sandbox.exec("echo ok > /tmp/t && echo ok > $HOME/h && cat /tmp/t $HOME/h").ok
    result = sandbox.exec("mkdir -p pkg && echo 'print(1)' > pkg/new.py && ls")
    assert result.ok, result.output
    made = worktree.path / "pkg" / "new.py"
    assert made.read_text() == "print(1)\n"
    assert made.stat().st_uid == worktree.path.stat().st_uid
    assert not sandbox.exec("mount -o remount,rw /").ok


def test_git_directory_is_masked(start: Start, worktree: Worktree):
    sandbox = start()
    assert sandbox.exec("cat /workspace/.git").output == ""  # an empty file, no gitdir line
    assert not sandbox.exec("echo 'gitdir: /tmp/x' > /workspace/.git").ok
    assert not sandbox.exec("rm -f /workspace/.git").ok
    assert not sandbox.exec("git -C /workspace status").ok
    # On the host the real .git entry is untouched.
    assert (worktree.path / ".git").read_text().startswith("gitdir: ")


def test_network_is_unreachable(start: Start):
    sandbox = start()
    probe = ("python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), "
             "timeout=3)\"")
    result = sandbox.exec(probe, timeout=20)
    assert result.exit_code != 0
    # runc's kernel says the network is unreachable; gVisor's netstack, no route to host.
    assert "Network is unreachable" in result.output or "No route to host" in result.output
    interfaces = sandbox.exec("python3 -c 'import socket; print(socket.if_nameindex())'")
    assert interfaces.output.strip() == "[(1, 'lo')]"


GVISOR_LIMITS = ("gVisor's pids and memory limits hold for the whole sandbox (its kernel runs "
                 "in the container's cgroup): a fork bomb or a memory hog ends the container")


def test_fork_bomb_stops_at_the_pids_limit(start: Start, runtime: str | None,
                                           docker_client: Any):
    sandbox = start(pids=64)
    bomb = r"""python3 - <<'EOF'
import os, time
n = 0
try:
    while True:
        pid = os.fork()
        if pid == 0:
            os.closerange(0, 3)
            time.sleep(60)
            os._exit(0)
        n += 1
except OSError as exc:
    print("forks", n, exc)
EOF"""
    result = sandbox.exec(bomb, timeout=60)
    if runtime == "runsc":
        words = result.output.split()
        if "forks" in words:  # the bomb was stopped by the limit and could say so
            assert int(words[words.index("forks") + 1]) < 64, result.output
        else:  # the sandbox was ended under it
            assert not result.ok and not sandbox.running(), GVISOR_LIMITS
        docker_client.ping()  # the engine survives
        sandbox.remove()
        return
    assert "Resource temporarily unavailable" in result.output, result.output
    forks = int(result.output.split()[1])
    assert 10 < forks < 64
    # The engine and the container survive; the limit holds for later commands too: they
    # fork until the limit, or (when the bomb's children hold every pid) the runtime cannot
    # even start them.
    later = sandbox.exec("for i in $(seq 80); do sleep 30 & done 2>&1; wait", timeout=5)
    assert "Resource temporarily unavailable" in later.output or (
        later.exit_code == 126 and "OCI runtime exec failed" in later.output), later
    sandbox.remove()


def test_memory_hog_is_killed(start: Start, runtime: str | None):
    sandbox = start(memory=128 * 1024**2)
    hog = "python3 -c \"b = b'x' * (1024 * 1024 * 1024); print('survived')\""
    result = sandbox.exec(hog, timeout=60)
    if runtime == "runsc":
        assert not result.ok and "survived" not in result.output, GVISOR_LIMITS
        return
    assert result.exit_code == 137  # SIGKILL from the OOM killer
    assert "survived" not in result.output
    assert sandbox.exec("echo still here").output == "still here\n"


def test_exec_streams_output_and_returns_the_exit_code(start: Start):
    sandbox = start()
    chunks: list[tuple[float, str]] = []
    t0 = time.monotonic()
    result = sandbox.exec("echo first; sleep 2; echo second >&2; exit 7",
                          on_output=lambda text: chunks.append((time.monotonic() - t0, text)))
    assert result.exit_code == 7 and not result.ok and not result.timed_out
    assert result.output == "first\nsecond\n"
    assert chunks[0][1] == "first\n"
    assert chunks[0][0] < 1.5  # streamed while the command still ran
    assert chunks[-1][0] >= 2.0
    assert sandbox.exec(["python3", "-c", "print('argv form')"]).output == "argv form\n"


def test_exec_stdin_workdir_and_unicode(start: Start, worktree: Worktree):
    sandbox = start()
    data = ("héllo wörld ✓\n" * 50_000).encode()
    result = sandbox.exec("sha256sum | cut -c1-64", stdin=data)
    import hashlib

    assert result.output.strip() == hashlib.sha256(data).hexdigest()
    (worktree.path / "sub").mkdir()
    assert sandbox.exec("pwd", workdir="/workspace/sub").output == "/workspace/sub\n"
    assert sandbox.exec("printf 'caf\\xc3\\xa9 \\xff'").output == "café \ufffd"


def test_exec_timeout_kills_the_command_and_its_children(start: Start):
    sandbox = start()
    t0 = time.monotonic()
    result = sandbox.exec("sleep 300 & sleep 300; echo never", timeout=1)
    assert result.timed_out and result.exit_code == -1 and not result.ok
    assert "never" not in result.output
    assert time.monotonic() - t0 < 6
    assert sandbox.exec("cat /proc/[0-9]*/cmdline | tr '\\0' ' '").output.count(
        "sleep 300") == 0


def test_exec_timeout_kills_a_command_that_ignores_sigterm(start: Start):
    sandbox = start()
    t0 = time.monotonic()
    result = sandbox.exec("trap '' TERM; echo ready; while true; do sleep 0.1; done",
                          timeout=1)
    elapsed = time.monotonic() - t0
    assert result.timed_out
    assert result.output.startswith("ready\n")
    assert 2.5 < elapsed < 8  # SIGTERM ignored, SIGKILL two seconds later


def test_stop_ends_a_command_that_ignores_sigterm(start: Start):
    sandbox = start()
    results = []
    runner = threading.Thread(target=lambda: results.append(
        sandbox.exec("trap '' TERM; echo started; sleep 120 & wait")))
    runner.start()
    time.sleep(1)
    t0 = time.monotonic()
    sandbox.stop(grace=1)
    runner.join(15)
    assert not runner.is_alive()
    assert time.monotonic() - t0 < 10
    assert results[0].exit_code != 0 and results[0].output.startswith("started")
    assert not sandbox.running()
    sandbox.stop(grace=1)  # twice is fine
    sandbox.remove()
    sandbox.remove()


def test_start_reattaches_to_the_runs_container(start: Start):
    first = start()
    again = start()
    assert again.id == first.id
    first.stop(grace=0)
    # A stopped container lost its processes and tmpfs: the run gets a fresh one, named alike.
    replaced = start()
    assert replaced.id != first.id and replaced.name == first.name and replaced.running()
    assert replaced.exec("echo back").output == "back\n"


def test_a_run_taken_over_on_a_shared_engine_gets_its_own_container(
        start: Start, docker_client, upstream, tmp_path: Path):
    """Two runners (data directories) on one engine: the one that takes a run over from the
    other never works in the other's container, which is bind-mounted on the other's
    worktree; it starts one on its own, and each finds and removes only its own."""
    first = start()
    other = DockerBackend(docker_client, state_dir=tmp_path / "other-runner", image=IMAGE)
    elsewhere = Workspaces(tmp_path / "other-data").prepare(
        first.run_id, "acme/widgets", 42, upstream.url)
    assert other.find(first.run_id) is None
    taken = other.start(SandboxSpec(run_id=first.run_id, repo="acme/widgets", issue=42,
                                    worktree=elsewhere.path, image=IMAGE))
    try:
        assert taken.id != first.id and taken.running() and first.running()
        mounts = {m["Destination"]: m["Source"] for m in taken.inspect()["Mounts"]}
        assert mounts["/workspace"] == str(elsewhere.path)
        taken.exec("echo mine > here.txt")
        assert (elsewhere.path / "here.txt").read_text() == "mine\n"
        found = other.find(first.run_id)
        assert found is not None and found.id == taken.id
        assert other.list_runs() == {first.run_id: taken.name}
        assert other.start(SandboxSpec(run_id=first.run_id, repo="acme/widgets", issue=42,
                                       worktree=elsewhere.path, image=IMAGE)).id == taken.id
    finally:
        taken.remove()
    assert first.running()


def test_orphans_are_removed_after_a_crash(backend: DockerBackend, docker_client,
                                           workspaces: Workspaces, upstream, tmp_path: Path):
    runs = [workspaces.prepare(new_run_id(), "acme/widgets", n, upstream.url)
            for n in (1, 2, 3)]
    for wt in runs:
        backend.start(SandboxSpec(run_id=wt.run_id, repo=wt.repo, issue=wt.issue,
                                  worktree=wt.path, image=IMAGE))
    # Another deployment on the same engine never treats our containers as its orphans.
    stranger = DockerBackend(docker_client, state_dir=tmp_path / "elsewhere", image=IMAGE)
    assert stranger.remove_orphans([]) == []
    assert sorted(backend.list_runs()) == sorted(wt.run_id for wt in runs)

    # The runner crashes: a new process has a new backend (same data directory) and only
    # the store's live runs.
    after_crash = DockerBackend(docker_client, state_dir=backend.state_dir, image=IMAGE)
    live = [runs[0].run_id, "r-notstarted"]
    removed = after_crash.remove_orphans(live)
    assert sorted(removed) == sorted(container_name(wt.run_id) for wt in runs[1:])
    assert after_crash.find(runs[0].run_id) is not None
    assert after_crash.find(runs[1].run_id) is None
    assert after_crash.remove_orphans(live) == []
    assert list(after_crash.list_runs()) == [runs[0].run_id]


def test_secrets_are_never_passed_in(backend: DockerBackend, worktree: Worktree):
    spec = SandboxSpec(run_id=worktree.run_id, repo=worktree.repo, issue=worktree.issue,
                       worktree=worktree.path, image=IMAGE, env={"TOKEN": SECRET})
    with pytest.raises(SandboxError, match="TOKEN"):
        backend.start(spec)
    assert backend.find(worktree.run_id) is None
    assert SECRET not in str(os.environ.get("TOKEN", ""))


def test_missing_image_says_how_to_build_it(backend: DockerBackend, worktree: Worktree):
    spec = SandboxSpec(run_id=worktree.run_id, repo=worktree.repo, issue=worktree.issue,
                       worktree=worktree.path, image="orchestrator-sandbox:does-not-exist")
    with pytest.raises(SandboxError, match="scripts/build-sandbox-image"):
        backend.start(spec)
    backend.ping()  # the configured image exists


def test_exec_timeout_also_kills_what_the_command_started_in_a_new_session(start: Start):
    sandbox = start()
    background = sandbox.exec("sleep 600 &")  # an earlier command's background job stays
    assert background.ok
    result = sandbox.exec("setsid sleep 700 & setsid sh -c 'sleep 800' & sleep 300",
                          timeout=1)
    assert result.timed_out
    left = sandbox.exec("cat /proc/[0-9]*/cmdline | tr '\\0' ' '").output
    assert "sleep 700" not in left and "sleep 800" not in left and "sleep 300" not in left
    assert "sleep 600" in left
    assert sandbox.exec("echo still usable").output == "still usable\n"
