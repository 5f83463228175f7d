"""The runner's one hardened git: every command on a mirror or a worktree goes through
``HardenedGit.run``.

It runs ``gates.safegit``'s argv and environment (hooks and fsmonitor off, no external diff,
no prompts, nothing read from ``GIT_*`` variables), names the repository explicitly
(``GIT_DIR``/``GIT_WORK_TREE``: the worktree's ``.git`` entry, which the agent may have
replaced, is never read), and runs git in its own process group, which the run's cancel
stops. The forge token reaches git only through an ``http.<url>.extraheader`` passed in the
environment of the one command that needs it (``auth_env``): never a config file, a remote
URL, a command line or a log.
"""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from gates.safegit import git_argv, git_env
from runner import process
from runner.process import Cancel
from runner.workspace.errors import Interrupted, WorkspaceError


def auth_env(url: str, token: str | None) -> dict[str, str]:
    """Config, by environment variables, that sends the token to ``url``'s host only."""
    if not token:
        return {}
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return {}  # file and local paths need no token; ssh uses keys
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"http.{parts.scheme}://{parts.netloc}/.extraheader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
    }


def check_url(url: str) -> None:
    """WorkspaceError when ``url`` carries credentials (they would be stored with it)."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and (parts.username or parts.password):
        raise WorkspaceError(
            f"the repository URL for {parts.hostname} carries credentials; give the URL "
            "without them and pass the token separately (it must never be stored in a URL)"
        )


def shown(args: Iterable[str]) -> str:
    """A git command for a message: the subcommand and its first arguments."""
    return " ".join(list(args)[:3])


class HardenedGit:
    """Runs git commands for the workspaces under ``root`` (their default directory)."""

    def __init__(self, root: Path, timeout: float = 900.0) -> None:
        self.root = root
        self.timeout = timeout
        self._merge_tree_ok: bool | None = None

    def run(self, args: Iterable[str], *, git_dir: Path | None = None,
            work_tree: Path | None = None, env: dict[str, str] | None = None,
            token: str | None = None, check: bool = True, ok_codes: tuple[int, ...] = (0,),
            cancel: Cancel | None = None,
            errors: str = "surrogateescape") -> subprocess.CompletedProcess[str]:
        """Run git with an explicit repository and the safe flags; WorkspaceError on failure
        (``token`` masked in its message), Interrupted when ``cancel`` is set while it runs
        (its process group is stopped). Output that is not UTF-8 (a path the agent named so)
        keeps its bytes as surrogates by default, so a path read back names the same file."""
        args = list(args)
        full_env = {**git_env(), "LC_ALL": "C"}
        if git_dir is not None:
            full_env["GIT_DIR"] = str(git_dir)
        if work_tree is not None:
            full_env["GIT_WORK_TREE"] = str(work_tree)
        full_env.update(env or {})
        try:
            proc = process.run(git_argv(*args), env=full_env,
                               cwd=str(work_tree or git_dir or self.root),
                               timeout=self.timeout, cancel=cancel, errors=errors)
        except process.ProcessInterrupted:
            raise Interrupted(f"git {shown(args)} was stopped: the run was cancelled") from None
        except FileNotFoundError:
            raise WorkspaceError("git is not installed (apt-get install git)") from None
        except subprocess.TimeoutExpired:
            raise WorkspaceError(
                f"git {shown(args)} took over {self.timeout:.0f}s; check the network "
                "and the size of the repository") from None
        if check and proc.returncode not in ok_codes:
            detail = (proc.stderr or proc.stdout).strip()
            if token:
                detail = detail.replace(token, "***")
            raise WorkspaceError(f"git {shown(args)} failed (exit {proc.returncode}): "
                                 f"{detail[-2000:]}")
        return proc

    def require_merge_tree(self) -> None:
        """WorkspaceError unless git is 2.38 or newer (``merge-tree --write-tree``)."""
        if self._merge_tree_ok is None:
            out = self.run(["--version"], check=False).stdout
            match = re.search(r"(\d+)\.(\d+)", out)
            self._merge_tree_ok = match is not None and \
                (int(match[1]), int(match[2])) >= (2, 38)
        if not self._merge_tree_ok:
            raise WorkspaceError("the conflict check needs git 2.38 or newer "
                                 "(git merge-tree --write-tree); upgrade git")
