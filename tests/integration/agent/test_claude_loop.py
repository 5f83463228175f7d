"""The built-in agent's loop: real anthropic SDK, real HTTP to the emulator, real processes.

The sandbox here is a host folder (tests/unit/agent/hostsandbox.py); the same loop against the
real Docker sandbox is in test_claude_docker.py.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.agent.base import AgentError, Outcome, Task
from runner.agent.claude import ClaudeAgent
from runner.config import AgentConfig
from runner.model import Budget
from runner.provider import Backoff
from runner.testing.llm import LLMEmulator, Policy, Reply, Request, Script
from tests.unit.agent.hostsandbox import HostSandbox
from tests.unit.agent.project import TEST_COMMAND, fixing_script, write_project

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

KEY_ENV = "ORCH_TEST_ANTHROPIC_KEY"
TASK = Task(title="add() is broken", body="test_calc fails; fix add().", repo="acme/calc",
            issue=1)
ROOMY = Budget(max_turns=50, max_tokens=10_000_000, max_cost_usd=100.0)
QUICK = Backoff(timeout=20.0, base=0.05, cap=2.0)  # waits of tests: short, but bounded


class Recorder:
    """Collects audit events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data in self.events if k == kind]


def agent_for(llm: LLMEmulator, **kwargs: Any) -> ClaudeAgent:
    config = AgentConfig(base_url=llm.base_url, api_key_env=KEY_ENV)
    return ClaudeAgent(config, environ={KEY_ENV: llm.api_key}, **kwargs)


def run(llm: LLMEmulator, box: HostSandbox, budget: Budget = ROOMY,
        cancel: threading.Event | None = None, **kwargs: Any) -> tuple[Outcome, Recorder]:
    recorder = Recorder()
    outcome = agent_for(llm, **kwargs).run(TASK, box, budget, cancel or threading.Event(),
                                           recorder)
    return outcome, recorder


def busy() -> Policy:
    """A model that never finishes: it keeps listing files."""
    return lambda request: Reply.bash("ls -la", "Still looking.")


@pytest.fixture
def box(tmp_path: Path) -> HostSandbox:
    return HostSandbox(write_project(tmp_path))


@pytest.fixture
def llm() -> Iterator[LLMEmulator]:
    with LLMEmulator(policy=fixing_script()) as emulator:
        yield emulator


def test_agent_fixes_the_failing_test(llm: LLMEmulator, box: HostSandbox) -> None:
    assert not box.exec(TEST_COMMAND).ok
    outcome, events = run(llm, box)
    assert outcome.stop_reason == "done", outcome.error
    assert "passes now" in outcome.summary
    assert box.exec(TEST_COMMAND).ok
    assert outcome.turns == 5
    assert [e["tool"] for e in events.kinds("agent.tool")] == \
        ["bash", "editor", "editor", "bash", "finish"]
    assert len(events.kinds("agent.turn")) == 5
    assert outcome.usage.tokens_out > 0 and outcome.usage.cost_usd > 0
    assert outcome.usage.cache_read > 0


def test_the_cache_breakpoint_moves_and_each_turn_reads_the_last_prefix(
        llm: LLMEmulator, box: HostSandbox) -> None:
    run(llm, box)
    usages = [e.usage for e in llm.exchanges]
    for before, after in itertools.pairwise(usages):
        prompt_before = sum(before[k] for k in ("input_tokens", "cache_read_input_tokens",
                                                "cache_creation_input_tokens"))
        # Everything the previous request sent is read from the cache this time.
        assert after["cache_read_input_tokens"] >= prompt_before
        assert after["input_tokens"] == 0
    for exchange in llm.exchanges:  # tools, system and one moving breakpoint: never more
        marks = json.dumps(exchange.request.body).count('"cache_control"')
        assert marks == 3


def test_task_reaches_the_model_with_the_system_prompt(llm: LLMEmulator,
                                                       box: HostSandbox) -> None:
    run(llm, box)
    first = llm.exchanges[0].request
    assert "add() is broken" in first.first_user_text()
    assert "/workspace" in first.system
    assert first.tools == ["bash", "editor", "finish"]


def test_turn_cap_stops_with_max_turns(box: HostSandbox) -> None:
    with LLMEmulator(policy=busy()) as llm:
        outcome, events = run(llm, box, Budget(max_turns=3, max_tokens=10_000_000,
                                               max_cost_usd=100.0))
        assert len(llm.exchanges) == 3
    assert outcome.stop_reason == "max_turns"
    assert outcome.turns == 3
    assert "agent.max_turns" in outcome.error
    assert events.kinds("agent.stop")[0]["reason"] == "max_turns"


def test_token_cap_stops_with_budget_after_a_warning(box: HostSandbox) -> None:
    with LLMEmulator(policy=busy()) as llm:
        outcome, events = run(llm, box, Budget(max_turns=100, max_tokens=20_000,
                                               max_cost_usd=100.0))
    assert outcome.stop_reason == "budget"
    assert outcome.usage.tokens >= 20_000
    assert "tokens" in outcome.error
    warnings = events.kinds("agent.budget_warning")
    assert len(warnings) == 1 and warnings[0]["share"] >= 0.9
    kinds = [k for k, _ in events.events]
    assert kinds.index("agent.budget_warning") < kinds.index("agent.stop")


def test_cost_cap_stops_with_budget(box: HostSandbox) -> None:
    with LLMEmulator(policy=busy()) as llm:
        outcome, _ = run(llm, box, Budget(max_turns=100, max_tokens=10_000_000,
                                          max_cost_usd=0.02))
    assert outcome.stop_reason == "budget"
    assert outcome.usage.cost_usd >= 0.02
    assert "$" in outcome.error and "agent.max_cost_usd" in outcome.error


def test_a_full_context_window_stops_with_budget(box: HostSandbox) -> None:
    with LLMEmulator(policy=lambda r: Reply.bash("seq 1 3000")) as llm:
        config = AgentConfig(base_url=llm.base_url, api_key_env=KEY_ENV, context_window=30_000)
        agent = ClaudeAgent(config, environ={KEY_ENV: llm.api_key}, max_output_tokens=4096)
        outcome = agent.run(TASK, box, ROOMY, threading.Event(), Recorder())
    assert outcome.stop_reason == "budget"
    assert "agent.context_window" in outcome.error
    assert 1 < outcome.turns < 50


def test_warning_at_90_percent_of_turns_then_done(box: HostSandbox) -> None:
    script = Script([Reply.bash("true")] * 9 + [Reply.finish("done in ten")])
    with LLMEmulator(policy=script) as llm:
        outcome, events = run(llm, box, Budget(max_turns=10, max_tokens=10_000_000,
                                               max_cost_usd=100.0))
    assert outcome.stop_reason == "done" and outcome.summary == "done in ten"
    assert [w["turns"] for w in events.kinds("agent.budget_warning")] == [9]


def test_cancel_during_a_slow_reply_returns_within_a_second(box: HostSandbox) -> None:
    with LLMEmulator(policy=lambda r: Reply.text("too late", delay=60)) as llm:
        cancel = threading.Event()
        result: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: result.update(
            outcome=run(llm, box, cancel=cancel)[0], at=time.monotonic()))
        worker.start()
        deadline = time.monotonic() + 10
        while not llm.exchanges and time.monotonic() < deadline:
            time.sleep(0.02)
        assert llm.exchanges, "the request never reached the emulator"
        time.sleep(0.2)  # the request is now in flight, the reply 60 s away
        cancelled_at = time.monotonic()
        cancel.set()
        worker.join(10)
        assert not worker.is_alive()
        assert result["outcome"].stop_reason == "cancelled"
        assert result["at"] - cancelled_at < 1.0
        # The request was aborted, not left running: the emulator saw the client hang up.
        deadline = time.monotonic() + 5
        while not llm.exchanges[0].aborted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert llm.exchanges[0].aborted


def test_cancel_before_start_makes_no_request(box: HostSandbox, llm: LLMEmulator) -> None:
    cancel = threading.Event()
    cancel.set()
    outcome, _ = run(llm, box, cancel=cancel)
    assert outcome.stop_reason == "cancelled"
    assert not llm.exchanges


def test_429_529_and_500_are_retried_honouring_retry_after(llm: LLMEmulator,
                                                           box: HostSandbox) -> None:
    llm.fail(429, retry_after=1)
    llm.fail(529)
    llm.fail(500)
    outcome, events = run(llm, box, backoff=QUICK)
    assert outcome.stop_reason == "done", outcome.error
    waits = events.kinds("model_unavailable")
    assert [w["status"] for w in waits] == [429, 529, 500]
    assert [w["reason"].split()[0] for w in waits] == ["429", "529", "500"]
    assert waits[0]["wait_s"] == 1.0  # the server's retry-after, not our backoff
    assert waits[1]["elapsed_s"] >= 1.0  # one outage, counted from its first refusal
    assert box.exec(TEST_COMMAND).ok


def test_an_outage_is_waited_out_for_a_bounded_time(llm: LLMEmulator,
                                                    box: HostSandbox) -> None:
    llm.fail_for(60, 529)
    outcome, events = run(llm, box, backoff=Backoff(timeout=1.0, base=0.05, cap=0.2))
    assert outcome.stop_reason == "error"
    assert "answered 529 for 1 s" in outcome.error and "try again later" in outcome.error
    waits = events.kinds("model_unavailable")
    assert len(waits) >= 3 and len(llm.exchanges) == len(waits) + 1
    # Every wait began inside the bound (their clocks are read at different moments, so only
    # the start is compared; the error above says the bound ended it).
    assert all(w["elapsed_s"] < 1.0 for w in waits)


def test_400_fails_at_once_with_a_message(llm: LLMEmulator, box: HostSandbox) -> None:
    llm.fail(400, message="max_tokens: too large for this model")
    outcome, _ = run(llm, box)
    assert outcome.stop_reason == "error"
    assert "400" in outcome.error and "max_tokens: too large" in outcome.error
    assert "agent.model" in outcome.error
    assert len(llm.exchanges) == 1


def test_401_names_the_env_var_and_not_the_key(box: HostSandbox) -> None:
    with LLMEmulator(policy=fixing_script(), api_key="sk-the-right-one") as llm:
        config = AgentConfig(base_url=llm.base_url, api_key_env=KEY_ENV)
        agent = ClaudeAgent(config, environ={KEY_ENV: "sk-wrong-key-12345"})
        recorder = Recorder()
        outcome = agent.run(TASK, box, ROOMY, threading.Event(), recorder)
    assert outcome.stop_reason == "error"
    assert "401" in outcome.error and KEY_ENV in outcome.error
    assert "sk-wrong-key-12345" not in outcome.error + json.dumps(recorder.events)


def test_missing_key_names_the_env_var(box: HostSandbox, llm: LLMEmulator) -> None:
    config = AgentConfig(base_url=llm.base_url, api_key_env=KEY_ENV)
    outcome = ClaudeAgent(config, environ={}).run(TASK, box, ROOMY, threading.Event(),
                                                  Recorder())
    assert outcome.stop_reason == "error" and KEY_ENV in outcome.error
    assert not llm.exchanges


def test_model_without_a_price_is_refused_up_front() -> None:
    with pytest.raises(AgentError, match=r"agent.prices.*my-model"):
        ClaudeAgent(AgentConfig(model="my-model"))


def test_the_key_is_in_no_event_and_no_tool_output(llm: LLMEmulator, box: HostSandbox) -> None:
    outcome, events = run(llm, box)
    blob = json.dumps(events.events) + outcome.summary + outcome.error
    assert llm.api_key not in blob
    assert llm.api_key not in box.exec("env").output


def test_a_reply_without_tools_ends_the_run_as_done(box: HostSandbox) -> None:
    with LLMEmulator(script=[Reply.text("Nothing to change: it already works.")]) as llm:
        outcome, _ = run(llm, box)
    assert outcome.stop_reason == "done"
    assert outcome.summary == "Nothing to change: it already works."


def test_a_reply_cut_at_max_tokens_asks_for_smaller_steps(box: HostSandbox) -> None:
    def policy(request: Request) -> Reply:
        if request.turn == 0:
            return Reply.text("a very long essay " * 400)
        assert "cut off" in json.dumps(request.messages[-1])
        return Reply.finish("ok")

    with LLMEmulator(policy=policy) as llm:
        outcome, _ = run(llm, box, max_output_tokens=100)
    assert outcome.stop_reason == "done" and outcome.summary == "ok"


def test_unknown_tool_is_reported_to_the_model(box: HostSandbox) -> None:
    def policy(request: Request) -> Reply:
        if request.turn == 0:
            return Reply.tool("rm_everything")
        return Reply.finish(request.last_tool_output())

    with LLMEmulator(policy=policy) as llm:
        outcome, _ = run(llm, box)
    assert "there is no tool 'rm_everything'" in outcome.summary


def test_the_configured_output_limit_and_retries_reach_the_model(box: HostSandbox,
                                                                 monkeypatch) -> None:
    from runner.agent import make_agent
    from runner.config import Settings

    seen: list[int] = []

    def policy(request: Request) -> Reply:
        seen.append(int(request.body["max_tokens"]))
        return Reply.finish("ok")

    with LLMEmulator(policy=policy) as llm:
        monkeypatch.setenv(KEY_ENV, llm.api_key)
        settings = Settings.model_validate({"agent": {
            "base_url": llm.base_url, "api_key_env": KEY_ENV, "max_output_tokens": 1234,
            "outage_timeout": "1s"}})
        agent = make_agent(settings)
        assert isinstance(agent, ClaudeAgent)
        assert agent.backoff.timeout == 1.0
        agent.backoff = Backoff(agent.backoff.timeout, base=0.01, cap=0.1)
        llm.fail(529, times=1)  # a short outage: the request goes through
        outcome = agent.run(TASK, box, ROOMY, threading.Event(), Recorder())
        assert outcome.stop_reason == "done", outcome.error
        assert seen == [1234]
        llm.fail_for(30, 529)  # longer than the configured second
        outcome = agent.run(TASK, box, ROOMY, threading.Event(), Recorder())
    assert outcome.stop_reason == "error"
    assert "529" in outcome.error and "try again later" in outcome.error
