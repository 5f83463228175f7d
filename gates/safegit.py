"""The one place for hardened git: the flags and environment of every git command the runner
and the gates run on a checkout the agent has written to.

Nothing the agent can write (``.gitattributes``, files named like options, a ``.git`` entry)
may make git run code, ask for credentials or read configuration from the environment.
Command-line configuration also reaches git's child processes. The gates live here (not in
``runner``) because ``python -m gates`` runs anywhere, without the runner.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

SAFE_CONFIG: tuple[str, ...] = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.untrackedCache=false",
    "core.quotePath=false",
    "diff.noprefix=false",
    "diff.ignoreSubmodules=all",
    "submodule.recurse=false",
    "status.submoduleSummary=false",
    "protocol.ext.allow=never",
    "credential.helper=",
)
# For every diff: no external diff program and no textconv filter (a .gitattributes can name
# one), renames and copies found so that both names of a moved file are seen.
DIFF_FLAGS: tuple[str, ...] = ("--no-color", "--no-ext-diff", "--no-textconv")


def git_argv(*args: str) -> list[str]:
    """``git -c ... <args>`` with the safe configuration."""
    argv = ["git"]
    for item in SAFE_CONFIG:
        argv += ["-c", item]
    return [*argv, *args]


def git_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) without anything that would redirect or
    reconfigure git, and with prompts off."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", GCM_INTERACTIVE="never", GIT_CONFIG_NOSYSTEM="1")
    return env
