"""Both agents against the real Docker sandbox: the Claude loop fixes a real failing test,
and a command agent runs inside the container with only the environment it was given."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from runner.agent.base import Task
from runner.agent.claude import ClaudeAgent
from runner.agent.command import CommandAgent
from runner.config import AgentConfig, GatewayConfig
from runner.model import Budget
from runner.sandbox.base import SandboxSpec
from runner.sandbox.docker import DockerBackend, DockerSandbox
from runner.testing.llm import LLMEmulator
from tests.support import missing
from tests.unit.agent.project import FIXED, TEST_COMMAND, fixing_script, project_worktree

pytestmark = [pytest.mark.docker, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

IMAGE = "orchestrator-sandbox:latest"
KEY_ENV = "ORCH_TEST_ANTHROPIC_KEY"
# These tests are about running the command; the gateway has its own (test_gateway*.py).
NO_GATEWAY = GatewayConfig(enabled=False)
TASK = Task(title="add() is broken", body="test_calc fails; fix add().", repo="acme/calc",
            issue=1)
BUDGET = Budget(max_turns=20, max_tokens=1_000_000, max_cost_usd=10.0)


@pytest.fixture
def sandbox(docker_client: Any, tmp_path: Path) -> Iterator[DockerSandbox]:
    try:
        docker_client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        missing(f"the sandbox image {IMAGE} is missing: run scripts/build-sandbox-image")
    repo = project_worktree(tmp_path)
    backend = DockerBackend(docker_client, state_dir=tmp_path / "state", image=IMAGE)
    box = backend.start(SandboxSpec(run_id=f"agent-test-{uuid.uuid4().hex[:8]}",
                                    repo="acme/calc", issue=1, worktree=repo, image=IMAGE))
    try:
        yield box
    finally:
        box.remove()


def events() -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    seen: list[tuple[str, dict[str, Any]]] = []
    return seen, lambda kind, data: seen.append((kind, data))


def test_claude_loop_fixes_a_failing_test_in_the_container(sandbox: DockerSandbox) -> None:
    before = sandbox.exec(TEST_COMMAND, timeout=60)
    assert not before.ok and "FAILED" in before.output
    with LLMEmulator(policy=fixing_script()) as llm:
        agent = ClaudeAgent(AgentConfig(base_url=llm.base_url, api_key_env=KEY_ENV),
                            environ={KEY_ENV: llm.api_key})
        seen, sink = events()
        outcome = agent.run(TASK, sandbox, BUDGET, threading.Event(), sink)
        key = llm.api_key
    assert outcome.stop_reason == "done", outcome.error
    assert "passes now" in outcome.summary
    after = sandbox.exec(TEST_COMMAND, timeout=60)
    assert after.ok, after.output
    # The edit happened in the container, on the worktree the runner will commit.
    assert sandbox.exec("cat calc.py").output.count(FIXED.strip()) == 1
    # The key stayed in the runner: not in the container's environment, not in the audit.
    assert key not in sandbox.exec("env; cat /proc/1/environ", timeout=30).output
    assert key not in repr(seen)


def test_command_agent_gets_prompt_and_named_env_only(sandbox: DockerSandbox) -> None:
    # A stand-in CLI agent: reads its prompt file, applies the fix, prints what it saw.
    script = ("import os,sys; p=open(sys.argv[1]).read(); "
              "print('TASK-SEEN' if 'add() is broken' in p else 'NO-TASK'); "
              "print('TOKEN=' + os.environ.get('AGENT_TOKEN', 'absent')); "
              "print('OTHER=' + os.environ.get('OTHER_SECRET', 'absent')); "
              "s=open('calc.py').read().replace('a - b','a + b'); open('calc.py','w').write(s)")
    config = AgentConfig(kind="command", gateway=NO_GATEWAY,
                         command=f"python3 -c \"{script}\" {{prompt_file}}",
                         pass_env=["AGENT_TOKEN"])
    environ = {"AGENT_TOKEN": "tok-123-secret", "OTHER_SECRET": "nope"}
    seen, sink = events()
    outcome = CommandAgent(config, timeout=120, environ=environ).run(
        TASK, sandbox, BUDGET, threading.Event(), sink)
    assert outcome.stop_reason == "done", outcome.error
    output = "".join(d["text"] for k, d in seen if k == "agent.output")
    assert "TASK-SEEN" in output and "OTHER=absent" in output
    assert "TOKEN=[redacted]" in output  # it got the value; the audit log did not
    assert "tok-123-secret" not in repr(seen) + outcome.summary
    assert sandbox.exec(TEST_COMMAND, timeout=60).ok
    # The key was given to the agent's process only; the env file is gone afterwards.
    leftovers = sandbox.exec("env; ls -a /tmp $HOME; cat /proc/1/environ", timeout=30).output
    assert "tok-123-secret" not in leftovers and ".orchestrator-agent" not in leftovers


PROCESSES = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done 2>/dev/null"


def test_command_agent_cancel_stops_the_process(sandbox: DockerSandbox) -> None:
    config = AgentConfig(kind="command", gateway=NO_GATEWAY, command="sleep 300 # {prompt_file}")
    cancel = threading.Event()
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(outcome=CommandAgent(
        config, timeout=600, environ={}).run(TASK, sandbox, BUDGET, cancel, events()[1])))
    worker.start()
    deadline = time.monotonic() + 30
    while "sleep 300" not in sandbox.exec(PROCESSES, timeout=10).output:
        assert time.monotonic() < deadline, "the agent command never started"
        time.sleep(0.2)
    cancel.set()
    worker.join(15)
    assert not worker.is_alive()
    assert result["outcome"].stop_reason == "cancelled"
    assert "sleep 300" not in sandbox.exec(PROCESSES, timeout=10).output


def test_command_agent_timeout_and_failure_are_errors(sandbox: DockerSandbox) -> None:
    slow = CommandAgent(AgentConfig(kind="command", gateway=NO_GATEWAY, command="sleep 30"),
                        timeout=2, environ={})
    outcome = slow.run(TASK, sandbox, BUDGET, threading.Event(), events()[1])
    assert outcome.stop_reason == "error" and "killed after 2 s" in outcome.error
    failing = CommandAgent(AgentConfig(kind="command", gateway=NO_GATEWAY,
                                       command="echo boom; exit 4"), timeout=60, environ={})
    outcome = failing.run(TASK, sandbox, BUDGET, threading.Event(), events()[1])
    assert outcome.stop_reason == "error"
    assert "code 4" in outcome.error and "boom" in outcome.error
