"""GitHub Apps in the forge emulator: RS256 JWTs, installations, installation tokens.

As ``github/recorded-pygithub/app-auth.json`` and the "GitHub App authentication" section of
the shared contracts describe: a JWT (``iss`` the app id or client id, ``iat``, ``exp`` at most
10 minutes ahead) verified against the app's public key reaches ``/app``, its installations and
``POST /app/installations/{id}/access_tokens``; the token made there acts as ``<slug>[bot]``
on the installation's repositories until it expires (401 after), for the API and for git.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from runner.testing.forge_api import Reply, Request
from runner.testing.forge_state import EmulatorError, ForgeState, Repo, User

# GitHub refuses a JWT that lives longer than this (and one whose exp has passed).
MAX_JWT_LIFETIME = 600
_EXPIRED = ("'Expiration time' claim ('exp') must be a numeric value representing the future "
            "time at which the assertion expires")
# What the runner needs (docs/forges.md lists the same).
DEFAULT_PERMISSIONS = {"contents": "write", "issues": "write", "pull_requests": "write",
                       "statuses": "write", "checks": "read", "metadata": "read"}


@dataclass
class App:
    """A registered GitHub App and its key pair; ``private_key_pem`` goes to the runner."""

    id: int
    slug: str
    client_id: str
    owner: User
    bot: User
    private_key_pem: str = field(repr=False)
    public_key: Any = field(repr=False)
    permissions: dict[str, str]
    events: list[str]
    token_lifetime: float = 3600.0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Installation:
    """An app installed on an account, for some of its repositories."""

    id: int
    app: App
    account: User
    repos: list[str]  # full names, lower case
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class InstallationToken:
    token: str = field(repr=False)
    installation: Installation
    expires_at: float  # Unix time


class AppRegistry:
    """Every app, installation and installation token of one emulator."""

    def __init__(self, state: ForgeState) -> None:
        self.state = state
        self.apps: dict[int, App] = {}
        self.installations: dict[int, Installation] = {}
        self.tokens: dict[str, InstallationToken] = {}
        self.tokens_made = 0

    # ------------------------------------------------------------ setup

    def register(self, slug: str, owner: User, *, token_lifetime: float = 3600.0,
                 permissions: dict[str, str] | None = None,
                 events: list[str] | None = None) -> App:
        """A new app with a fresh 2048-bit RSA key and its ``<slug>[bot]`` user."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
        with self.state.lock:
            # The bot's user id is not the app id (as on GitHub); its token is never given out.
            bot = User(login=f"{slug}[bot]", id=self.state.next_id(),
                       token=f"unusable-{secrets.token_hex(16)}")
            self.state.users[bot.login.lower()] = bot
            app = App(id=self.state.next_id(), slug=slug,
                      client_id=f"Iv23li{secrets.token_hex(7)}", owner=owner, bot=bot,
                      private_key_pem=pem, public_key=key.public_key(),
                      permissions=dict(permissions or DEFAULT_PERMISSIONS),
                      events=list(events or ["issues", "issue_comment", "pull_request",
                                             "pull_request_review", "status", "check_run",
                                             "check_suite"]),
                      token_lifetime=token_lifetime)
            self.apps[app.id] = app
            return app

    def install(self, app: App, repos: list[Repo]) -> Installation:
        """Install ``app`` on the account owning ``repos``; its bot may write to them."""
        if not repos:
            raise ValueError("an installation needs at least one repository")
        with self.state.lock:
            account = repos[0].owner
            found = next((i for i in self.installations.values()
                          if i.app is app and i.account is account), None)
            if found is None:
                found = Installation(self.state.next_id(), app, account, [])
                self.installations[found.id] = found
            for repo in repos:
                if repo.owner is not account:
                    raise ValueError("an installation covers the repositories of one account")
                if repo.full_name.lower() not in found.repos:
                    found.repos.append(repo.full_name.lower())
                writes = app.permissions.get("contents") == "write"
                repo.permissions[app.bot.login.lower()] = "write" if writes else "read"
            return found

    def uninstall(self, installation: Installation) -> None:
        """Remove the installation: its tokens stop working and its bot loses access."""
        with self.state.lock:
            self.installations.pop(installation.id, None)
            for name in installation.repos:
                repo = self.state.repos.get(name)
                if repo is not None:
                    repo.permissions.pop(installation.app.bot.login.lower(), None)
            for token, record in list(self.tokens.items()):
                if record.installation is installation:
                    del self.tokens[token]

    # ------------------------------------------------------------ authentication

    def verify_jwt(self, token: str) -> App:
        """The app a JWT is signed by; EmulatorError(401) with GitHub's words otherwise."""
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise EmulatorError(401, "A JSON web token could not be decoded") from None
        issuer = str(claims.get("iss", ""))
        app = next((a for a in self.apps.values()
                    if issuer in (str(a.id), a.client_id)), None)
        if app is None:
            raise EmulatorError(401, "'Issuer' claim ('iss') must be an Integer or a client "
                                     "ID of a GitHub App")
        try:
            jwt.decode(token, app.public_key, algorithms=["RS256"],
                       options={"require": ["iat", "exp", "iss"], "verify_exp": False,
                                "verify_iat": False})
        except jwt.PyJWTError:
            raise EmulatorError(401, "A JSON web token could not be decoded") from None
        now = time.time()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or exp <= now:
            raise EmulatorError(401, _EXPIRED)
        if not isinstance(iat, int | float) or iat > now + 60:
            raise EmulatorError(401, "'Issued at' claim ('iat') must be an Integer representing "
                                     "the time that the assertion was issued")
        if exp - iat > MAX_JWT_LIFETIME + 60:
            raise EmulatorError(401, "'Expiration time' claim ('exp') is too far in the future")
        return app

    def token_user(self, token: str) -> tuple[User | None, bool]:
        """(bot, refused) for an installation token: an expired one is refused."""
        record = self.tokens.get(token)
        if record is None:
            return None, False
        if record.expires_at <= time.time():
            return None, True
        return record.installation.app.bot, False

    @staticmethod
    def looks_like_jwt(token: str) -> bool:
        return token.count(".") == 2 and token.startswith("eyJ")

    # ------------------------------------------------------------ tokens

    def make_token(self, installation_id: int, app: App, body: Any) -> InstallationToken:
        """What ``POST /app/installations/{id}/access_tokens`` makes, with GitHub's errors."""
        installation = self.installations.get(installation_id)
        if installation is None or installation.app is not app:
            raise EmulatorError(404, "Not Found")
        if body is not None and not isinstance(body, dict):
            raise EmulatorError(400, "Problems parsing JSON")
        wanted = (body or {}).get("permissions") or {}
        if not isinstance(wanted, dict):
            raise EmulatorError(400, "Problems parsing JSON")
        rank = {"read": 1, "write": 2}
        for name, level in wanted.items():
            if rank.get(str(level), 9) > rank.get(app.permissions.get(name, ""), 0):
                raise EmulatorError(422, "The permissions requested are not granted to this "
                                         "installation.")
        # The new stateless format is ghs_<app id>_<...>: never assume 40 characters.
        record = InstallationToken(f"ghs_{app.id}_{secrets.token_urlsafe(30)}", installation,
                                   time.time() + app.token_lifetime)
        self.tokens[record.token] = record
        self.tokens_made += 1
        return record

    def for_repo(self, app: App, full_name: str) -> Installation:
        found = next((i for i in self.installations.values()
                      if i.app is app and full_name.lower() in i.repos), None)
        if found is None:
            raise EmulatorError(404, "Not Found")
        return found

    def for_account(self, app: App, login: str) -> Installation:
        found = next((i for i in self.installations.values()
                      if i.app is app and i.account.login.lower() == login.lower()), None)
        if found is None:
            raise EmulatorError(404, "Not Found")
        return found


# ---------------------------------------------------------------- REST


class AppRoutes:
    """The app endpoints of the GitHub flavour, shaped as ``app-auth.json`` records them."""

    def __init__(self, registry: AppRegistry, render: Any) -> None:
        self.registry = registry
        self.r = render  # the GitHubRenderer: users and repositories

    def install_on(self, api: Any) -> None:
        """Add the routes to a ``GitHubApi``."""
        for method, pattern, handler in [
            ("GET", "/app", self.get_app),
            ("GET", "/app/installations", self.list_installations),
            ("GET", "/app/installations/{id}", self.get_installation),
            ("POST", "/app/installations/{id}/access_tokens", self.access_token),
            ("GET", "/repos/{owner}/{repo}/installation", self.repo_installation),
            ("GET", "/orgs/{owner}/installation", self.account_installation),
            ("GET", "/users/{owner}/installation", self.account_installation),
            ("GET", "/installation/repositories", self.installation_repositories),
        ]:
            api.add(method, pattern, handler)

    @staticmethod
    def _app(req: Request) -> App:
        if not isinstance(req.app, App):
            raise EmulatorError(401, "A JSON web token could not be decoded")
        return req.app

    def app_json(self, a: App) -> dict[str, Any]:
        stamp = a.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"id": a.id, "slug": a.slug, "client_id": a.client_id,
                "node_id": f"A_{a.id}", "owner": self.r.user(a.owner), "name": a.slug,
                "description": "", "external_url": self.r.root,
                "html_url": f"{self.r.root}/apps/{a.slug}", "created_at": stamp,
                "updated_at": stamp, "permissions": dict(a.permissions),
                "events": list(a.events),
                "installations_count": sum(1 for i in self.registry.installations.values()
                                           if i.app is a)}

    def installation_json(self, i: Installation) -> dict[str, Any]:
        stamp = i.created_at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        api = self.r.api
        return {"id": i.id, "account": self.r.user(i.account), "repository_selection": "selected",
                "access_tokens_url": f"{api}/app/installations/{i.id}/access_tokens",
                "repositories_url": f"{api}/installation/repositories",
                "html_url": f"{self.r.root}/settings/installations/{i.id}",
                "app_id": i.app.id, "app_slug": i.app.slug, "target_id": i.account.id,
                "target_type": "User", "permissions": dict(i.app.permissions),
                "events": list(i.app.events), "created_at": stamp, "updated_at": stamp,
                "single_file_name": None, "has_multiple_single_files": False,
                "single_file_paths": [], "suspended_by": None, "suspended_at": None}

    def get_app(self, req: Request, p: dict[str, str]) -> Reply:
        return Reply(200, self.app_json(self._app(req)))

    def list_installations(self, req: Request, p: dict[str, str]) -> Reply:
        app = self._app(req)
        return Reply(200, [self.installation_json(i)
                           for i in self.registry.installations.values() if i.app is app])

    def get_installation(self, req: Request, p: dict[str, str]) -> Reply:
        found = self.registry.installations.get(int(p["id"]))
        if found is None or found.app is not self._app(req):
            raise EmulatorError(404, "Not Found")
        return Reply(200, self.installation_json(found))

    def access_token(self, req: Request, p: dict[str, str]) -> Reply:
        record = self.registry.make_token(int(p["id"]), self._app(req), req.body)
        app = record.installation.app
        expires = datetime.fromtimestamp(record.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return Reply(201, {"token": record.token, "expires_at": expires,
                           "permissions": dict(app.permissions),
                           "repository_selection": "selected"})

    def repo_installation(self, req: Request, p: dict[str, str]) -> Reply:
        found = self.registry.for_repo(self._app(req), f"{p['owner']}/{p['repo']}")
        return Reply(200, self.installation_json(found))

    def account_installation(self, req: Request, p: dict[str, str]) -> Reply:
        found = self.registry.for_account(self._app(req), p["owner"])
        return Reply(200, self.installation_json(found))

    def installation_repositories(self, req: Request, p: dict[str, str]) -> Reply:
        user = req.user
        installation = next((i for i in self.registry.installations.values()
                             if user is not None and i.app.bot is user), None)
        if installation is None:
            raise EmulatorError(403, "You must authenticate with an installation access "
                                     "token in order to list repositories for an installation.")
        repos = [self.registry.state.repos[name] for name in installation.repos
                 if name in self.registry.state.repos]
        return Reply(200, {"total_count": len(repos), "repository_selection": "selected",
                           "repositories": [self.r.repo(r, user) for r in repos]})
