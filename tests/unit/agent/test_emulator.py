"""The Messages API emulator, driven through the real anthropic SDK over loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.testing.llm import (
    LLMEmulator,
    PromptCache,
    Reply,
    Request,
    Script,
    by_system,
    count_tokens,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
MODEL = "claude-sonnet-4-5"
BIG_SYSTEM = "You are a careful engineer. " * 200  # about 1400 tokens: above the cache minimum


@pytest.fixture
def llm() -> Iterator[LLMEmulator]:
    with LLMEmulator(script=[Reply.bash("ls", "Looking around."), Reply.text("All done.")]
                     ) as emulator:
        yield emulator


def client(llm: LLMEmulator, key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=llm.base_url, api_key=key or llm.api_key,
                               max_retries=0)


def system(cached: bool = True) -> Any:  # the SDK's TypedDicts, kept loose in tests
    block: dict[str, Any] = {"type": "text", "text": BIG_SYSTEM}
    if cached:
        block["cache_control"] = {"type": "ephemeral"}
    return [block]


def test_json_reply_with_tool_use(llm: LLMEmulator) -> None:
    msg = client(llm).messages.create(model=MODEL, max_tokens=500, system=system(),
                                      messages=[{"role": "user", "content": "hi"}])
    assert msg.stop_reason == "tool_use"
    assert [b.type for b in msg.content] == ["text", "tool_use"]
    tool = msg.content[1]
    assert tool.type == "tool_use" and tool.name == "bash" and tool.input == {"command": "ls"}
    assert msg.usage.cache_creation_input_tokens and msg.usage.cache_creation_input_tokens > 1000
    assert msg.usage.cache_read_input_tokens == 0


def test_stream_reply_and_cache_read_of_the_shared_prefix(llm: LLMEmulator) -> None:
    api = client(llm)
    first = api.messages.create(model=MODEL, max_tokens=500, system=system(),
                                messages=[{"role": "user", "content": "hi"}])
    tool_id = first.content[1].id  # type: ignore[union-attr]
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [b.model_dump(include={"type", "text", "id", "name",
                                                                 "input"})
                                          for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id,
                                      "content": "README.md",
                                      "cache_control": {"type": "ephemeral"}}]},
    ]
    with api.messages.stream(model=MODEL, max_tokens=500, system=system(),
                             messages=messages) as stream:
        texts = list(stream.text_stream)
        second = stream.get_final_message()
    assert "".join(texts) == "All done."
    assert second.stop_reason == "end_turn"
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert llm.exchanges[-1].stream


def test_no_cache_without_breakpoints_or_below_the_minimum() -> None:
    with LLMEmulator(policy=lambda r: Reply.text("ok")) as llm:
        api = client(llm)
        for _ in range(2):
            msg = api.messages.create(model=MODEL, max_tokens=50, system=system(cached=False),
                                      messages=[{"role": "user", "content": "hi"}])
            assert msg.usage.cache_read_input_tokens == 0
        small: Any = [{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}]
        for _ in range(2):
            msg = api.messages.create(model=MODEL, max_tokens=50, system=small,
                                      messages=[{"role": "user", "content": "hi"}])
            assert msg.usage.cache_read_input_tokens == 0


def test_more_than_four_breakpoints_is_a_400(llm: LLMEmulator) -> None:
    blocks: Any = [{"type": "text", "text": f"part {i}",
                    "cache_control": {"type": "ephemeral"}} for i in range(5)]
    with pytest.raises(anthropic.BadRequestError, match="maximum of 4 blocks"):
        client(llm).messages.create(model=MODEL, max_tokens=50,
                                    messages=[{"role": "user", "content": blocks}])


def test_tool_result_must_answer_the_previous_tool_use(llm: LLMEmulator) -> None:
    with pytest.raises(anthropic.BadRequestError, match="tool_use_id"):
        client(llm).messages.create(model=MODEL, max_tokens=50, messages=[
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x",
                                          "content": "x"}]}])


def test_wrong_key_is_a_401(llm: LLMEmulator) -> None:
    with pytest.raises(anthropic.AuthenticationError):
        client(llm, key="sk-wrong").messages.create(
            model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "hi"}])


def test_injected_errors_carry_the_api_shape(llm: LLMEmulator) -> None:
    llm.fail(429, retry_after=2)
    llm.fail(529)
    api = client(llm)
    with pytest.raises(anthropic.RateLimitError) as rate:
        api.messages.create(model=MODEL, max_tokens=50,
                            messages=[{"role": "user", "content": "hi"}])
    assert rate.value.response.headers["retry-after"] == "2"
    assert rate.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        api.messages.create(model=MODEL, max_tokens=50,
                            messages=[{"role": "user", "content": "hi"}])
    assert overloaded.value.status_code == 529
    # After the faults, the policy answers again.
    ok = api.messages.create(model=MODEL, max_tokens=50,
                             messages=[{"role": "user", "content": "hi"}])
    assert ok.stop_reason == "tool_use"


def test_output_over_max_tokens_is_cut_with_that_stop_reason() -> None:
    with LLMEmulator(policy=lambda r: Reply.text("word " * 500)) as llm:
        msg = client(llm).messages.create(model=MODEL, max_tokens=10,
                                          messages=[{"role": "user", "content": "hi"}])
    assert msg.stop_reason == "max_tokens"
    assert msg.usage.output_tokens == 10


def test_script_exhausted_says_so() -> None:
    with LLMEmulator(script=[]) as llm, pytest.raises(anthropic.BadRequestError,
                                                      match="script exhausted"):
        client(llm).messages.create(model=MODEL, max_tokens=10,
                                    messages=[{"role": "user", "content": "hi"}])


def test_policies_branch_on_the_system_prompt() -> None:
    policy = by_system({"You review pull requests": lambda r: Reply.text("approve")},
                       default=Script([Reply.text("agent reply")]))
    with LLMEmulator(policy=policy) as llm:
        api = client(llm)
        review = api.messages.create(model=MODEL, max_tokens=50,
                                     system="You review pull requests.",
                                     messages=[{"role": "user", "content": "diff"}])
        agent = api.messages.create(model=MODEL, max_tokens=50, system="You are an agent.",
                                    messages=[{"role": "user", "content": "task"}])
    assert review.content[0].text == "approve"  # type: ignore[union-attr]
    assert agent.content[0].text == "agent reply"  # type: ignore[union-attr]


def test_requests_are_recorded_without_the_key(llm: LLMEmulator) -> None:
    client(llm).messages.create(model=MODEL, max_tokens=50, system="sys",
                                messages=[{"role": "user", "content": "the task"}])
    seen: Request = llm.exchanges[-1].request
    assert seen.system == "sys" and seen.first_user_text() == "the task"
    assert llm.api_key not in repr(seen.headers)


def test_count_tokens(llm: LLMEmulator) -> None:
    count = client(llm).messages.count_tokens(model=MODEL, system=system(),
                                              messages=[{"role": "user", "content": "hi"}])
    assert count.input_tokens > 1000


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=300), st.booleans()), min_size=1,
                max_size=12), st.integers(min_value=0, max_value=200))
def test_cache_usage_always_adds_up_to_the_whole_prompt(
        parts: list[tuple[str, bool]], minimum: int) -> None:
    blocks: list[dict[str, Any]] = []
    for text, marked in parts:
        block: dict[str, Any] = {"type": "text", "text": text}
        if marked:
            block["cache_control"] = {"type": "ephemeral"}
        blocks.append(block)
    body = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": blocks}]}
    cache = PromptCache(min_tokens=minimum)
    whole = sum(count_tokens({k: v for k, v in b.items() if k != "cache_control"})
                for b in blocks)
    first, again = cache.account("k", body), cache.account("k", body)
    assert first.total == again.total
    assert first.cache_read_input_tokens == 0
    # Asked again, everything the first request wrote is read back, nothing is written twice.
    assert again.cache_read_input_tokens == first.cache_creation_input_tokens
    assert again.cache_creation_input_tokens == 0
    assert first.total == whole  # read + written + uncached is the whole prompt
