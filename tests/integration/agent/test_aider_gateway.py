"""The aider recipe of docs/agent.md: aider (PyPI aider-chat) reaches the LLM emulator through
the run's model gateway, with the gateway's environment only, and its edit lands.

aider is large (some 700 MB with its dependencies) and not a dependency of the project: the
test runs where it is installed (``aider`` on PATH, or ``ORCHESTRATOR_TEST_AIDER`` naming the
executable, e.g. from ``python3 -m venv /tmp/aider && /tmp/aider/bin/pip install
aider-chat``) and is skipped elsewhere. It runs aider as a host process (the host-folder
sandbox): what it checks is aider against the gateway; the container's isolation is checked
with the SDK agent in test_gateway_docker.py.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from runner.agent.base import Task
from runner.agent.command import CommandAgent
from runner.config import AgentConfig
from runner.model import Budget
from runner.testing.llm import LLMEmulator, Reply, Request
from tests.unit.agent.hostsandbox import HostSandbox
from tests.unit.agent.project import BUGGY, FIXED, write_project

AIDER = os.environ.get("ORCHESTRATOR_TEST_AIDER") or shutil.which("aider")
KEY_ENV = "ORCH_TEST_AIDER_KEY"
# The recipe's command (docs/agent.md), with the file to edit named.
COMMAND = ("{aider} --yes-always --no-git --no-check-update --no-show-release-notes "
           "--no-analytics --no-show-model-warnings --edit-format diff "
           "--model anthropic/claude-sonnet-4-6 --message-file {{prompt_file}} calc.py")
EDIT = (f"I'll fix add().\n\ncalc.py\n```python\n<<<<<<< SEARCH\n{BUGGY}=======\n{FIXED}"
        ">>>>>>> REPLACE\n```\n")


@pytest.mark.skipif(AIDER is None, reason="aider is not installed (see the module docstring)")
def test_aider_fixes_the_bug_through_the_gateway(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write_project(project)
    asked: list[Request] = []

    def policy(request: Request) -> Reply:
        asked.append(request)
        return Reply.text(EDIT)

    box = HostSandbox(project, run_id=uuid.uuid4().hex[:8], channel_dir=tmp_path / "channel")
    seen: list[tuple[str, dict[str, Any]]] = []
    with LLMEmulator(policy=policy) as llm:
        config = AgentConfig(kind="command", command=COMMAND.format(aider=AIDER),
                             base_url=llm.base_url, api_key_env=KEY_ENV)
        outcome = CommandAgent(config, timeout=300, environ={KEY_ENV: llm.api_key}).run(
            Task(title="add() is broken", body="test_calc fails; fix add()."), box,
            Budget(max_turns=10, max_tokens=1_000_000, max_cost_usd=5.0), threading.Event(),
            lambda kind, data: seen.append((kind, data)))
        key = llm.api_key
    assert outcome.stop_reason == "done", outcome.error
    assert (project / "calc.py").read_text().count(FIXED) == 1
    assert asked and "add() is broken" in str(asked[0].messages)
    turns = [d for k, d in seen if k == "agent.turn"]
    assert len(turns) == outcome.turns >= 1
    assert turns[0]["stream"] and turns[0]["tokens_in"] > 0 and turns[0]["cost_usd"] > 0
    assert key not in repr(seen) and all(key not in str(r.headers) for r in asked)
