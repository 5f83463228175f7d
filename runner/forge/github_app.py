"""GitHub App authentication, on PyGithub's own App support.

The App signs a JWT with its private key (``Auth.AppAuth``); ``GithubIntegration`` finds the
installation of each repository and makes installation tokens, which act as ``<slug>[bot]``.
A token lives an hour on GitHub; ``InstallationToken`` renews it before it expires, earlier
for git than PyGithub's 20 s (a fetch or push must not outlive its token), and every
installation has its own ``Github`` client, so each repository is served with its own token.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from github import Auth, Github, GithubException, GithubIntegration

from runner.forge.base import ForgeAuthError, ForgeError, NotFound, RateLimited
from runner.forge.retry import is_rate_limit, rate_limit_wait

# Renew when less than this share of a token's life is left (at most RENEW_MAX_S before).
RENEW_SHARE = 0.5
RENEW_MAX_S = 300.0


@dataclass(frozen=True)
class AppKey:
    """An App's identity: its id (or client id) and its PEM private key."""

    app_id: str
    private_key: str = field(repr=False)
    source: str = ""  # where the key came from, for messages (never the key itself)


def load_app_key(app_id: str, *, private_key_env: str | None, private_key_file: str | None,
                 environ: Mapping[str, str] | None = None, forge: str = "github") -> AppKey:
    """The App's key from the environment variable or the file the configuration names."""
    env = os.environ if environ is None else environ
    if private_key_env:
        pem = env.get(private_key_env, "")
        source = f"${private_key_env}"
        if not pem:
            raise ForgeAuthError(f"forges.{forge}.app.private_key_env: environment variable "
                                 f"{private_key_env} is not set (export it with the App's "
                                 "PEM private key)")
    elif private_key_file:
        source = private_key_file
        try:
            pem = Path(private_key_file).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ForgeAuthError(f"forges.{forge}.app.private_key_file: cannot read "
                                 f"{private_key_file} ({exc.strerror}); download the App's "
                                 "private key from its settings page") from None
    else:
        raise ForgeAuthError(f"forges.{forge}.app: set private_key_env or private_key_file")
    if "PRIVATE KEY-----" not in pem:
        raise ForgeAuthError(f"forges.{forge}.app: {source} does not hold a PEM private key "
                             "(it starts with -----BEGIN RSA PRIVATE KEY-----)")
    return AppKey(str(app_id), pem, source)


class InstallationToken(Auth.Auth):
    """One installation's token for PyGithub and git, renewed before it expires.

    Thread-safe: the first caller past the renewal point makes the new token, the others wait
    for it. ``renewals`` counts tokens made, for tests and the doctor.
    """

    def __init__(self, integration: GithubIntegration, installation_id: int,
                 clock: Callable[[], float] = time.time,
                 on_request: Callable[[], None] | None = None) -> None:
        self._integration = integration
        self._on_request = on_request
        self.installation_id = installation_id
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._made = 0.0
        self._expires = 0.0
        self.renewals = 0

    @property
    def token_type(self) -> str:
        return "token"

    @property
    def token(self) -> str:
        """A token with enough life left (PyGithub calls this for every request)."""
        with self._lock:
            now = self._clock()
            margin = min((self._expires - self._made) * RENEW_SHARE, RENEW_MAX_S)
            if not self._token or now >= self._expires - margin:
                made = self._integration.get_access_token(self.installation_id)
                expires = made.expires_at
                if expires.tzinfo is None:
                    expires = expires.replace(tzinfo=UTC)
                self._token, self._made = made.token, now
                self._expires = expires.timestamp()
                self.renewals += 1
            return self._token

    def authentication(self, headers: dict[str, Any]) -> None:
        if self._on_request is not None:
            self._on_request()  # PyGithub authenticates every request: count them here
        super().authentication(headers)

    @property
    def expires_at(self) -> float:
        """Unix time the current token expires (0 before the first)."""
        return self._expires

    @property
    def _masked_token(self) -> str:
        return "token (installation token removed)"


class GitHubApp:
    """A GitHub App as the runner uses it: its slug, the installation of each repository,
    and a PyGithub client per installation."""

    def __init__(self, key: AppKey, *, base_url: str, client_options: dict[str, Any],
                 forge_name: str = "github",
                 on_request: Callable[[], None] | None = None) -> None:
        self.key = key
        self.base_url = base_url
        self.forge_name = forge_name
        self._on_request = on_request
        self._options = client_options
        self.integration = GithubIntegration(
            auth=Auth.AppAuth(key.app_id, key.private_key), base_url=base_url,
            **{k: v for k, v in client_options.items()
               if k in ("timeout", "retry", "seconds_between_requests",
                        "seconds_between_writes")})
        self._lock = threading.Lock()
        self._installations: dict[str, int] = {}  # repo -> installation id
        self._tokens: dict[int, InstallationToken] = {}
        self._clients: dict[int, Github] = {}
        self._slug: str | None = None

    def _fail(self, what: str, exc: GithubException) -> ForgeError:
        message = exc.data.get("message", "") if isinstance(exc.data, dict) else str(exc.data)
        where = f"forges.{self.forge_name}.app"
        if is_rate_limit(exc.status, message, exc.headers or {}):
            return RateLimited(f"GitHub rate limit ({exc.status}) on {what}: {message}",
                               retry_after=rate_limit_wait(exc.headers or {}))
        if exc.status == 401:
            return ForgeAuthError(f"GitHub refused the App's JWT on {what} (401: {message}): "
                                  f"check {where}.app_id and that {self.key.source} is that "
                                  "App's current private key, and that this machine's clock "
                                  "is right", 401)
        if exc.status == 404:
            return NotFound(f"GitHub: {what}: the App is not installed there (404); install "
                            "it on the repository (docs/forges.md)", 404)
        return ForgeError(f"GitHub answered {exc.status} on {what}: {message}", exc.status,
                          transient=exc.status == 429 or exc.status >= 500)

    @property
    def slug(self) -> str:
        """The App's slug (``GET /app``, once)."""
        if self._slug is None:
            try:
                self._slug = self.integration.get_app().slug
            except GithubException as exc:
                raise self._fail("GET /app", exc) from None
        return self._slug

    @property
    def bot_login(self) -> str:
        """``<slug>[bot]``: who the App's comments, reviews and pushes are by."""
        return f"{self.slug}[bot]"

    def installation_id(self, repo: str) -> int:
        """The installation that covers ``repo`` (looked up once)."""
        with self._lock:
            found = self._installations.get(repo.lower())
        if found is not None:
            return found
        owner, name = repo.split("/", 1)
        try:
            installation = self.integration.get_repo_installation(owner, name)
        except GithubException as exc:
            raise self._fail(f"the App's installation on {repo}", exc) from None
        with self._lock:
            self._installations[repo.lower()] = installation.id
        return installation.id

    def auth(self, repo: str) -> InstallationToken:
        """The renewing token of the installation covering ``repo``."""
        ident = self.installation_id(repo)
        with self._lock:
            token = self._tokens.get(ident)
            if token is None:
                token = self._tokens[ident] = InstallationToken(
                    self.integration, ident, on_request=self._on_request)
            return token

    def client(self, repo: str) -> Github:
        """The PyGithub client acting as the installation that covers ``repo``."""
        auth = self.auth(repo)
        with self._lock:
            found = self._clients.get(auth.installation_id)
            if found is None:
                found = Github(auth=auth, base_url=self.base_url, lazy=True, **self._options)
                self._clients[auth.installation_id] = found
            return found

    def token(self, repo: str) -> str:
        """A current installation token for ``repo`` (made or renewed as needed)."""
        try:
            return self.auth(repo).token
        except GithubException as exc:
            raise self._fail(f"an installation token for {repo}", exc) from None

    def forget(self, repo: str) -> None:
        """Look the installation up again next time (uninstalled, or moved)."""
        with self._lock:
            self._installations.pop(repo.lower(), None)

    def clients(self) -> list[Github]:
        """Every client made so far (for rate-limit figures)."""
        with self._lock:
            return list(self._clients.values())
