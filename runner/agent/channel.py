"""A command agent's way to its model for one run: gateway, forwarder and environment.

``ModelChannel.open`` starts the run's gateway (in the runner) on the sandbox's shared
directory and the forwarder (in the sandbox), and returns the environment the agent's command
gets: base URLs on the sandbox's own loopback and the per-run credential, never the key.
``close`` ends both; the credential is dead from then on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from runner.agent.base import AgentError, EventSink
from runner.agent.forwarder import Forwarder
from runner.agent.gateway import ANTHROPIC_URL, Gateway, Upstream
from runner.agent.meter import Meter
from runner.config import AgentConfig
from runner.model import Budget
from runner.sandbox.base import Sandbox


class ModelChannel:
    """One run's gateway and forwarder (see the module docstring)."""

    def __init__(self, config: AgentConfig, budget: Budget, environ: Mapping[str, str],
                 emit: EventSink) -> None:
        key = environ.get(config.api_key_env, "")
        if not key:
            raise AgentError(f"no API key for the model gateway: set {config.api_key_env} in "
                             f"the runner's environment (agent.api_key_env names it); the "
                             f"command agent never sees it")
        gw = config.gateway
        openai = None
        if gw.openai_base_url:
            openai_key = environ.get(gw.openai_api_key_env, "")
            if not openai_key:
                raise AgentError(f"agent.gateway.openai_base_url is set but "
                                 f"{gw.openai_api_key_env} is not: set it in the runner's "
                                 f"environment (agent.gateway.openai_api_key_env names it)")
            openai = Upstream("openai", gw.openai_base_url, openai_key)
        self.config = config
        self.meter = Meter(budget, config.prices, emit)
        self.gateway = Gateway(Upstream("anthropic", config.base_url or ANTHROPIC_URL, key),
                               self.meter, emit, openai=openai)
        self.secrets = [key] + ([openai.key] if openai else [])
        self.forwarder: Forwarder | None = None

    def open(self, sandbox: Sandbox) -> dict[str, str]:
        """Start the gateway and the forwarder; the agent's environment. AgentError (with
        what to do) when the sandbox cannot have a gateway."""
        channel = getattr(sandbox, "channel", lambda: None)()
        if channel is None:
            raise AgentError(
                "this run's sandbox has no channel for the model gateway (it was made before "
                "agent.gateway was enabled, or by a backend without one): kill the run and "
                "start it again, or set agent.gateway.enabled: false and pass a key yourself")
        host_dir, inside = channel
        path = self.gateway.start(host_dir)
        self.forwarder = Forwarder(sandbox, f"{inside}/{path.name}")
        try:
            port = self.forwarder.start()
        except Exception as exc:  # any failure to start the forwarder closes the channel  # noqa: BLE001
            self.close()
            raise AgentError(str(exc)) from None
        base = f"http://127.0.0.1:{port}"
        token = self.gateway.token
        env = {
            "ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_BASE": base,  # SDKs; aider (litellm)
            "ANTHROPIC_API_KEY": token, "ANTHROPIC_MODEL": self.config.model,
            "ORCHESTRATOR_GATEWAY": base,
        }
        if "openai" in self.gateway.upstreams:
            env.update(OPENAI_BASE_URL=f"{base}/openai/v1", OPENAI_API_BASE=f"{base}/openai/v1",
                       OPENAI_API_KEY=token)
        return env

    def close(self, *, wait: bool = True) -> None:
        """Close the gateway (connections cut at once) and stop the forwarder, which ends by
        itself once the gateway's socket is gone: ``wait=False`` (a kill) leaves it to that."""
        self.gateway.close()
        forwarder, self.forwarder = self.forwarder, None
        if forwarder is not None and wait:
            with contextlib.suppress(Exception):
                forwarder.stop()
