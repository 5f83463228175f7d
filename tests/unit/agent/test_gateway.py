"""The model gateway of command agents, on a host-folder sandbox against the LLM emulator.

A real agent (the anthropic SDK, streaming) talks HTTP to the forwarder, which pipes to the
gateway's unix socket, which forwards to the emulator with the key. The Docker versions
(isolation, gVisor) are in tests/integration/agent/test_gateway_docker.py.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.agent.base import Task
from runner.agent.command import CommandAgent
from runner.agent.gateway import Gateway, Upstream
from runner.agent.meter import Meter, ReplyReader
from runner.config import AgentConfig, Price
from runner.model import Budget
from runner.testing.llm import LLMEmulator, Reply
from tests.unit.agent.hostsandbox import HostSandbox
from tests.unit.agent.project import TEST_COMMAND, fixing_script, write_project

SDK_AGENT = Path(__file__).with_name("sdk_agent.py")
KEY_ENV = "ORCH_TEST_GATEWAY_KEY"
TASK = Task(title="add() is broken", body="test_calc fails; fix add().", repo="acme/calc",
            issue=1)
BUDGET = Budget(max_turns=20, max_tokens=1_000_000, max_cost_usd=10.0)
Events = list[tuple[str, dict[str, Any]]]


def run_agent(tmp_path: Path, llm: LLMEmulator, budget: Budget = BUDGET,
              cancel: threading.Event | None = None) -> tuple[Any, Events]:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    write_project(project)
    box = HostSandbox(project, run_id=uuid.uuid4().hex[:8], channel_dir=tmp_path / "channel")
    config = AgentConfig(kind="command", base_url=llm.base_url, api_key_env=KEY_ENV,
                         command=f"{sys.executable} {SDK_AGENT} {{prompt_file}}")
    seen: Events = []
    agent = CommandAgent(config, timeout=120, environ={KEY_ENV: llm.api_key})
    outcome = agent.run(TASK, box, budget, cancel or threading.Event(),
                        lambda kind, data: seen.append((kind, data)))
    return outcome, seen


@pytest.mark.slow  # a whole agent process through the gateway: not in the fast tier
def test_an_sdk_agent_fixes_the_bug_through_the_metered_gateway(tmp_path: Path) -> None:
    with LLMEmulator(policy=fixing_script()) as llm:
        outcome, seen = run_agent(tmp_path, llm)
        totals = llm.usage_totals()
        exchanges = list(llm.exchanges)
    assert outcome.stop_reason == "done", outcome.error
    assert "FINISHED: add() subtracted" in outcome.summary
    assert "[exit code 0]" in exchanges[-1].request.last_tool_output()
    assert all(e.stream for e in exchanges)  # the SDK streamed; the gateway metered streams
    # Every model turn is audited with the provider's own usage and its cost.
    turns = [d for k, d in seen if k == "agent.turn"]
    assert len(turns) == outcome.turns == len(exchanges) == 5
    assert sum(t["tokens_in"] for t in turns) == totals["input_tokens"]
    assert sum(t["tokens_out"] for t in turns) == totals["output_tokens"]
    assert outcome.usage.tokens == sum(totals.values()) > 0
    assert outcome.usage.cost_usd > 0 and turns[-1]["total_cost_usd"] == pytest.approx(
        outcome.usage.cost_usd, abs=1e-6)
    assert [t["tools"] for t in turns] == [["bash"], ["editor"], ["editor"], ["bash"],
                                           ["finish"]]
    # The key never reached the agent, whose requests carried the per-run credential.
    assert all(llm.api_key not in str(e.request.headers) for e in exchanges)
    assert llm.api_key not in repr(seen)
    assert (tmp_path / "project" / "calc.py").read_text().count("a + b") == 1
    assert not list((tmp_path / "channel").iterdir())  # the socket went with the run


@pytest.mark.slow  # a whole agent process through the gateway: not in the fast tier
def test_overspending_stops_the_run_with_reason_budget(tmp_path: Path) -> None:
    # Each turn costs about $0.01 at these prices; the cap allows two.
    budget = Budget(max_turns=20, max_tokens=1_000_000, max_cost_usd=0.0001)
    with LLMEmulator(policy=fixing_script()) as llm:
        outcome, seen = run_agent(tmp_path, llm, budget)
        answered = len(llm.exchanges)
    assert outcome.stop_reason == "budget", outcome
    assert "budget is spent" in outcome.error and "agent.max_cost_usd" in outcome.error
    turns = [d for k, d in seen if k == "agent.turn"]
    assert answered == len(turns) == outcome.turns == 1  # the second request never left
    assert turns[0]["cost_usd"] > budget.max_cost_usd and turns[0]["tokens_in"] > 0
    refused = [d for k, d in seen if k == "agent.gateway"]
    assert refused and refused[0]["refused"] == "budget"
    # The agent saw the refusal as an API error with the gateway's message.
    output = "".join(d["text"] for k, d in seen if k == "agent.output")
    assert "budget is spent" in output
    assert seen[-1][0] == "agent.stop" and seen[-1][1]["reason"] == "budget"


@pytest.mark.slow  # a whole agent process through the gateway: not in the fast tier
def test_the_turn_cap_stops_the_run_with_reason_max_turns(tmp_path: Path) -> None:
    budget = Budget(max_turns=2, max_tokens=1_000_000, max_cost_usd=10.0)
    with LLMEmulator(policy=fixing_script()) as llm:
        outcome, _ = run_agent(tmp_path, llm, budget)
    assert outcome.stop_reason == "max_turns" and outcome.turns == 2
    assert "agent.max_turns = 2" in outcome.error


@pytest.mark.slow  # a whole agent process through the gateway: not in the fast tier
def test_a_kill_during_a_slow_model_call_cuts_the_call(tmp_path: Path) -> None:
    cancel = threading.Event()
    with LLMEmulator(script=[Reply.text("slow", delay=60)]) as llm:
        result: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: result.update(
            outcome=run_agent(tmp_path, llm, cancel=cancel)[0]))
        worker.start()
        deadline = time.monotonic() + 30
        while not llm.exchanges:
            assert time.monotonic() < deadline, "the agent never called the model"
            time.sleep(0.05)
        killed = time.monotonic()
        cancel.set()
        worker.join(10)  # the reply would take a minute: the run did not wait for it
        # The gateway hung up on the provider at once: the emulator saw the client go.
        while not llm.exchanges[0].aborted and time.monotonic() < killed + 5:
            time.sleep(0.02)
        aborted = llm.exchanges[0].aborted
    assert not worker.is_alive()
    assert result["outcome"].stop_reason == "cancelled"
    assert aborted


def test_a_credential_works_only_on_its_own_run_and_only_while_it_lives(tmp_path: Path
                                                                        ) -> None:
    def gateway(name: str, llm: LLMEmulator) -> tuple[Gateway, Path]:
        directory = tmp_path / name
        directory.mkdir()
        gw = Gateway(Upstream("anthropic", llm.base_url, llm.api_key),
                     Meter(BUDGET, AgentConfig().prices, lambda kind, data: None),
                     lambda kind, data: None)
        return gw, gw.start(directory)

    def ask(path: Path, token: str) -> httpx.Response:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
            return client.post("http://gateway/v1/messages", headers={"x-api-key": token},
                               json={"model": "claude-sonnet-4-6", "max_tokens": 10,
                                     "messages": [{"role": "user", "content": "hi"}]})

    with LLMEmulator(script=[Reply.text("hello")] * 3) as llm:
        one, one_path = gateway("one", llm)
        two, two_path = gateway("two", llm)
        try:
            assert ask(one_path, one.token).status_code == 200
            refused = ask(two_path, one.token)
            assert refused.status_code == 401
            assert "not valid for this run" in refused.json()["error"]["message"]
            assert ask(one_path, llm.api_key).status_code == 401  # the real key is no pass
        finally:
            one.close()
            two.close()
        assert not one_path.exists()
        with pytest.raises(httpx.TransportError):
            ask(one_path, one.token)
        assert len(llm.exchanges) == 1


def test_the_reader_finds_usage_in_every_reply_shape() -> None:
    chat = ReplyReader("openai", streaming=True)
    for line in (b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n',
                 b'data: {"choices":[{"delta":{"tool_calls":[{"function":{"name":"sh"}}]},'
                 b'"finish_reason":"tool_calls"}]}\n\n',
                 b'data: {"choices":[],"usage":{"prompt_tokens":100,"completion_tokens":7,'
                 b'"prompt_tokens_details":{"cached_tokens":60}}}\n\ndata: [DONE]\n\n'):
        for i in range(0, len(line), 7):  # arrives in pieces that cut lines
            chat.feed(line[i:i + 7])
    reading = chat.finish()
    assert (reading.usage.tokens_in, reading.usage.cache_read, reading.usage.tokens_out) == \
        (40, 60, 7)
    assert reading.text == "Hi" and reading.tools == ["sh"] and not reading.estimated
    responses = ReplyReader("openai", streaming=True)
    responses.feed(b'event: response.completed\ndata: {"type":"response.completed","response"'
                   b':{"status":"completed","output":[{"type":"function_call","name":"shell"}],'
                   b'"usage":{"input_tokens":50,"output_tokens":5}}}\n\n')
    reading = responses.finish()
    assert reading.usage.tokens == 55 and reading.tools == ["shell"]
    cut = ReplyReader("anthropic", streaming=True)  # a stream cut before its final usage
    cut.feed(b'data: {"type":"message_start","message":{"usage":{"input_tokens":30,'
             b'"output_tokens":1}}}\n\ndata: {"type":"content_block_delta","delta":'
             b'{"type":"text_delta","text":"' + b"x" * 40 + b'"}}\n\n')
    reading = cut.finish()
    assert reading.estimated and reading.usage.tokens_in == 30 and reading.usage.tokens_out == 10


def test_a_model_without_a_price_is_refused() -> None:
    meter = Meter(BUDGET, AgentConfig().prices, lambda kind, data: None)
    refusal = meter.admit("some-unpriced-model")
    assert refusal is not None and refusal.status == 400 and "agent.prices" in refusal.message
    assert meter.stop_reason is None


def test_without_a_key_the_command_agent_says_which_variable(tmp_path: Path) -> None:
    box = HostSandbox(tmp_path, channel_dir=tmp_path / "channel")
    agent = CommandAgent(AgentConfig(kind="command", command="true", api_key_env=KEY_ENV),
                         environ={})
    outcome = agent.run(TASK, box, BUDGET, threading.Event(), lambda kind, data: None)
    assert outcome.stop_reason == "error" and KEY_ENV in outcome.error
    assert TEST_COMMAND  # the project's test command is what the agent runs in the others


class FakeOpenAI:
    """Just enough of an OpenAI-compatible API, on loopback, to see what the gateway sends:
    chat completions (JSON or a stream whose usage comes only when asked for) and responses."""

    KEY = "sk-openai-real"

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request as HttpRequest
        from starlette.responses import JSONResponse, StreamingResponse
        from starlette.routing import Route

        self.seen: list[tuple[str, dict[str, str], dict[str, Any]]] = []

        async def chat(request: HttpRequest) -> Any:
            body = await request.json()
            self.seen.append(("chat", dict(request.headers), body))
            if request.headers.get("authorization") != f"Bearer {self.KEY}":
                return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
            usage = {"prompt_tokens": 120, "completion_tokens": 9,
                     "prompt_tokens_details": {"cached_tokens": 100}}
            if not body.get("stream"):
                return JSONResponse({"choices": [{"message": {"content": "hi"},
                                                  "finish_reason": "stop"}], "usage": usage})

            async def events() -> Any:
                yield b'data: {"choices":[{"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n'
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield f'data: {{"choices":[],"usage":{json.dumps(usage)}}}\n\n'.encode()
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        async def responses(request: HttpRequest) -> Any:
            body = await request.json()
            self.seen.append(("responses", dict(request.headers), body))
            return JSONResponse({"status": "completed", "output": [
                {"type": "function_call", "name": "shell"}],
                "usage": {"input_tokens": 40, "output_tokens": 4}})

        self.app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                                     Route("/v1/responses", responses, methods=["POST"])])


def test_an_openai_compatible_api_is_forwarded_with_its_key_and_metered(tmp_path: Path
                                                                        ) -> None:
    import uvicorn

    fake = FakeOpenAI()
    server = uvicorn.Server(uvicorn.Config(fake.app, host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    events: Events = []
    prices = {**AgentConfig().prices, "gpt-test": Price(input=1, output=10, cache_read=0.1,
                                                        cache_write=0)}
    meter = Meter(BUDGET, prices, lambda kind, data: events.append((kind, data)))
    gw = Gateway(Upstream("anthropic", "http://127.0.0.1:9", "unused"), meter,
                 lambda kind, data: events.append((kind, data)),
                 openai=Upstream("openai", f"http://127.0.0.1:{port}/v1", FakeOpenAI.KEY))
    path = gw.start(tmp_path)
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)),
                          base_url="http://gateway/openai/v1",
                          headers={"authorization": f"Bearer {gw.token}",
                                   "openai-organization": "someone-else"}) as client:
            chat = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
            assert client.post("/chat/completions", json=chat).json()["choices"]
            streamed = client.post("/chat/completions", json={**chat, "stream": True})
            assert "[DONE]" in streamed.text
            assert client.post("/responses", json={"model": "gpt-test", "input": "hi"}
                               ).status_code == 200
            unpriced = client.post("/chat/completions", json={**chat, "model": "gpt-other"})
            assert unpriced.status_code == 400 and "agent.prices" in \
                unpriced.json()["error"]["message"]
    finally:
        gw.close()
        server.should_exit = True
        thread.join(5)
    # The real key went upstream instead of the credential; the account header did not.
    assert all(h["authorization"] == f"Bearer {FakeOpenAI.KEY}" for _, h, _ in fake.seen)
    assert all("openai-organization" not in h for _, h, _ in fake.seen)
    # The gateway asked the stream for its usage, and metered all three replies.
    assert fake.seen[1][2]["stream_options"] == {"include_usage": True}
    turns = [d for k, d in events if k == "agent.turn"]
    assert [(t["tokens_in"], t["cache_read"], t["tokens_out"]) for t in turns] == [
        (20, 100, 9), (20, 100, 9), (40, 0, 4)]
    assert turns[2]["tools"] == ["shell"] and not any(t["usage_estimated"] for t in turns)
    assert meter.turns == 3 and meter.usage.cost_usd == pytest.approx(
        (20 * 1 + 100 * 0.1 + 9 * 10) * 2 / 1e6 + (40 * 1 + 4 * 10) / 1e6)
