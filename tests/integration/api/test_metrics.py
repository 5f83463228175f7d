"""``/metrics`` after real runs (forge and LLM emulators, real Docker): one run that
ends green, one killed through the API. The exposition text is parsed line by line and the
histograms must be present, well formed, and hold the two runs' observations."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from runner.model import RunState
from runner.testing.demo import DemoWorld, fixing_agent, slow_agent
from runner.testing.llm import Reply, Request

pytestmark = [pytest.mark.docker, pytest.mark.slow]
FIX, SLOW = fixing_agent(), slow_agent(60)

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
                    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*)?\})? '
                    r'(-?[0-9.eE+-]+|\+Inf|-Inf|NaN)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """(metric name -> type, sample name -> [(labels, value)]); fails on any bad line."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}, line
            types[name] = kind
            continue
        if line.startswith("#"):
            assert line.startswith("# HELP "), line
            continue
        match = SAMPLE.match(line)
        assert match, f"not an exposition line: {line!r}"
        labels = dict(LABEL.findall(match.group(2) or ""))
        samples.setdefault(match.group(1), []).append((labels, float(match.group(3))))
    return types, samples


def histogram(types: dict[str, str], samples: Samples, name: str) -> tuple[int, float]:
    """A histogram's (count, sum), after checking its buckets are cumulative."""
    assert types.get(name) == "histogram", f"{name} missing"
    buckets = samples[f"{name}_bucket"]
    bounds = [float(b["le"]) for b, _ in buckets]
    counts = [v for _, v in buckets]
    assert bounds == sorted(bounds) and bounds[-1] == float("inf")
    assert counts == sorted(counts), "buckets are not cumulative"
    count = samples[f"{name}_count"][0][1]
    assert counts[-1] == count
    return int(count), samples[f"{name}_sum"][0][1]


def agent(request: Request) -> Reply:
    """Fix the bug for ordinary issues; work slowly (to be killed) on the 'slow' one."""
    return (SLOW if "SLOW" in request.first_user_text() else FIX)(request)


def test_metrics_after_a_green_run_and_a_kill(tmp_path: Path, sandbox_image: str) -> None:
    with DemoWorld(tmp_path, agent=agent) as world:
        assert world.server is not None
        green = world.open_issue()
        finished = world.wait_finished(green, timeout=90)
        assert finished.state is RunState.SUCCEEDED, (finished.state, finished.reason)
        slow = world.open_issue("SLOW: take your time", "SLOW work")
        run = world.wait_for(lambda: next((e for e in world.store.events(
            r.id, limit=1000) if e.kind == "agent.turn"), None) if (r := world.run_for(slow))
            else None, 60, "the slow agent's first turn")
        token = world.env["DEMO_API_TOKEN"]
        with httpx.Client(base_url=world.server.url, timeout=10,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            assert client.post(f"/api/runs/{run.run_id}/kill",
                               json={"reason": "metrics test"}).status_code == 202
            assert world.wait_finished(slow, timeout=60).state is RunState.CANCELLED
            assert httpx.get(f"{world.server.url}/metrics").status_code == 401
            reply = client.get("/metrics")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
        types, samples = parse(reply.text)

    dispatch_count, dispatch_sum = histogram(types, samples,
                                             "orchestrator_dispatch_latency_seconds")
    assert dispatch_count == 2 and 0 < dispatch_sum < 60
    kill_count, kill_sum = histogram(types, samples, "orchestrator_kill_latency_seconds")
    assert kill_count == 1 and 0 < kill_sum < 30
    runs = {labels["state"]: value for labels, value in samples["orchestrator_runs"]}
    assert runs["succeeded"] == 1 and runs["cancelled"] == 1 and runs["running"] == 0
    webhooks = {labels["result"]: value
                for labels, value in samples["orchestrator_webhook_deliveries_total"]}
    assert webhooks.get("accepted", 0) >= 2
    tokens = {labels["kind"]: value for labels, value in samples["orchestrator_tokens_total"]}
    assert tokens["output"] > 0
    assert samples["orchestrator_cost_usd_total"][0][1] > 0
    gates = {(labels["stage"], labels["outcome"])
             for labels, _ in samples["orchestrator_gate_results_total"]}
    assert ("ci", "success") in gates
