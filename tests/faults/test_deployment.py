"""The deployable runner: compose.yaml is a valid Compose file with the runner and Valkey, and
the Dockerfile builds a non-root runner from a configurable base image."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose_command() -> list[str] | None:
    """`docker compose` (the plugin) or `docker-compose` (the 1.x tool), if either works."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_is_valid_and_wires_runner_to_valkey() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    done = subprocess.run([*command, "-f", str(ROOT / "compose.yaml"), "config"],
                          capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(ROOT)})
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert set(services) == {"runner", "valkey"}
    runner = services["runner"]
    env = runner["environment"]
    assert env["ORCHESTRATOR_STORE__REDIS"].startswith("redis://valkey:")
    assert "--appendonly" in services["valkey"]["command"]  # runs survive a restart
    mounts = [str(v) if isinstance(v, str) else f"{v['source']}:{v['target']}"
              for v in runner["volumes"]]
    assert any("/var/run/docker.sock" in m for m in mounts)
    data = env["ORCHESTRATOR_DATA_DIR"]
    assert any(m.startswith(f"{data}:{data}") for m in mounts), "data dir not at the same path"
    assert runner["group_add"], "the non-root runner needs the docker socket's group"


def test_dockerfile_runs_the_runner_as_non_root_from_a_configurable_base() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^FROM \$\{BASE\}$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0"), "the runner must not run as root"
    assert re.search(r'^ENTRYPOINT \[.*"orchestrator"\]$', text, re.M)
