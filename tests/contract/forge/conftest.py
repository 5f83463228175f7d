"""Fixtures: a forge emulator of each flavour whose every API answer is checked against the
published contracts, and the runner's adapter for it, driven through the real client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runner.forge.base import Forge, RetryPolicy
from runner.forge.forgejo import ForgejoForge
from runner.forge.github import GitHubForge
from runner.forge.github_app import AppKey
from runner.testing.forge import Exchange, ForgeEmulator
from runner.testing.forge_apps import App
from runner.testing.forge_state import User
from tests.conftest import missing
from tests.contract.forge.schemas import (
    ContractViolation,
    contracts_dir,
    forgejo_contract,
    github_contract,
    recorded_app_contract,
    recorded_review_contract,
)

FLAVOURS = ["github", "github-app", "forgejo"]  # github-app: GitHub, as a GitHub App
REPO = "maintainer/app"
TOKEN_ENV = {"github": "GITHUB_TOKEN", "forgejo": "FORGEJO_TOKEN"}
UNDOCUMENTED_FAULTS = {429, 500, 502, 503, 504}  # injected outages, not API answers


@pytest.fixture(scope="session")
def contracts() -> Path:
    """The shared contracts folder (../shared/contracts beside the clone)."""
    found = contracts_dir()
    if found is None:
        missing("the forge contracts are not at ../shared/contracts beside the clone "
                "(or $ORCHESTRATOR_CONTRACTS); they come with the project's CI checkout")
    assert found is not None
    return found


class ContractChecker:
    """An emulator observer: validates each answer, remembers every violation."""

    def __init__(self, flavour: str, root: Path) -> None:
        self.flavour = flavour
        self.root = root
        self.checked = 0
        self.violations: list[str] = []

    def __call__(self, x: Exchange) -> None:
        if x.status in UNDOCUMENTED_FAULTS and x.json() and "emulated outage" in str(x.json()):
            return
        if x.path == "/api/graphql":
            return  # GraphQL is not REST; the subset does not describe it
        if x.status == 304:  # as recorded (rate-limit.json): no body, the strong etag
            if x.body or not x.headers.get("ETag", "").startswith('"'):
                self.violations.append(f"{x.method} {x.path} -> 304 with a body or no etag")
            self.checked += 1
            return
        if "secondary rate limit" in str(x.json()):
            return  # an injected limit: GitHub's basic error, as recorded
        try:
            if self.flavour == "github" and recorded_app_contract(self.root).knows(
                    x.method, x.path):
                recorded_app_contract(self.root).validate(x.method, x.path, x.status, x.json())
            elif self.flavour == "github" and recorded_review_contract(self.root).knows(
                    x.method, x.path):
                recorded_review_contract(self.root).validate(x.method, x.path, x.status,
                                                             x.json())
            elif self.flavour == "github":
                contract = github_contract(self.root)
                if not contract.knows(x.method, x.path):
                    raise ContractViolation(f"{x.method} {x.path} is not in rest-subset.json")
                contract.validate(x.method, x.path, x.query, x.status, x.body)
            else:
                forgejo_contract(self.root).validate(x.method, x.path, x.status, x.json())
            self.checked += 1
        except ContractViolation as exc:
            self.violations.append(str(exc))


@dataclass
class World:
    """An emulated forge with a maintainer's repository and the bot's adapter."""

    flavour: str
    emulator: ForgeEmulator
    forge: Forge
    maintainer: User
    bot: User
    checker: ContractChecker
    repo: str = REPO
    extra: dict[str, object] = field(default_factory=dict)
    app: App | None = None

    @property
    def bot_login(self) -> str:
        """Who the adapter acts as: the bot account, or the App's ``<slug>[bot]``."""
        return self.app.bot.login if self.app is not None else self.bot.login

    def adapter(self, token: str, retry: RetryPolicy | None = None) -> Forge:
        return make_adapter(self.flavour, self.emulator, token, retry)


def make_app_adapter(emulator: ForgeEmulator, app: App,
                     retry: RetryPolicy | None = None) -> GitHubForge:
    """The GitHub adapter authenticated as ``app`` (by its id), retries off unless asked for."""
    return GitHubForge(app_key=AppKey(str(app.id), app.private_key_pem, "the test's key"),
                       base_url=emulator.base_url, retry=retry or RetryPolicy.off(),
                       throttle=False)


def make_adapter(flavour: str, emulator: ForgeEmulator, token: str,
                 retry: RetryPolicy | None = None) -> Forge:
    """The runner's adapter for the emulator, retries off unless asked for."""
    policy = retry or RetryPolicy.off()
    if flavour == "github":
        return GitHubForge(token, base_url=emulator.base_url, token_env=TOKEN_ENV[flavour],
                           retry=policy, throttle=False)
    return ForgejoForge(token, base_url=emulator.base_url, token_env=TOKEN_ENV[flavour],
                        bot_user="orchestrator-bot", retry=policy)


@pytest.fixture(params=FLAVOURS)
def world(request: pytest.FixtureRequest, tmp_path: Path, contracts: Path) -> Iterator[World]:
    flavour = "forgejo" if request.param == "forgejo" else "github"
    with ForgeEmulator(flavour, tmp_path / "forge") as emulator:
        checker = ContractChecker(flavour, contracts)
        emulator.observers.append(checker)
        maintainer = emulator.add_user("maintainer")
        bot = emulator.add_user("orchestrator-bot")
        emulator.add_user("contributor")
        emulator.create_repo(REPO, files={"README.md": "# app\n", "app.py": "print('hi')\n"})
        # Forgejo lets only repository admins read other users' permissions.
        emulator.grant(REPO, "orchestrator-bot", "admin")
        emulator.grant(REPO, "contributor", "write")
        app = None
        if request.param == "github-app":
            app = emulator.add_app("orchestrator")
            emulator.install_app(app, REPO)
            # As the bot account above: admin, so the suite's permission reads work alike.
            emulator.grant(REPO, app.bot.login, "admin")
            forge: Forge = make_app_adapter(emulator, app)
        else:
            forge = make_adapter(flavour, emulator, bot.token)
        yield World(flavour, emulator, forge, maintainer, bot, checker, app=app)
        assert not checker.violations, "\n".join(checker.violations)
