"""Command agents on a host-folder sandbox (the Docker versions are in tests/integration)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

from runner.agent.base import Task
from runner.agent.command import CommandAgent
from runner.config import AgentConfig, GatewayConfig
from runner.model import Budget
from tests.unit.agent.hostsandbox import HostSandbox

# These tests are about running the command; the gateway has its own (test_gateway*.py).
NO_GATEWAY = GatewayConfig(enabled=False)
TASK = Task(title="Rename the flag", body="Call it --verbose.", repo="o/r", issue=3)
BUDGET = Budget(max_turns=10, max_tokens=1000, max_cost_usd=1.0)


def run(tmp_path: Path, command: str, environ: dict[str, str] | None = None,
        pass_env: list[str] | None = None) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    box = HostSandbox(tmp_path, run_id=uuid.uuid4().hex[:8])
    agent = CommandAgent(AgentConfig(kind="command", gateway=NO_GATEWAY, command=command,
                                     pass_env=pass_env or []),
                         timeout=60, environ=environ or {})
    outcome = agent.run(TASK, box, BUDGET, threading.Event(),
                        lambda kind, data: seen.append((kind, data)))
    return outcome, seen


def test_prompt_goes_to_stdin_without_a_prompt_file(tmp_path: Path) -> None:
    outcome, seen = run(tmp_path, "cat; echo finished")
    assert outcome.stop_reason == "done", outcome.error
    output = "".join(d["text"] for k, d in seen if k == "agent.output")
    assert "Rename the flag" in output and "Call it --verbose." in output
    assert outcome.summary.endswith("finished")
    assert seen[0][0] == "agent.start" and seen[-1][0] == "agent.stop"


def test_prompt_file_is_substituted_quoted(tmp_path: Path) -> None:
    outcome, _ = run(tmp_path, "grep -c 'Rename the flag' {prompt_file}")
    assert outcome.stop_reason == "done", outcome.error
    assert outcome.summary == "1"


def test_a_missing_pass_env_variable_is_named(tmp_path: Path) -> None:
    outcome, seen = run(tmp_path, "true", environ={}, pass_env=["AIDER_KEY"])
    assert outcome.stop_reason == "error" and "AIDER_KEY" in outcome.error
    assert not seen


def test_exit_code_is_an_error_with_the_output_tail(tmp_path: Path) -> None:
    outcome, _ = run(tmp_path, "echo 'model refused'; exit 2")
    assert outcome.stop_reason == "error"
    assert "code 2" in outcome.error and "model refused" in outcome.error
