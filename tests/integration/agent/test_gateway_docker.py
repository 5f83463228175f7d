"""A command agent in a real container reaches its model only through the run's gateway.

The agent is a Python script on the real anthropic SDK (tests/unit/agent/sdk_agent.py), in
an image built on the sandbox image with the SDK (sdk_image.py); it gets nothing but the
gateway's base URL and a per-run credential. It fixes a real bug against the LLM emulator,
under the engine's default runtime and under gVisor, while the key stays out of the
container and nothing but the gateway is reachable from it.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from runner.agent.base import Task
from runner.agent.command import CommandAgent
from runner.config import AgentConfig
from runner.model import Budget
from runner.sandbox.base import SandboxSpec
from runner.sandbox.docker import DockerBackend, DockerSandbox
from runner.testing.forge import ForgeEmulator
from runner.testing.llm import LLMEmulator, Reply
from tests.integration.agent.sdk_image import AGENT, BASE, SDK_DIR, sdk_image
from tests.integration.sandbox.conftest import require_runtime
from tests.support import missing
from tests.unit.agent.project import TEST_COMMAND, fixing_script, project_worktree

pytestmark = [pytest.mark.docker, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

KEY_ENV = "ORCH_TEST_GATEWAY_KEY"
KEY = "sk-ant-test-" + uuid.uuid4().hex  # the real key, as far as this test is concerned
TASK = Task(title="add() is broken", body="test_calc fails; fix add().", repo="acme/calc",
            issue=1)
BUDGET = Budget(max_turns=20, max_tokens=1_000_000, max_cost_usd=10.0)
Events = list[tuple[str, dict[str, Any]]]


@pytest.fixture(scope="module")
def image(docker_client: Any) -> str:
    try:
        docker_client.images.get(BASE)
    except docker.errors.ImageNotFound:
        missing(f"the sandbox image {BASE} is missing: run scripts/build-sandbox-image")
    return sdk_image(docker_client)


@pytest.fixture(params=[None, "runsc"], ids=["runc", "runsc"])
def runtime(request: pytest.FixtureRequest, docker_client: Any) -> str | None:
    require_runtime(docker_client, request.param)
    return request.param  # type: ignore[no-any-return]


def _sandbox(docker_client: Any, tmp_path: Path, image: str,
             runtime: str | None) -> Iterator[DockerSandbox]:
    repo = project_worktree(tmp_path)
    backend = DockerBackend(docker_client, state_dir=tmp_path / "state", image=image,
                            secrets=[KEY])
    box = backend.start(SandboxSpec(run_id=f"gw-test-{uuid.uuid4().hex[:8]}", repo="acme/calc",
                                    issue=1, worktree=repo, image=image, gateway=True,
                                    runtime=runtime))
    try:
        yield box
    finally:
        box.remove()


@pytest.fixture
def sandbox(docker_client: Any, tmp_path: Path, image: str, runtime: str | None
            ) -> Iterator[DockerSandbox]:
    yield from _sandbox(docker_client, tmp_path, image, runtime)


@pytest.fixture
def runc_sandbox(docker_client: Any, tmp_path: Path, image: str
                 ) -> Iterator[DockerSandbox]:
    yield from _sandbox(docker_client, tmp_path, image, None)


def run_agent(sandbox: DockerSandbox, llm: LLMEmulator, command: str = AGENT,
              budget: Budget = BUDGET, cancel: threading.Event | None = None
              ) -> tuple[Any, Events]:
    config = AgentConfig(kind="command", command=command, base_url=llm.base_url,
                         api_key_env=KEY_ENV)
    seen: Events = []
    outcome = CommandAgent(config, timeout=300, environ={KEY_ENV: KEY}).run(
        TASK, sandbox, budget, cancel or threading.Event(),
        lambda kind, data: seen.append((kind, data)))
    return outcome, seen


def output_of(seen: Events) -> str:
    return "".join(d["text"] for k, d in seen if k == "agent.output")


def _host_addresses() -> list[str]:
    """This machine's addresses a container could try: loopback, the Docker bridge's
    gateway, the host's own."""
    found = {"127.0.0.1"}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent; the route picks an address
            found.add(s.getsockname()[0])
        except OSError:
            pass
    try:  # every interface's address (iproute2 may be missing: then the two above)
        done = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True)
        found |= set(re.findall(r"inet (\d+\.\d+\.\d+\.\d+)", done.stdout))
    except OSError:
        pass
    return sorted(found)


def test_the_agent_fixes_the_bug_through_the_gateway_and_reaches_nothing_else(
        sandbox: DockerSandbox, tmp_path: Path) -> None:
    key = KEY
    # What the container must not reach: the forge, a runner port open on every interface,
    # the model's own address (served on every interface here), and another host.
    runner_port = socket.socket()
    runner_port.bind(("0.0.0.0", 0))
    runner_port.listen(8)
    with ForgeEmulator("github", tmp_path / "forge") as forge, \
            LLMEmulator(policy=fixing_script(), api_key=key, host="0.0.0.0") as llm:
        llm_port, api_port = llm.port, runner_port.getsockname()[1]
        targets = [f"127.0.0.1:{forge.port}", "1.1.1.1:443"] + [
            f"{address}:{port}" for address in _host_addresses()
            for port in (api_port, llm_port)]
        # From the host they all answer (but the other host): the probe can see a way out.
        for target in targets[:1] + targets[2:]:
            host, port = target.rsplit(":", 1)
            socket.create_connection((host, int(port)), timeout=3).close()
        llm.policy = fixing_script()
        command = f"python3 {SDK_DIR}/probe.py {' '.join(targets)} && {AGENT}"
        outcome, seen = run_agent(sandbox, llm, command=command)
        exchanges = list(llm.exchanges)
    runner_port.close()
    output = output_of(seen)
    assert outcome.stop_reason == "done", (outcome.error, output[-3000:])
    assert "GATEWAY ok" in output
    for target in targets:
        assert f"UNREACHABLE {target}" in output, (target, output[:3000])
    assert "REACHED" not in output
    # The agent had the gateway's credential, never the key, in any process's environment.
    assert "ANTHROPIC_API_KEY', '[run credential]'" in output
    assert key not in output and "[redacted]" not in output
    assert sandbox.exec(TEST_COMMAND, timeout=60).ok
    assert len(exchanges) == 5 and outcome.turns == 5 and outcome.usage.cost_usd > 0
    # Nor in the container's files, its processes now, or the engine's view of it.
    found = sandbox.exec(["bash", "-c", "grep -rlF -f /dev/stdin --exclude-dir=proc "
                          "--exclude-dir=sys --exclude-dir=dev / /proc/[0-9]*/environ "
                          "2>/dev/null; true"], stdin=key.encode(), timeout=120)
    assert found.output.strip() == "", found.output
    assert key not in json.dumps(sandbox.inspect())
    assert key not in repr(seen)


def test_overspending_stops_the_run_with_reason_budget(runc_sandbox: DockerSandbox) -> None:
    budget = Budget(max_turns=20, max_tokens=1_000_000, max_cost_usd=0.0001)
    with LLMEmulator(policy=fixing_script(), api_key=KEY) as llm:
        outcome, seen = run_agent(runc_sandbox, llm, budget=budget)
    assert outcome.stop_reason == "budget", outcome
    turns = [d for k, d in seen if k == "agent.turn"]
    assert len(turns) == outcome.turns == 1
    assert turns[0]["tokens_in"] > 0 and turns[0]["cost_usd"] > 0
    assert "budget is spent" in output_of(seen)


def test_a_kill_during_a_slow_model_call_cuts_it(runc_sandbox: DockerSandbox) -> None:
    cancel = threading.Event()
    with LLMEmulator(script=[Reply.text("slow", delay=120)], api_key=KEY) as llm:
        result: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: result.update(
            outcome=run_agent(runc_sandbox, llm, cancel=cancel)[0]))
        worker.start()
        deadline = time.monotonic() + 60
        while not llm.exchanges:
            assert time.monotonic() < deadline, "the agent never called the model"
            time.sleep(0.05)
        cancel.set()
        worker.join(15)  # the reply would take two minutes
        deadline = time.monotonic() + 5
        while not llm.exchanges[0].aborted and time.monotonic() < deadline:
            time.sleep(0.02)
        aborted = llm.exchanges[0].aborted
    assert not worker.is_alive()
    assert result["outcome"].stop_reason == "cancelled"
    assert aborted  # the gateway hung up on the provider
