"""bench gateway: what the model gateway costs a command agent, and how fast a kill cuts it.

Two figures, on the real Docker sandbox with the anthropic-SDK agent image
(tests/integration/agent/sdk_image.py) and the LLM emulator:

- ``request_overhead_p50_s``: a Messages API request from the host through a gateway (unix
  socket, metering, forwarding) minus the same request straight to the emulator, paired and
  interleaved;
- ``kill_p50_s`` / ``kill_max_s``: a command agent waiting on a model reply that would take two
  minutes is cancelled; seconds from the cancel to the agent's outcome (the model call cut,
  the agent stopped).

Usage: ``scripts/bench gateway [--samples N]``.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import httpx

from runner.agent.base import Task
from runner.agent.command import CommandAgent
from runner.agent.gateway import Gateway, Upstream
from runner.agent.meter import Meter
from runner.config import AgentConfig
from runner.model import Budget
from runner.sandbox.base import SandboxSpec
from runner.sandbox.docker import DockerBackend
from runner.testing.llm import LLMEmulator, Reply
from tests.bench.common import median, percentile, report
from tests.integration.agent.sdk_image import AGENT, sdk_image
from tests.unit.agent.project import project_worktree

BUDGET = Budget(max_turns=1000, max_tokens=10**9, max_cost_usd=1000.0)
REQUEST = {"model": "claude-sonnet-4-6", "max_tokens": 100,
           "messages": [{"role": "user", "content": "hi"}]}


def overhead(samples: int) -> list[float]:
    """Per request: through the gateway minus direct, paired."""
    out: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp, \
            LLMEmulator(script=[Reply.text("hello")] * (2 * samples + 2)) as llm:
        gw = Gateway(Upstream("anthropic", llm.base_url, llm.api_key),
                     Meter(BUDGET, AgentConfig().prices, lambda kind, data: None),
                     lambda kind, data: None)
        path = gw.start(Path(tmp))
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as via, \
                    httpx.Client() as direct:
                for _ in range(samples):
                    t0 = time.perf_counter()
                    direct.post(f"{llm.base_url}/v1/messages", json=REQUEST,
                                headers={"x-api-key": llm.api_key}).raise_for_status()
                    t1 = time.perf_counter()
                    via.post("http://gateway/v1/messages", json=REQUEST,
                             headers={"x-api-key": gw.token}).raise_for_status()
                    t2 = time.perf_counter()
                    out.append((t2 - t1) - (t1 - t0))
        finally:
            gw.close()
    return out


def kills(samples: int) -> list[float]:
    """Seconds from a cancel to the outcome of an agent waiting on a slow model."""
    client = docker.from_env(timeout=60)
    image = sdk_image(client)
    out: list[float] = []
    for i in range(samples):
        out.append(one_kill(client, image))
        print(f"  kill {i + 1}/{samples}: {out[-1]:.3f}s")
    return out


def one_kill(client: Any, image: str) -> float:
    """One sandbox, one agent, one cancel during its model call; the seconds it took."""
    with tempfile.TemporaryDirectory(prefix="bench-gw-kill-") as tmp:
        backend = DockerBackend(client, state_dir=Path(tmp) / "state", image=image)
        box = backend.start(SandboxSpec(
            run_id=f"r-bg{uuid.uuid4().hex[:8]}", repo="bench/gateway", issue=1,
            worktree=project_worktree(Path(tmp)), image=image, gateway=True))
        try:
            with LLMEmulator(script=[Reply.text("slow", delay=120)]) as llm:
                config = AgentConfig(kind="command", command=AGENT, base_url=llm.base_url,
                                     api_key_env="BENCH_KEY")
                agent = CommandAgent(config, timeout=300, environ={"BENCH_KEY": llm.api_key})
                cancel = threading.Event()
                result: dict[str, Any] = {}
                worker = threading.Thread(target=lambda: result.update(outcome=agent.run(
                    Task(title="t", body="b"), box, BUDGET, cancel, lambda kind, data: None)))
                worker.start()
                deadline = time.monotonic() + 60
                while not llm.exchanges:
                    if time.monotonic() > deadline:
                        raise SystemExit("the agent never called the model")
                    time.sleep(0.01)
                t0 = time.perf_counter()
                cancel.set()
                worker.join(60)
                took = time.perf_counter() - t0
                if result["outcome"].stop_reason != "cancelled":
                    raise SystemExit(f"not cancelled: {result['outcome']}")
                return took
        finally:
            box.remove()


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench gateway")
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    extra = overhead(max(args.samples * 5, 20))
    cut = kills(args.samples)
    report("gateway", len(cut), {
        "request_overhead_p50_s": round(median(extra), 4),
        "request_overhead_p95_s": round(percentile(extra, 95), 4),
        "kill_p50_s": round(median(cut), 4),
        "kill_p95_s": round(percentile(cut, 95), 4),
        "kill_max_s": round(max(cut), 4),
    }, title="bench gateway: request overhead and kill of a command agent")


if __name__ == "__main__":
    main()
