"""Agents: the Agent protocol (base.py), the built-in Claude loop, command-line agents."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.agent.base import Agent
    from runner.config import Settings


def make_agent(settings: Settings) -> Agent:
    """The agent the configuration asks for (``agent.kind``): claude or command.

    Raises ``AgentError`` for a configuration the agent cannot work with (a model without a
    price, a missing system prompt file). Adapters are imported here, not at the top, so the
    core can import this package without pulling in the SDK.
    """
    if settings.agent.kind == "command":
        from runner.agent.command import CommandAgent

        return CommandAgent(settings.agent, timeout=settings.sandbox.run_timeout)
    from runner.agent.claude import ClaudeAgent

    return ClaudeAgent(settings.agent, command_timeout=settings.sandbox.command_timeout,
                       max_output_tokens=settings.agent.max_output_tokens)
