"""Forges: the Forge protocol (base.py), GitHub and Forgejo adapters, webhook parsing."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from runner.forge.base import Forge, ForgeAuthError, RetryPolicy

if TYPE_CHECKING:
    from runner.config import Settings


def make_forge(settings: Settings, name: str, *, environ: Mapping[str, str] | None = None,
               retry: RetryPolicy | None = None, throttle: bool = True) -> Forge:
    """The adapter for ``forges.<name>``, with its token read from the named env var."""
    env = os.environ if environ is None else environ
    try:
        config = settings.forges[name]
    except KeyError:
        known = ", ".join(sorted(settings.forges)) or "none are configured"
        raise KeyError(f"no forge named {name!r} under `forges` (known: {known})") from None
    token = env.get(config.token_env, "")
    if not token:
        raise ForgeAuthError(f"forges.{name}.token_env: environment variable "
                             f"{config.token_env} is not set (export {config.token_env}=...)")
    retry = retry or RetryPolicy(retries=config.retries)
    if config.kind == "github":
        from runner.forge.github import GitHubForge

        return GitHubForge(token, base_url=config.base_url, token_env=config.token_env,
                           bot_user=config.bot_user, retry=retry, throttle=throttle,
                           timeout=config.timeout, git_url=config.git_url)
    from runner.forge.forgejo import ForgejoForge

    return ForgejoForge(token, base_url=config.base_url, token_env=config.token_env,
                        bot_user=config.bot_user, retry=retry, timeout=config.timeout,
                        git_url=config.git_url)


__all__ = ["Forge", "make_forge"]
