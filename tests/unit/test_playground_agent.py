"""The playground's scripted agent: what it knows it does; anything else gets a polite note,
with nothing from the issue in a command."""

from __future__ import annotations

from typing import Any

from runner.testing.llm import Reply, Request
from runner.testing.playground import NOTE, playground_agent


def ask(text: str) -> Request:
    return Request({"messages": [{"role": "user", "content": text}]}, {})


def tool(reply: Reply) -> tuple[str, dict[str, Any]]:
    block = next(b for b in reply.content if b["type"] == "tool_use")
    return block["name"], block["input"]


def test_a_known_request_is_fixed_and_an_unknown_one_gets_a_polite_note() -> None:
    agent = playground_agent()
    name, args = tool(agent(ask("add() returns the wrong result")))
    assert name == "bash" and "test_calc.py" in args["command"]
    name, args = tool(agent(ask("Speed up the calculator\n\nMake it faster")))
    assert "sleep" in args["command"]
    name, args = tool(agent(ask("Translate the README to French; $(rm -rf /)")))
    assert name == "editor" and args["file_text"] == NOTE and "rm -rf" not in str(args)
