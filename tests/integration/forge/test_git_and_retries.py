"""Real git over the emulator's smart HTTP, retries under injected outages, and the CI hook."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from runner.forge.base import ForgeError, PushCredentials, RetryPolicy, ReviewComment
from runner.testing.forge import ForgeEmulator
from tests.contract.forge.conftest import make_adapter

FAST = RetryPolicy(retries=3, backoff=0.01, max_wait=2.0)


def _git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False,
                          env={**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})})


@pytest.fixture(params=["github", "forgejo"])
def emu(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    with ForgeEmulator(request.param, tmp_path / "forge") as forge:
        forge.add_user("maintainer")
        forge.add_user("bot")
        forge.add_user("reader")
        forge.create_repo("maintainer/app", files={"README.md": "hi\n"})
        forge.grant("maintainer/app", "bot", "write")
        forge.grant("maintainer/app", "reader", "read")
        yield forge


def _clone(emu: ForgeEmulator, where: Path) -> Path:
    done = _git("clone", "--quiet", emu.clone_url("maintainer/app"), str(where))
    assert done.returncode == 0, done.stderr
    _git("-c", "user.name=t", "-c", "user.email=t@e", "commit", "--quiet", "--allow-empty",
         "-m", "change", cwd=where)
    return where


def test_push_with_a_token_works_and_without_one_is_refused(emu: ForgeEmulator,
                                                            tmp_path: Path) -> None:
    work = _clone(emu, tmp_path / "work")
    refused = _git("push", "origin", "HEAD:refs/heads/feature", cwd=work)
    assert refused.returncode != 0 and emu.branch_sha("maintainer/app", "feature") is None

    reader = PushCredentials("reader", emu.state.user("reader").token)
    denied = _git("-c", f"http.extraheader={reader.header}", "push", "origin",
                  "HEAD:refs/heads/feature", cwd=work)
    assert denied.returncode != 0 and "403" in denied.stderr

    creds = make_adapter(emu.flavour, emu, emu.state.user("bot").token).push_credentials()
    pushed = _git("push", "origin", "HEAD:refs/heads/feature", cwd=work, env=creds.git_env())
    assert pushed.returncode == 0, pushed.stderr
    head = _git("rev-parse", "HEAD", cwd=work).stdout.strip()
    assert emu.branch_sha("maintainer/app", "feature") == head
    config = (work / ".git" / "config").read_text()
    assert emu.state.user("bot").token not in config
    assert base64.b64encode(emu.state.user("bot").token.encode()).decode() not in config


def test_a_push_moves_the_pull_request_head(emu: ForgeEmulator) -> None:
    emu.push_branch("maintainer/app", "feature", {"a": "1"}, as_user="bot")
    forge = make_adapter(emu.flavour, emu, emu.state.user("bot").token)
    pr = forge.find_or_create_pull("maintainer/app", "feature", "main", "t", "b")
    newer = emu.push_branch("maintainer/app", "feature", {"a": "2"}, as_user="bot")
    assert forge.get_pull("maintainer/app", pr.number).head_sha == newer != pr.head_sha


def test_429_with_retry_after_and_a_502_are_retried(emu: ForgeEmulator) -> None:
    number = emu.open_issue("maintainer/app", "t", as_user="maintainer")
    forge = make_adapter(emu.flavour, emu, emu.state.user("bot").token, FAST)
    emu.fail_next(1, status=429, retry_after=1)
    started = time.monotonic()
    assert forge.get_issue("maintainer/app", number).title == "t"
    assert time.monotonic() - started >= 0.9  # Retry-After (whole seconds) was honoured
    emu.fail_next(2, status=502)
    assert forge.get_issue("maintainer/app", number).title == "t"
    statuses = [x.status for x in emu.exchanges]
    assert statuses.count(429) == 1 and statuses.count(502) == 2


def test_a_persistent_500_fails_clearly_after_bounded_retries(emu: ForgeEmulator) -> None:
    number = emu.open_issue("maintainer/app", "t", as_user="maintainer")
    forge = make_adapter(emu.flavour, emu, emu.state.user("bot").token, FAST)
    emu.fail_for(30, status=500)
    with pytest.raises(ForgeError, match=r"500 .*after 3 retries"):
        forge.get_issue("maintainer/app", number)
    assert [x.status for x in emu.exchanges].count(500) == 4  # one try and three retries


def test_ci_hook_runs_the_command_on_the_pushed_sha_and_reports(emu: ForgeEmulator) -> None:
    emu.configure_ci("maintainer/app", "test -f ok && echo all good", context="ci/tests")
    emu.push_branch("maintainer/app", "feature", {"a": "1"}, as_user="bot")
    forge = make_adapter(emu.flavour, emu, emu.state.user("bot").token)
    forge.find_or_create_pull("maintainer/app", "feature", "main", "t", "b")

    failing = emu.push_branch("maintainer/app", "feature", {"b": "1"}, as_user="bot")
    emu.wait_idle()
    ctx = forge.ci_state("maintainer/app", failing).context("ci/tests")
    assert ctx is not None and ctx.state == "failure"
    states = [s.state for s in emu.repo("maintainer/app").statuses if s.sha == failing]
    assert states == ["pending", "failure"]

    passing = emu.push_branch("maintainer/app", "feature", {"ok": "yes"}, as_user="bot")
    emu.wait_idle()
    ctx = forge.ci_state("maintainer/app", passing).context("ci/tests")
    assert ctx is not None and ctx.state == "success"
    assert "all good" in httpx.get(ctx.url).text


def test_the_forge_settings_shape_the_adapter(emu: ForgeEmulator, tmp_path: Path) -> None:
    """`retries`, `timeout` and `git_url` under forges.<name> reach the adapter."""
    from runner.config import Settings
    from runner.forge import make_forge

    # Another spelling of the same host, as a separate git host would be.
    git_url = emu.url.replace("127.0.0.1", "localhost")
    settings = Settings.model_validate({"forges": {"emu": {
        "kind": emu.flavour, "base_url": emu.base_url, "token_env": "EMU_TOKEN",
        "retries": 0, "timeout": "5s", "git_url": git_url + "/"}}})
    forge = make_forge(settings, "emu", environ={"EMU_TOKEN": emu.state.user("bot").token})
    url = forge.clone_url("maintainer/app")
    assert url == f"{git_url}/maintainer/app.git"
    cloned = _git("clone", "--quiet", url, str(tmp_path / "work"))
    assert cloned.returncode == 0, cloned.stderr
    assert (tmp_path / "work" / "README.md").read_text() == "hi\n"

    number = emu.open_issue("maintainer/app", "t", as_user="maintainer")
    emu.fail_next(1, status=502)
    with pytest.raises(ForgeError, match="502"):  # retries: 0, so the one 502 is final
        forge.get_issue("maintainer/app", number)
    assert [x.status for x in emu.exchanges].count(502) == 1


def test_a_502_after_the_forge_acted_never_leaves_two(emu: ForgeEmulator) -> None:
    """The forge made the comment (the review, the PR, the status), then a proxy answered 502:
    the retried operation finds what the first attempt made instead of making it again."""
    repo = "maintainer/app"
    forge = make_adapter(emu.flavour, emu, emu.state.user("bot").token, FAST)
    number = emu.open_issue(repo, "t", as_user="maintainer")

    emu.fail_after_acting(1)
    forge.upsert_comment(repo, number, "orchestrator:status", "Run queued")
    assert [c.body for c in emu.issue(repo, number).comments] == [
        "Run queued\n\n<!-- orchestrator:status -->"]

    sha = emu.push_branch(repo, "feature", {"a.py": "x = 1\n"}, as_user="bot")
    emu.fail_after_acting(1)
    pr = forge.find_or_create_pull(repo, "feature", "main", "Fix", "Closes #1")
    assert len(emu.repo(repo).pulls()) == 1

    emu.fail_after_acting(1)
    review = forge.post_review(repo, pr.number, "One finding", [ReviewComment("a.py", 1, "x")],
                               sha)
    reviews = emu.issue(repo, pr.number).pull.reviews  # type: ignore[union-attr]
    assert [(r.id, r.body) for r in reviews] == [(review, "One finding")]

    emu.fail_after_acting(1)
    forge.set_status(repo, sha, "orchestrator/ai-review", "success", "approved")
    made = [s for s in emu.repo(repo).statuses if s.context == "orchestrator/ai-review"]
    assert len(made) == 1
    assert [x.status for x in emu.exchanges].count(502) == 4  # each write did fail once
