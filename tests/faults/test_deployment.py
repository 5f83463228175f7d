"""The deployable runner: compose.yaml is a valid Compose file with the runner and Valkey, and
the Dockerfile builds a non-root runner from a configurable base image, which really builds
here (from the local base image) and starts: help, config check and doctor in the container."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import missing

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

RUNNER_IMAGE = "orchestrator-runner:test"
# scripts/build-sandbox-image makes this Debian bookworm with python3, venv and pip from
# Debian's mirror alone, so the build needs no registry.
LOCAL_BASE = "orchestrator-sandbox-base:bookworm"
PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
SMALL_CONFIG = """\
forges:
  github:
    kind: github
    token_env: GITHUB_TOKEN
repos:
  - name: acme/widgets
    forge: github
"""


def docker(*args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          **kw)


def host_ca_bundle() -> Path | None:
    """The CA bundle this machine's own TLS clients trust, if it names one."""
    for candidate in (os.environ.get("SSL_CERT_FILE"), os.environ.get("PIP_CERT"),
                      os.environ.get("REQUESTS_CA_BUNDLE"), ssl.get_default_verify_paths().cafile,
                      "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def extra_ca_certs(base: str) -> str:
    """The host's CA certificates that ``base`` does not trust yet, as PEM: a TLS-intercepting
    proxy's CA, when the host has one. The Dockerfile's EXTRA_CA_CERTS takes them; the whole
    bundle would not fit in one build argument (128 KiB)."""
    bundle = host_ca_bundle()
    if bundle is None:
        return ""
    done = docker("run", "--rm", "--network", "none", "--entrypoint", "cat", base,
                  "/etc/ssl/certs/ca-certificates.crt")
    trusted = {ssl.PEM_cert_to_DER_cert(c) for c in PEM.findall(done.stdout)}
    extra = [c for c in PEM.findall(bundle.read_text(errors="replace"))
             if ssl.PEM_cert_to_DER_cert(c) not in trusted]
    pem = "\n".join(extra)
    assert len(pem) < 120_000, (f"{len(extra)} certificates of {bundle} are not in {base}'s "
                                "store: too many for one build argument")
    return pem


@pytest.fixture(scope="module")
def runner_image() -> Iterator[str]:
    """The runner's image built from this checkout on the local base; its id.

    Built every time, and cheap when nothing changed: the Dockerfile installs the
    dependencies from pyproject.toml alone, so the builder's layer cache redoes the slow step
    (minutes) only when pyproject.toml, the Dockerfile, the base or the extra CAs change, and a
    change to the code redoes only the copy and the package's own install (about 20 s here)."""
    if shutil.which("docker") is None:
        missing("the docker CLI is not installed (apt-get install docker.io)")
    if docker("info").returncode != 0:
        missing("no Docker engine answers; start dockerd or set DOCKER_HOST")
    if docker("image", "inspect", LOCAL_BASE).returncode != 0:
        missing(f"the base image {LOCAL_BASE} is missing: run scripts/build-sandbox-image")
    old = docker("image", "inspect", "--format", "{{.Id}}", RUNNER_IMAGE).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        iidfile = Path(tmp) / "iid"
        # --network host: the build needs apt and PyPI, and an engine started without a
        # bridge (scripts/build-sandbox-image falls back to --bridge=none) gives a build
        # container no network otherwise. EXTRA_CA_CERTS without a value: from the
        # environment, not argv.
        built = docker("build", "--network", "host", "--pull=false", "--force-rm",
                       "--iidfile", str(iidfile), "--build-arg", f"BASE={LOCAL_BASE}",
                       "--build-arg", "EXTRA_CA_CERTS", "-t", RUNNER_IMAGE, str(ROOT),
                       timeout=540, cwd=ROOT,
                       env={**os.environ, "EXTRA_CA_CERTS": extra_ca_certs(LOCAL_BASE)})
        assert built.returncode == 0, f"build failed:\n{built.stdout[-4000:]}\n{built.stderr}"
        image = iidfile.read_text().strip()
    # The previous build is now untagged: drop it (if no container uses it) rather than keep
    # one image per change of the code.
    if old and old != image:
        docker("image", "rm", old)
    yield image


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
