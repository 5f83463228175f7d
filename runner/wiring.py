"""Assembles the adapters the configuration names into a Controller and its run steps.

``cli.py`` calls ``build``; tests and the demo call it too, with the emulators' URLs in the
settings, so every path through the product is wired the same way.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gates.model import GatesError
from gates.profiles import ENV_CONFIG as GATES_ENV
from gates.profiles import GatesConfig
from gates.profiles import load_config as load_gates
from runner.agent import make_agent
from runner.clock import SYSTEM_CLOCK, Clock
from runner.config import Settings
from runner.controller import Controller
from runner.forge import make_forge
from runner.forge.base import Forge
from runner.paths import CONFIG_DIR
from runner.review import make_client
from runner.run.context import Services
from runner.run.driver import Steps
from runner.sandbox import make_backend, make_warm_pool
from runner.sandbox.refill import WarmRefill
from runner.store import open_store
from runner.store.base import Store
from runner.workspace import Identity, Workspaces


class WiringError(Exception):
    """A part named by the configuration cannot be built; the message says what to fix."""


@dataclass
class Runner:
    """Everything ``orchestrator serve`` runs: the store, the forges, the controller."""

    settings: Settings
    store: Store
    forges: dict[str, Forge]
    steps: Steps
    controller: Controller


def worker_id() -> str:
    """This process's name in leases and the dashboard: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def review_client(settings: Settings) -> Any:
    """The reviewer's model client, when the configuration enables the AI review."""
    if not settings.review.enabled:
        return None
    key = os.environ.get(settings.agent.api_key_env, "")
    if not key:
        raise WiringError(f"the AI review needs ${settings.agent.api_key_env} (or set "
                          "review.enabled: false)")
    return make_client(api_key=key, base_url=settings.agent.base_url,
                       outage_timeout=settings.agent.outage_timeout)


def _gates(settings: Settings) -> GatesConfig:
    """The gate profiles: ``gates_config``, else ``$ORCHESTRATOR_GATES_CONFIG``, else the
    bundled file (the same order as the gates CLI, without a checkout to look in)."""
    path = settings.gates_config or os.environ.get(GATES_ENV) or str(CONFIG_DIR / "gates.yml")
    try:
        return load_gates(path)
    except GatesError as exc:
        raise WiringError(f"gate profiles: {exc}") from None


def _check_sandbox_env(settings: Settings) -> None:
    """``sandbox.env`` must not carry a secret into every container."""
    from runner.sandbox import secret_env_names
    from runner.sandbox.base import leaked_names, secret_values

    leaked = leaked_names(settings.sandbox.env, secret_values(secret_env_names(settings)))
    if leaked:
        raise WiringError(f"sandbox.env {', '.join(leaked)} holds one of the runner's secrets "
                          "(a forge token, webhook secret, API token or the LLM key); remove "
                          "it: a secret must never enter the agent's container")


def build(settings: Settings, *, store: Store | None = None, worker: str | None = None,
          serving: bool = False, clock: Clock = SYSTEM_CLOCK) -> Runner:
    """Wire the configured adapters into a runnable Controller. ``serving``: this process
    receives the forges' webhooks (``serve``), so a CI event wakes a waiting run and polling
    is only the fallback for the forges with a webhook secret. ``clock``: what leases,
    deadlines and backoffs go by (tests pass a ``FakeClock``)."""
    store = store or open_store(settings, clock=clock)
    forges = {name: make_forge(settings, name, throttle=cfg.throttle)
              for name, cfg in settings.forges.items()}
    identity = Identity()
    for cfg in settings.forges.values():
        if cfg.bot_user:
            identity = Identity(name=cfg.bot_user,
                                email=f"{cfg.bot_user}@users.noreply.localhost")
            break
    _check_sandbox_env(settings)
    gates = _gates(settings)
    continuation = (CONFIG_DIR / "prompts" / "continuation.md").read_text(encoding="utf-8")
    webhooks = frozenset(name for name, cfg in settings.forges.items()
                         if serving and cfg.webhook_secret_env
                         and os.environ.get(cfg.webhook_secret_env))
    services = Services(
        settings=settings, store=store, forges=forges,
        workspaces=Workspaces(Path(settings.data_dir), identity=identity),
        sandboxes=make_backend(settings), make_agent=lambda: make_agent(settings),
        gates=gates, continuation_template=continuation,
        review_client=review_client(settings), webhooks=webhooks, clock=clock,
    )
    warm = settings.sandbox.warm
    pool = make_warm_pool(services.sandboxes)
    if pool is not None:
        services.warm = WarmRefill(
            pool, services.spec("warm", "", 0, Path(settings.data_dir)),
            settings.limits.max_concurrent if warm is None else warm)
    steps = Steps(services)
    controller = Controller(settings, store, forges, steps, worker_id=worker or worker_id(),
                            clock=clock)
    return Runner(settings, store, forges, steps, controller)
