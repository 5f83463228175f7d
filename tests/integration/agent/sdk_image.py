"""A sandbox image with the anthropic SDK and a small agent on it, for command-agent tests.

A team running its own agent builds its image ``FROM orchestrator-sandbox`` with the agent
installed; this does the same, offline: the SDK and what it needs are copied from this
interpreter's site-packages (the sandbox image's python3 is the same minor version) into
``/opt/sdk``, with ``tests/unit/agent/sdk_agent.py`` and a network probe beside them. Built
once per content (a label holds its hash).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import re
import tarfile
from pathlib import Path
from typing import Any

import docker.errors

BASE = "orchestrator-sandbox:latest"
TAG = "orchestrator-sandbox-sdk-test:latest"
SDK_DIR = "/opt/sdk"
AGENT = f"PYTHONPATH={SDK_DIR} python3 {SDK_DIR}/sdk_agent.py {{prompt_file}}"
SDK_AGENT = Path(__file__).parents[2] / "unit" / "agent" / "sdk_agent.py"
LABEL = "org.orchestrator.test-recipe"

# Run inside the container before the agent: which addresses answer, what the environment
# (every process's) holds.
PROBE = r'''
import glob, os, socket, sys, urllib.request
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        print("REACHED", target)
    except OSError as exc:
        print("UNREACHABLE", target, type(exc).__name__)
with urllib.request.urlopen(os.environ["ORCHESTRATOR_GATEWAY"] + "/healthz", timeout=10) as r:
    print("GATEWAY", r.read().decode())
print("ENV", sorted(os.environ.items()))
for path in glob.glob("/proc/[0-9]*/environ"):
    try:
        print("PROCENV", path, open(path, "rb").read().replace(b"\0", b" ").decode())
    except OSError:
        pass
'''


def _files() -> list[tuple[str, Path | bytes]]:
    """(path in /opt/sdk, file or content) for the SDK, its dependencies and the scripts."""
    seen: set[str] = set()
    todo = ["anthropic"]
    out: list[tuple[str, Path | bytes]] = []
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a dependency for other Pythons or platforms
        for requirement in dist.requires or []:
            if "extra ==" not in requirement:
                todo.append(re.split(r"[ <>=!~;\[(]", requirement, maxsplit=1)[0])
        for file in dist.files or []:
            if ".." not in file.parts and "__pycache__" not in file.parts:
                out.append((str(file), Path(str(file.locate()))))
    out.append(("sdk_agent.py", SDK_AGENT))
    out.append(("probe.py", PROBE.encode()))
    return sorted(out, key=lambda item: item[0])


def sdk_image(docker_client: Any) -> str:
    """The image's tag, built when missing or out of date."""
    files = _files()
    digest = hashlib.sha256()
    for name, source in files:
        digest.update(name.encode())
        digest.update(source if isinstance(source, bytes) else source.read_bytes())
    base_id = docker_client.images.get(BASE).id
    digest.update(base_id.encode())
    recipe = digest.hexdigest()[:16]
    try:
        if docker_client.images.get(TAG).labels.get(LABEL) == recipe:
            return TAG
    except docker.errors.ImageNotFound:  # not built yet
        pass
    dockerfile = (f"FROM {BASE}\nCOPY sdk {SDK_DIR}\nLABEL {LABEL}={recipe}\n").encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add(tar, "Dockerfile", dockerfile)
        for name, source in files:
            if isinstance(source, bytes):
                _add(tar, f"sdk/{name}", source)
            else:
                tar.add(str(source), arcname=f"sdk/{name}", recursive=False)
    buffer.seek(0)
    docker_client.images.build(fileobj=buffer, custom_context=True, tag=TAG, rm=True)
    return TAG


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
