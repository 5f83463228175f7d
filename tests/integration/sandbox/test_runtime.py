"""sandbox.runtime: the engine's runtimes as doctor reports them, and registering gVisor."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runner.doctor import DoctorFail, runtime_status
from runner.sandbox.base import SandboxError, SandboxSpec
from runner.sandbox.docker import DockerBackend
from runner.workspace import Worktree
from tests.integration.sandbox.conftest import IMAGE, require_runtime

REGISTER = Path(__file__).parents[3] / "scripts" / "register-runsc"


@pytest.mark.docker
def test_doctor_says_whether_the_runtime_is_there(docker_client: Any) -> None:
    require_runtime(docker_client, "runsc")
    assert runtime_status(docker_client, "runsc") == "runsc (gVisor)"
    assert "runsc (gVisor) is available" in runtime_status(docker_client, None)
    with pytest.raises(DoctorFail, match=r"no-such-runtime.*daemon\.json"):
        runtime_status(docker_client, "no-such-runtime")


@pytest.mark.docker
def test_a_missing_runtime_is_a_clear_sandbox_error(backend: DockerBackend,
                                                    worktree: Worktree) -> None:
    spec = SandboxSpec(run_id=worktree.run_id, repo=worktree.repo, issue=worktree.issue,
                       worktree=worktree.path, image=IMAGE, runtime="no-such-runtime")
    with pytest.raises(SandboxError, match=r"no runtime .no-such-runtime.*sandbox\.runtime"):
        backend.start(spec)


def register(path: Path) -> str:
    done = subprocess.run([str(REGISTER)], env={**os.environ, "DAEMON_JSON": str(path),
                                                "REGISTER_RUNSC_NO_RELOAD": "1"},
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_registering_runsc_merges_into_the_daemon_config(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"storage-driver": "overlay2", "runtimes": {
        "kata": {"path": "/usr/bin/kata"}}}))
    assert register(path) == "changed=yes"
    config = json.loads(path.read_text())
    assert config["storage-driver"] == "overlay2"  # nothing else is touched
    assert config["runtimes"]["kata"] == {"path": "/usr/bin/kata"}
    assert config["runtimes"]["runsc"]["runtimeArgs"] == ["--network=none", "--host-uds=open"]
    # An operator's own runsc entry is left as it is; a missing file is made.
    path.write_text(json.dumps({"runtimes": {"runsc": {"path": "/opt/runsc"}}}))
    assert register(path) == "changed=no"
    assert json.loads(path.read_text()) == {"runtimes": {"runsc": {"path": "/opt/runsc"}}}
    fresh = tmp_path / "new" / "daemon.json"
    assert register(fresh) == "changed=yes" and "runsc" in json.loads(fresh.read_text())[
        "runtimes"]
