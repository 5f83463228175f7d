"""The deployable runner: compose.yaml is a valid Compose file with the runner and Valkey, and
the Dockerfile builds a non-root runner from a configurable base image, which really builds
here (from the local base image) and starts: help, config check and doctor in the container."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.runner_image import build_runner_image, docker

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


# ------------------------------------------------------------------ the image, built and run

SMALL_CONFIG = """\
forges:
  github:
    kind: github
    token_env: GITHUB_TOKEN
repos:
  - name: acme/widgets
    forge: github
"""


@pytest.fixture(scope="module")
def runner_image() -> str:
    """The runner's image built from this checkout on the local base; its id."""
    return build_runner_image()


def run_in(image: str, *args: str, config: Path | None = None, socket: bool = False,
           ) -> subprocess.CompletedProcess[str]:
    """``docker run`` the image as a user would: the config mounted read-only, no network."""
    options = ["--rm", "--network", "none", "-e", "GITHUB_TOKEN=not-a-real-token"]
    if config is not None:
        options += ["-v", f"{config}:/etc/orchestrator/orchestrator.yml:ro"]
    if socket:
        gid = os.stat("/var/run/docker.sock").st_gid
        options += ["-v", "/var/run/docker.sock:/var/run/docker.sock", "--group-add", str(gid),
                    "-e", "DOCKER_HOST=unix:///var/run/docker.sock"]
    return docker("run", *options, image, *args)


@pytest.fixture
def small_config(tmp_path: Path) -> Path:
    path = tmp_path / "orchestrator.yml"
    path.write_text(SMALL_CONFIG)
    path.chmod(0o644)  # the container's user is not the file's owner
    return path


class TestRunnerImage:
    """The Dockerfile really builds (here: from the local base, through the host's proxy CA)
    and the image starts as the README and compose.yaml say it does."""

    # A cold build (the dependencies) takes minutes on a busy 2-core machine.
    pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

    def test_runs_as_non_root_and_answers_help(self, runner_image: str) -> None:
        user = docker("image", "inspect", "--format", "{{.Config.User}}", runner_image)
        assert user.stdout.strip() == "orchestrator"
        ids = docker("run", "--rm", "--network", "none", "--entrypoint", "id", runner_image)
        assert ids.returncode == 0, ids.stderr
        assert ids.stdout.startswith("uid=10001(orchestrator) gid=10001(orchestrator)"), ids.stdout
        done = run_in(runner_image, "--help")
        assert done.returncode == 0, done.stderr
        for command in ("serve", "config", "doctor"):
            assert f"  {command} " in done.stdout

    def test_config_check_passes_on_a_mounted_config(self, runner_image: str,
                                                     small_config: Path) -> None:
        done = run_in(runner_image, "config", "check", config=small_config)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("OK /etc/orchestrator/orchestrator.yml: 1 forge(s), "
                                      "1 repo(s)"), done.stdout

    def test_doctor_reaches_the_engine_through_the_mounted_socket(self, runner_image: str,
                                                                  small_config: Path) -> None:
        if not Path("/var/run/docker.sock").is_socket():
            pytest.skip("the engine is not at /var/run/docker.sock here (DOCKER_HOST elsewhere)")
        done = run_in(runner_image, "doctor", config=small_config, socket=True)
        lines = {line.split()[1]: line for line in done.stdout.splitlines()
                 if line.split()[:1] in (["OK"], ["FAIL"], ["WARN"])}
        assert "Traceback" not in done.stdout + done.stderr
        for check in ("python", "config", "store", "docker"):
            assert lines.get(check, "").startswith("OK"), done.stdout
        assert "engine " in lines["docker"]
