"""The model provider out of service, and a kill during a model call, for both callers of the
model: the agent's loop and the AI reviewer. Real anthropic SDK over HTTP to the emulator.

An outage (529/429/5xx, or nothing listening) is a wait bounded by time: each wait is
reported (``model_unavailable``), and past the bound the call fails saying what the provider
answered and for how long. A cancel ends a wait or a slow reply at once."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runner import review
from runner.agent.base import Task
from runner.agent.claude import ClaudeAgent
from runner.config import AgentConfig
from runner.model import Budget
from runner.provider import Backoff, OutageWait
from runner.testing.llm import LLMEmulator, Reply, by_system
from tests.unit.agent.hostsandbox import HostSandbox
from tests.unit.agent.project import TEST_COMMAND, fixing_script, write_project

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

KEY_ENV = "ORCH_TEST_ANTHROPIC_KEY"
TASK = Task(title="add() is broken", body="test_calc fails; fix add().", repo="acme/calc",
            issue=1)
ROOMY = Budget(max_turns=50, max_tokens=10_000_000, max_cost_usd=100.0)
OUTAGE_S = 3.0
BOUND_S = 20.0
APPROVE = {"verdict": "approve", "confidence": 0.95, "summary": "Correct.", "findings": []}
INPUT = review.ReviewInput(issue_title="Sum to n", issue_body="sum_to(n) must include n",
                           diff="--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n+x\n")


def fast(timeout: float) -> Backoff:
    """The real backoff, shrunk: waits of 0.05 s doubling to 0.5 s, for ``timeout`` s."""
    return Backoff(timeout=timeout, base=0.05, cap=0.5)


def run_agent(llm: LLMEmulator, tmp_path: Path, backoff: Backoff,
              cancel: threading.Event | None = None
              ) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    agent = ClaudeAgent(AgentConfig(base_url=llm.base_url, api_key_env=KEY_ENV),
                        environ={KEY_ENV: llm.api_key}, backoff=backoff)
    box = HostSandbox(write_project(tmp_path))
    outcome = agent.run(TASK, box, ROOMY, cancel or threading.Event(),
                        lambda kind, data: events.append((kind, data)))
    if outcome.stop_reason == "done":
        assert box.exec(TEST_COMMAND).ok  # the work was done, not just the run ended
    return outcome, events


def waits_of(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [data for kind, data in events if kind == "model_unavailable"]


def reviewer(reply: Reply) -> LLMEmulator:
    return LLMEmulator(policy=by_system({review.REVIEWER_MARKER: lambda _req: reply}))


# ---------------------------------------------------------------- the agent


def test_the_agent_waits_out_a_short_outage_and_finishes(tmp_path: Path) -> None:
    with LLMEmulator(policy=fixing_script()) as llm:
        llm.fail_for(OUTAGE_S, 529)
        outcome, events = run_agent(llm, tmp_path, fast(BOUND_S))
        refused = llm.refused()
    assert outcome.stop_reason == "done", outcome.error
    waits = waits_of(events)
    assert refused >= 3 and len(waits) == refused  # every refusal was one reported wait
    assert {w["status"] for w in waits} == {529} and {w["who"] for w in waits} == {"agent"}
    assert all(w["timeout_s"] == BOUND_S for w in waits)
    # One outage, measured from its first refusal: the elapsed time grows to about 3 s.
    elapsed = [w["elapsed_s"] for w in waits]
    assert elapsed == sorted(elapsed) and OUTAGE_S - 1 < elapsed[-1] < BOUND_S


def test_the_agent_fails_saying_why_when_the_outage_outlasts_the_bound(tmp_path: Path) -> None:
    with LLMEmulator(policy=fixing_script()) as llm:
        llm.fail_for(60, 529)
        outcome, events = run_agent(llm, tmp_path, fast(1.5))
    assert outcome.stop_reason == "error"
    assert re.match(r"the model provider answered 529 for \d+ s", outcome.error), outcome.error
    assert "overloaded_error" in outcome.error and "try again later" in outcome.error
    assert waits_of(events) and outcome.turns == 0
    stop = next(data for kind, data in events if kind == "agent.stop")
    assert stop["error"] == outcome.error  # the audit log says it too


def test_a_cancel_ends_the_agents_wait_in_an_outage(tmp_path: Path) -> None:
    with LLMEmulator(policy=fixing_script()) as llm:
        llm.fail_for(600, 429, retry_after=300)  # the server asks for a 5-minute pause
        cancel = threading.Event()
        threading.Timer(0.5, cancel.set).start()
        began = time.monotonic()
        outcome, events = run_agent(llm, tmp_path, Backoff(timeout=900, cap=300),
                                    cancel=cancel)
    assert outcome.stop_reason == "cancelled"
    assert time.monotonic() - began < 10
    assert waits_of(events)[0]["wait_s"] == 300.0


# ---------------------------------------------------------------- the reviewer


def test_a_review_waits_out_a_short_outage(tmp_path: Path) -> None:
    seen: list[OutageWait] = []
    with reviewer(Reply.text(json.dumps(APPROVE))) as llm:
        llm.fail_for(OUTAGE_S, 529)
        endpoint = review.make_client(api_key=llm.api_key, base_url=llm.base_url,
                                      outage_timeout=BOUND_S, backoff_base=0.05,
                                      backoff_cap=0.5)
        rv = review.review(INPUT, client=endpoint, model="m", on_wait=seen.append)
        refused = llm.refused()
    assert rv.approved
    assert refused >= 3 and len(seen) == refused
    assert {w.status for w in seen} == {529}
    assert OUTAGE_S - 1 < seen[-1].elapsed_s < BOUND_S
    assert seen[0].as_event()["timeout_s"] == BOUND_S


def test_a_review_fails_saying_why_when_the_outage_outlasts_the_bound() -> None:
    seen: list[OutageWait] = []
    with reviewer(Reply.text(json.dumps(APPROVE))) as llm:
        llm.fail_for(60, 529)
        endpoint = review.make_client(api_key=llm.api_key, base_url=llm.base_url,
                                      outage_timeout=1.0, backoff_base=0.05,
                                      backoff_cap=0.5)
        with pytest.raises(review.Unavailable,
                           match=r"answered 529 for 1 s .*try again later"):
            review.review(INPUT, client=endpoint, model="m", on_wait=seen.append)
    assert len(seen) >= 2


def test_a_review_of_an_unreachable_provider_fails_naming_it() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    endpoint = review.make_client(api_key="sk-x", base_url=url, outage_timeout=0.5,
                                  backoff_base=0.05, backoff_cap=0.2)
    with pytest.raises(review.Unavailable, match=rf"at {url} could not be reached"):
        review.review(INPUT, client=endpoint, model="m")


def test_a_cancel_stops_a_slow_review_at_once() -> None:
    with reviewer(Reply.text(json.dumps(APPROVE), delay=40)) as llm:
        endpoint = review.make_client(api_key=llm.api_key, base_url=llm.base_url)
        cancel = threading.Event()
        threading.Timer(0.5, cancel.set).start()
        began = time.monotonic()
        with pytest.raises(review.Interrupted):
            review.review(INPUT, client=endpoint, model="m", cancel=cancel)
        took = time.monotonic() - began
        # The connection was closed: the emulator saw the client hang up mid-wait.
        deadline = time.monotonic() + 5
        while not llm.exchanges[0].aborted and time.monotonic() < deadline:
            time.sleep(0.02)
    assert took < 5, f"the review was not interrupted ({took:.1f}s)"
    assert llm.exchanges[0].aborted
    assert issubclass(review.Interrupted, review.ReviewError)
