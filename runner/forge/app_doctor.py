"""What ``orchestrator doctor`` checks of each GitHub App: its key is readable, GitHub accepts
its JWT, it is installed on every configured repository, and its permissions are enough.

Each check answers one line: a detail when it passes, an ``AppProblem`` saying what to do when
it does not. Later checks of a forge are skipped (with a reason) once an earlier one failed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from github import GithubException

from runner.forge.base import ForgeError
from runner.forge.github_app import AppKey, GitHubApp, load_app_key

if TYPE_CHECKING:
    from runner.config import Settings

# What the runner does as the App (docs/forges.md says why each is needed).
NEEDED = {"contents": "write", "issues": "write", "pull_requests": "write",
          "statuses": "write", "checks": "read", "metadata": "read"}
_RANK = {"read": 1, "write": 2, "admin": 3}


class AppProblem(Exception):
    """A check of a GitHub App failed; the message is the one line that says what to do."""


@dataclass(frozen=True)
class AppCheck:
    name: str
    run: Callable[[], str]


def missing_permissions(granted: Mapping[str, Any]) -> list[str]:
    """``name: level`` of each permission the runner needs and ``granted`` lacks."""
    return [f"{name}: {level}" for name, level in NEEDED.items()
            if _RANK.get(str(granted.get(name, "")), 0) < _RANK[level]]


def app_checks(settings: Settings, environ: Mapping[str, str] | None = None,
               client_options: dict[str, Any] | None = None) -> list[AppCheck]:
    """The checks of every GitHub forge configured with ``app``, in order."""
    env = os.environ if environ is None else environ
    checks: list[AppCheck] = []
    for name, forge in settings.forges.items():
        if forge.app is None:
            continue
        state: dict[str, Any] = {}
        cfg, base_url = forge.app, forge.base_url
        repos = [r.name for r in settings.repos if r.forge == name]

        def key(name: str = name, cfg: Any = cfg, state: dict[str, Any] = state) -> str:
            try:
                found: AppKey = load_app_key(cfg.app_id, private_key_env=cfg.private_key_env,
                                             private_key_file=cfg.private_key_file,
                                             environ=env, forge=name)
            except ForgeError as exc:
                raise AppProblem(str(exc)) from None
            state["key"] = found
            return f"app {cfg.app_id}, private key from {found.source}"

        def jwt(name: str = name, base_url: str = base_url, state: dict[str, Any] = state,
                cfg: Any = cfg) -> str:
            if "key" not in state:
                raise AppProblem("skipped: the App's private key is not readable (see above)")
            app = GitHubApp(state["key"], base_url=base_url, forge_name=name,
                            client_options=dict(client_options or {"timeout": 10}))
            try:
                slug = app.slug
            except ForgeError as exc:
                raise AppProblem(str(exc)) from None
            except OSError as exc:
                raise AppProblem(f"GitHub at {base_url} is unreachable: {exc}") from None
            state["app"] = app
            return f"GitHub accepts the JWT of {slug} (acts as {slug}[bot])"

        checks += [AppCheck(f"{name} app key", key), AppCheck(f"{name} app JWT", jwt)]
        for repo in repos:
            def installed(repo: str = repo, state: dict[str, Any] = state) -> str:
                app: GitHubApp | None = state.get("app")
                if app is None:
                    raise AppProblem("skipped: GitHub did not accept the App's JWT (see above)")
                owner, short = repo.split("/", 1)
                try:
                    installation = app.integration.get_repo_installation(owner, short)
                except GithubException as exc:
                    if exc.status == 404:
                        raise AppProblem(f"{app.slug} is not installed on {repo}: install it "
                                         "from the App's page (docs/forges.md)") from None
                    raise AppProblem(f"GitHub answered {exc.status} on {repo}'s installation"
                                     ) from None
                lacking = missing_permissions(installation.permissions or {})
                if lacking:
                    raise AppProblem(f"{app.slug} on {repo} lacks {', '.join(lacking)}: add "
                                     "them in the App's settings, then accept them on the "
                                     "installation")
                return f"installed (installation {installation.id}), permissions enough"

            checks.append(AppCheck(f"{name} app on {repo}", installed))
    return checks
