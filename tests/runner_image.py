"""The runner's image (the project's Dockerfile), built from this checkout on the local
Debian base: shared by the deployment test and the fleet harness (tests/fleet)."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.support import missing

ROOT = Path(__file__).resolve().parents[1]
RUNNER_IMAGE = "orchestrator-runner:test"
# scripts/build-sandbox-image makes this Debian bookworm with python3, venv and pip from
# Debian's mirror alone, so the build needs no registry.
LOCAL_BASE = "orchestrator-sandbox-base:bookworm"
PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


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


def require_docker() -> None:
    """Fail under CI, skip elsewhere, without the docker CLI, an engine and the local base."""
    if shutil.which("docker") is None:
        missing("the docker CLI is not installed (apt-get install docker.io)")
    if docker("info").returncode != 0:
        missing("no Docker engine answers; start dockerd or set DOCKER_HOST")
    if docker("image", "inspect", LOCAL_BASE).returncode != 0:
        missing(f"the base image {LOCAL_BASE} is missing: run scripts/build-sandbox-image")


def build_runner_image(tag: str = RUNNER_IMAGE) -> str:
    """The runner's image built from this checkout on the local base; its id.

    Built every time, and cheap when nothing changed: the Dockerfile installs the
    dependencies from requirements/runtime.lock alone, so the layer cache redoes the slow step
    (minutes) only when the lock, the Dockerfile, the base or the extra CAs change, and a
    change to the code redoes only the copy and the package's own install (about 20 s here)."""
    require_docker()
    old = docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        iidfile = Path(tmp) / "iid"
        # --network host: the build needs apt and PyPI, and an engine started without a
        # bridge (scripts/build-sandbox-image falls back to --bridge=none) gives a build
        # container no network otherwise. EXTRA_CA_CERTS without a value: from the
        # environment, not argv.
        built = docker("build", "--network", "host", "--pull=false", "--force-rm",
                       "--iidfile", str(iidfile), "--build-arg", f"BASE={LOCAL_BASE}",
                       "--build-arg", "EXTRA_CA_CERTS", "-t", tag, str(ROOT),
                       timeout=540, cwd=ROOT,
                       env={**os.environ, "EXTRA_CA_CERTS": extra_ca_certs(LOCAL_BASE)})
        assert built.returncode == 0, f"build failed:\n{built.stdout[-4000:]}\n{built.stderr}"
        image = iidfile.read_text().strip()
    # The previous build is now untagged: drop it (if no container uses it) rather than keep
    # one image per change of the code.
    if old and old != image:
        docker("image", "rm", old)
    return image
