"""GitHub App authentication: the adapter as an App against the emulator (every answer held to
the recordings in ``github/recorded-pygithub/app-auth.json``), and against those recordings
replayed as they are."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from runner.forge.base import ForgeAuthError, NotFound
from runner.forge.github_app import AppKey, GitHubApp
from runner.forge.webhooks import handle_delivery, sign
from runner.testing.forge import ForgeEmulator
from runner.testing.forge_apps import App
from tests.contract.forge.conftest import ContractChecker, make_app_adapter
from tests.contract.forge.test_contracts import _Replay

REPO = "maintainer/app"


def _pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def emu(tmp_path: Path, contracts: Path) -> Iterator[ForgeEmulator]:
    with ForgeEmulator("github", tmp_path / "forge") as forge:
        checker = ContractChecker("github", contracts)
        forge.observers.append(checker)
        forge.add_user("maintainer")
        forge.create_repo(REPO, files={"README.md": "hi\n"})
        forge.create_repo("maintainer/elsewhere", files={"README.md": "no\n"}, private=True)
        yield forge
        assert not checker.violations, "\n".join(checker.violations)


def _app(emu: ForgeEmulator, lifetime: float = 3600.0) -> App:
    app = emu.add_app("orchestrator", token_lifetime=lifetime)
    emu.install_app(app, REPO)
    return app


def _git(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(["git", *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})})


def test_the_app_acts_as_its_bot(emu: ForgeEmulator) -> None:
    app = _app(emu)
    forge = make_app_adapter(emu, app)
    assert forge.bot_login == "orchestrator[bot]"
    number = emu.open_issue(REPO, "t", as_user="maintainer")
    comment = forge.upsert_comment(REPO, number, "orchestrator:status", "Run queued")
    assert comment.author == "orchestrator[bot]"
    maintainer = {"Authorization": f"token {emu.state.user('maintainer').token}"}
    raw = httpx.get(f"{emu.api_url}/repos/{REPO}/issues/{number}/comments",
                    headers=maintainer).json()
    assert raw[0]["user"]["type"] == "Bot" and raw[0]["user"]["id"] != app.id
    # The JWT reached the App endpoints, the installation token everything else.
    auth = {x.path: x.status for x in emu.exchanges}
    assert auth[f"/repos/{REPO}/installation"] == 200
    assert auth[f"/app/installations/{emu.apps.for_repo(app, REPO).id}/access_tokens"] == 201


def test_tokens_are_renewed_before_they_expire_for_the_api_and_git(emu: ForgeEmulator,
                                                                  tmp_path: Path) -> None:
    app = _app(emu, lifetime=2.0)
    forge = make_app_adapter(emu, app)
    number = emu.open_issue(REPO, "t", as_user="maintainer")
    first = forge.push_credentials(REPO).token
    assert forge.get_issue(REPO, number).title == "t"
    time.sleep(2.2)  # the first token has expired
    old = httpx.get(f"{emu.api_url}/repos/{REPO}/issues/{number}",
                    headers={"Authorization": f"token {first}"})
    assert old.status_code == 401  # an expired installation token is refused
    assert forge.get_issue(REPO, number).title == "t"  # renewed on the way
    fresh = forge.push_credentials(REPO)
    assert fresh.token != first
    work = tmp_path / "work"
    assert _git("clone", "--quiet", emu.clone_url(REPO), str(work)).returncode == 0
    _git("-C", str(work), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "--quiet",
         "--allow-empty", "-m", "change")
    pushed = _git("-C", str(work), "push", "origin", "HEAD:refs/heads/feature",
                  env=fresh.git_env())
    assert pushed.returncode == 0, pushed.stderr
    stale = _git("-C", str(work), "push", "origin", "HEAD:refs/heads/other",
                 env={"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraheader",
                      "GIT_CONFIG_VALUE_0": fresh.header.replace(
                          fresh.header.split()[-1], _basic(first))})
    assert stale.returncode != 0  # git with the expired token is refused too
    assert emu.apps.tokens_made >= 2
    # The adapter itself never sent a dead token: the one 401 is the test's own request.
    assert [x.status for x in emu.exchanges].count(401) == 1


def _basic(token: str) -> str:
    import base64

    return base64.b64encode(f"x-access-token:{token}".encode()).decode()


def _jwt(key: str, iss: str, *, iat: float | None = None, exp: float | None = None) -> str:
    now = time.time()
    return jwt.encode({"iat": int(iat if iat is not None else now - 60),
                       "exp": int(exp if exp is not None else now + 300), "iss": iss},
                      key, algorithm="RS256")


@pytest.mark.parametrize("case", ["expired", "foreign key", "too long", "unknown app"])
def test_a_bad_jwt_is_refused_as_github_refuses_it(emu: ForgeEmulator, case: str) -> None:
    app = _app(emu)
    now = time.time()
    token = {
        "expired": lambda: _jwt(app.private_key_pem, str(app.id), iat=now - 700, exp=now - 10),
        "foreign key": lambda: _jwt(_pem(), str(app.id)),
        "too long": lambda: _jwt(app.private_key_pem, str(app.id), exp=now + 3600),
        "unknown app": lambda: _jwt(app.private_key_pem, "999999"),
    }[case]()
    answer = httpx.get(f"{emu.api_url}/app", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401
    if case == "expired":
        assert answer.json()["message"].startswith("'Expiration time' claim ('exp')")
    good = httpx.get(f"{emu.api_url}/app", headers={
        "Authorization": f"Bearer {_jwt(app.private_key_pem, app.client_id)}"})
    assert good.status_code == 200 and good.json()["slug"] == "orchestrator"  # client id as iss


def test_a_repository_without_the_app_says_to_install_it(emu: ForgeEmulator) -> None:
    forge = make_app_adapter(emu, _app(emu))
    with pytest.raises(NotFound, match="not installed"):
        forge.get_issue("maintainer/elsewhere", 1)
    with pytest.raises(NotFound, match="not installed"):
        forge.push_credentials("maintainer/elsewhere")


def test_a_wrong_key_is_an_auth_error_that_says_what_to_check(emu: ForgeEmulator) -> None:
    app = _app(emu)
    forge = make_app_adapter(emu, app)
    forge.app.key = AppKey(str(app.id), _pem(), "$APP_KEY")  # type: ignore[union-attr]
    forge.app.integration = GitHubApp(forge.app.key, base_url=emu.base_url,  # type: ignore[union-attr]
                                      client_options={}).integration
    with pytest.raises(ForgeAuthError, match=r"JWT.*\$APP_KEY"):
        forge.get_issue(REPO, 1)


def test_deliveries_to_an_app_carry_the_installation_and_are_accepted(
        emu: ForgeEmulator, contracts: Path) -> None:
    app = _app(emu)
    emu.add_webhook(REPO, None, "s3cret")
    number = emu.open_issue(REPO, "t", as_user="maintainer")
    emu.label(REPO, number, "orchestrator", as_user="maintainer")
    delivery = emu.deliveries[-1]
    assert delivery.json()["installation"]["id"] == emu.apps.for_repo(app, REPO).id
    result = handle_delivery(delivery.headers, delivery.body, "s3cret")
    assert result.accepted and result.event is not None and result.event.number == number
    examples = contracts / "github" / "webhook-examples"
    for event, name, acted in [
            ("pull_request", "ready_for_review.with-installation.payload.json", True),
            ("installation", "created.payload.json", False),
            ("installation_repositories", "added.payload.json", False)]:
        body = (examples / event / name).read_bytes()
        headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": f"d-{event}",
                   "X-Hub-Signature-256": f"sha256={sign('s3cret', body)}"}
        result = handle_delivery(headers, body, "s3cret")
        assert result.status == 202 and result.accepted is acted, (event, result.message)


# ---------------------------------------------------------------- recorded answers


@pytest.fixture
def recorded_app(contracts: Path) -> Iterator[str]:
    exchanges = json.loads((contracts / "github" / "recorded-pygithub" / "app-auth.json")
                           .read_text())
    entries: list[dict[str, Any]] = []
    for x in exchanges:
        if x["request"].get("host"):
            continue
        entries.append({"method": x["request"]["method"].lower(), "path": x["request"]["path"],
                        "status": x["response"]["status"], "response": x["response"]["body"],
                        "headers": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Replay)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    server.RequestHandlerClass = type("Replay", (_Replay,), {"entries": entries, "base": base})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base
    server.shutdown()
    server.server_close()


def test_recorded_app_answers_parse_through_the_app_support(recorded_app: str) -> None:
    app = GitHubApp(AppKey("75269", _pem()), base_url=recorded_app, client_options={})
    assert app.bot_login == "pygithubtest[bot]"
    assert app.installation_id("ammarmallik/test-runner") == 30614431
    token = app.token("ammarmallik/test-runner")
    assert token.startswith("ghs_") and len(token) == 40
