"""The one place for hardened git: the flags and environment of every git command the runner
and the gates run on a checkout the agent has written to.

Nothing the agent can write (``.gitattributes``, files named like options, a ``.git`` entry)
may make git run code, ask for credentials or read configuration from the environment.
Command-line configuration also reaches git's child processes. The gates live here (not in
``runner``) because ``python -m gates`` runs anywhere, without the runner.

Every git command in ``runner`` and ``gates`` is made here: ``run`` for a command that needs
no cancel, ``runner.workspace.git.HardenedGit`` (the same argv and environment, run in its
own process group that a kill stops) for the runner's mirrors and worktrees.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

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


def run(*args: str, cwd: str | Path | None = None, env: Mapping[str, str] | None = None,
        timeout: float = 120.0, errors: str = "surrogateescape"
        ) -> subprocess.CompletedProcess[str]:
    """Run ``git <args>`` with the safe configuration and environment (plus ``env``), and
    capture its text output; bytes that are not UTF-8 become surrogates by default, so a path
    read back names the same file. Never raises on git's exit code; FileNotFoundError when git
    is missing, ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
    # an argv list of git with fixed options; no shell
    return subprocess.run(git_argv(*args), cwd=cwd, env={**git_env(), **(env or {})},  # noqa: S603
                          capture_output=True, text=True, errors=errors, timeout=timeout,
                          check=False)
