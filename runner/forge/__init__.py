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
    """The adapter for ``forges.<name>``, with its token (or its GitHub App's private key)
    read from the named env var or file."""
    env = os.environ if environ is None else environ
    try:
        config = settings.forges[name]
    except KeyError:
        known = ", ".join(sorted(settings.forges)) or "none are configured"
        raise KeyError(f"no forge named {name!r} under `forges` (known: {known})") from None
    retry = retry or RetryPolicy(retries=config.retries)
    if config.kind == "github" and config.app is not None:
        from runner.forge.github import GitHubForge
        from runner.forge.github_app import load_app_key

        key = load_app_key(config.app.app_id, private_key_env=config.app.private_key_env,
                           private_key_file=config.app.private_key_file, environ=env,
                           forge=name)
        return GitHubForge(app_key=key, base_url=config.base_url, retry=retry,
                           throttle=throttle, timeout=config.timeout, git_url=config.git_url,
                           forge_name=name)
    token_env = config.token_env or ""
    token = env.get(token_env, "")
    if not token:
        raise ForgeAuthError(f"forges.{name}.token_env: environment variable "
                             f"{token_env} is not set (export {token_env}=...)")
    if config.kind == "github":
        from runner.forge.github import GitHubForge

        return GitHubForge(token, base_url=config.base_url, token_env=token_env,
                           bot_user=config.bot_user, retry=retry, throttle=throttle,
                           timeout=config.timeout, git_url=config.git_url)
    from runner.forge.forgejo import ForgejoForge

    return ForgejoForge(token, base_url=config.base_url, token_env=token_env,
                        bot_user=config.bot_user, retry=retry, timeout=config.timeout,
                        git_url=config.git_url)


__all__ = ["Forge", "make_forge"]
