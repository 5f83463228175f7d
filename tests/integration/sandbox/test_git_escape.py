"""An agent that tampers with git cannot make the runner's commit run its code.

The agent's container masks the worktree's ``.git``; these tests also take the mask away (a
container made without it, as if the mask failed) and let the agent replace ``.git`` with a
repository of its own carrying hooks and an fsmonitor command. The runner's next commit
must run none of them and must land on the run's branch in the runner's mirror.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner.sandbox.docker import DockerSandbox
from runner.workspace import Workspaces, Worktree
from tests.integration.sandbox.conftest import IMAGE

pytestmark = pytest.mark.docker


def plant_script(markers: Path) -> str:
    """What the malicious agent runs in /workspace: a fake .git with hooks and fsmonitor."""
    hook = f"#!/bin/sh\\ntouch {markers}/hook-$(basename $0)\\n"
    return f"""
set -e
rm -rf /workspace/.git
git init -q /workspace
cd /workspace
git config core.fsmonitor 'touch {markers}/fsmonitor; echo'
git config filter.evil.clean 'touch {markers}/filter; cat'
echo '* filter=evil' > .gitattributes
for h in pre-commit commit-msg post-commit prepare-commit-msg post-index-change; do
    printf '{hook}' > .git/hooks/$h
    chmod +x .git/hooks/$h
done
echo 'print("feature")' > feature.py
echo planted
"""


def marker_dir(tmp_path: Path) -> Path:
    # Outside the worktree and not mounted into any container: only code running on the
    # host could create files here.
    markers = tmp_path / "markers"
    markers.mkdir(mode=0o777)
    markers.chmod(0o777)
    return markers


def mirror_log(workspaces: Workspaces, wt: Worktree) -> list[str]:
    out = subprocess.run(["git", "log", "--format=%H %an %s", wt.branch],
                         cwd=workspaces.mirror_path(wt.repo), capture_output=True, text=True,
                         check=True).stdout
    return out.splitlines()


def test_replaced_git_entry_hooks_and_fsmonitor_never_run_on_commit(
        docker_client: Any, sandbox_image: str, workspaces: Workspaces, worktree: Worktree,
        tmp_path: Path):
    markers = marker_dir(tmp_path)
    owner = worktree.path.stat()
    uid = owner.st_uid or 1000
    if owner.st_uid == 0:
        subprocess.run(["chown", "-R", f"{uid}:{uid}", str(worktree.path)], check=True)
    # A container like the sandbox but WITHOUT the .git mask: the worst case.
    output = docker_client.containers.run(
        IMAGE, ["bash", "-c", plant_script(markers)], remove=True, network_mode="none",
        user=f"{uid}:{uid}", environment={"HOME": "/tmp"}, working_dir="/workspace",
        volumes={str(worktree.path): {"bind": "/workspace", "mode": "rw"}},
    ).decode()
    assert "planted" in output
    assert (worktree.path / ".git").is_dir()  # the agent really replaced it

    before = mirror_log(workspaces, worktree)
    sha = workspaces.commit(worktree, "agent's work")

    assert sorted(p.name for p in markers.iterdir()) == []  # nothing ran on the host
    after = mirror_log(workspaces, worktree)
    assert len(after) == len(before) + 1 and after[0].startswith(f"{sha} ")
    assert "orchestrator[bot] agent's work" in after[0]
    tree = subprocess.run(["git", "ls-tree", "-r", "--name-only", sha],
                          cwd=workspaces.mirror_path(worktree.repo), capture_output=True,
                          text=True, check=True).stdout.split()
    assert "feature.py" in tree and not any(p.startswith(".git/") for p in tree)
    planted_commits = subprocess.run(
        ["git", "-c", "safe.directory=*", "-c", "core.fsmonitor=false", "rev-list", "--all"],
        cwd=worktree.path, capture_output=True, text=True)
    assert planted_commits.stdout.strip() == ""  # nothing was committed to the fake repo

    # Control: plain git on the host WOULD have run the agent's code.
    control = ["git", "-c", "safe.directory=*", "-c", "user.name=x", "-c", "user.email=x@x"]
    subprocess.run([*control, "add", "--all"], cwd=worktree.path, capture_output=True)
    subprocess.run([*control, "commit", "-qm", "x"], cwd=worktree.path, capture_output=True)
    assert {"fsmonitor", "filter", "hook-pre-commit", "hook-post-commit"} <= {
        p.name for p in markers.iterdir()}

    workspaces.remove(worktree)  # cleanup copes with the replaced .git
    assert not worktree.path.exists()
    assert workspaces.list_worktrees() == []


def test_agent_in_the_sandbox_cannot_replace_git_and_nested_repos_stay_inert(
        start: Callable[..., DockerSandbox], workspaces: Workspaces, worktree: Worktree,
        tmp_path: Path):
    markers = marker_dir(tmp_path)
    sandbox = start()
    attempt = sandbox.exec(plant_script(markers))
    assert not attempt.ok  # the mask holds: .git cannot be removed or replaced
    assert (worktree.path / ".git").read_text().startswith("gitdir: ")
    # Plan B for the agent: a nested repository with the same traps.
    nested = sandbox.exec(plant_script(markers).replace("/workspace", "/workspace/sub"))
    assert nested.ok, nested.output
    (worktree.path / "feature.py").write_text("print('feature')\n")

    sha = workspaces.commit(worktree, "agent's work")
    assert sha
    assert list(markers.iterdir()) == []
    tree = subprocess.run(["git", "ls-tree", "-r", "--name-only", sha],
                          cwd=workspaces.mirror_path(worktree.repo), capture_output=True,
                          text=True, check=True).stdout.split()
    assert "feature.py" in tree and "sub" not in tree
