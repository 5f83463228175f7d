"""Sandboxes: where the agent's commands run (base.py), Docker and local backends."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.config import Settings
    from runner.sandbox.base import SandboxBackend, WarmSandboxes


def secret_env_names(settings: Settings) -> set[str]:
    """Names of the environment variables holding the runner's secrets.

    The agent's API keys (the model gateway's too) count unless ``agent.pass_env`` hands one
    to a command agent on purpose.
    """
    names = {forge.token_env for forge in settings.forges.values() if forge.token_env}
    names |= {f.app.private_key_env for f in settings.forges.values()
              if f.app is not None and f.app.private_key_env}
    names |= {f.webhook_secret_env for f in settings.forges.values() if f.webhook_secret_env}
    names.add(settings.server.api_token_env)
    names.add(settings.agent.api_key_env)
    if settings.agent.gateway.openai_base_url:
        names.add(settings.agent.gateway.openai_api_key_env)
    return names - set(settings.agent.pass_env)


def make_backend(settings: Settings) -> SandboxBackend:
    """The sandbox backend the configuration names (``sandbox.backend``)."""
    if settings.sandbox.backend == "local":
        from runner.sandbox.local import LocalBackend

        return LocalBackend()
    from runner.sandbox.base import secret_values
    from runner.sandbox.docker import DockerBackend

    return DockerBackend(state_dir=Path(settings.data_dir) / "sandbox",
                         image=settings.sandbox.image,
                         secrets=secret_values(secret_env_names(settings)))


def make_warm_pool(backend: SandboxBackend) -> WarmSandboxes | None:
    """The pool of sandboxes started ahead of runs, for a backend whose sandboxes take a
    while to start (Docker); None for one that starts them at once (local processes)."""
    from runner.sandbox.docker import DockerBackend
    from runner.sandbox.warm import WarmPool

    if isinstance(backend, DockerBackend):
        return WarmPool(backend.containers)
    return None
