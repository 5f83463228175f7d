"""The request budget on GitHub: periodic reads are conditional (a 304 costs nothing), a spent
budget or a secondary limit is waited out instead of failing, and /metrics-ready figures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.forge.base import RetryPolicy
from runner.forge.budget import metric_lines
from runner.forge.github import GitHubForge
from runner.forge.retry import audit_waits
from runner.testing.forge import ForgeEmulator
from tests.contract.forge.conftest import make_adapter, make_app_adapter

REPO = "maintainer/app"
PATIENT = RetryPolicy(retries=4, backoff=0.01, max_wait=1.0, rate_limit_wait=10.0)


@pytest.fixture(params=["token", "app"])
def gh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ForgeEmulator,
                                                                         GitHubForge]]:
    with ForgeEmulator("github", tmp_path / "forge") as emu:
        emu.add_user("maintainer")
        bot = emu.add_user("bot")
        emu.create_repo(REPO, files={"README.md": "hi\n"})
        emu.grant(REPO, "bot", "write")
        if request.param == "app":
            app = emu.add_app("orchestrator")
            emu.install_app(app, REPO)
            forge = make_app_adapter(emu, app, PATIENT)
        else:
            forge = make_adapter("github", emu, bot.token, PATIENT)  # type: ignore[assignment]
        yield emu, forge  # type: ignore[misc]


def test_unchanged_periodic_reads_are_304s_that_spend_nothing(gh: tuple[ForgeEmulator,
                                                                         GitHubForge]) -> None:
    emu, forge = gh
    first = emu.open_issue(REPO, "one", as_user="maintainer", labels=["orchestrator"])
    sha = emu.push_branch(REPO, "b", {"a": "1"}, as_user="maintainer")
    emu.set_status(REPO, sha, "pending", "ci")
    reads = [lambda: [i.number for i in forge.list_issues(REPO, "orchestrator")],
             lambda: forge.ci_state(REPO, sha).state,
             lambda: [e.label for e in forge.label_events(REPO, first)],
             lambda: [c.body for c in forge.list_comments(REPO, first)]]
    answers = [read() for read in reads]
    charged = emu.budget.charged
    assert [read() for read in reads] == answers  # the same, from the cache
    assert emu.budget.charged == charged  # not one request of the budget
    assert forge.stats.not_modified >= 5 and emu.budget.not_modified >= 5

    second = emu.open_issue(REPO, "two", as_user="maintainer", labels=["orchestrator"])
    emu.set_status(REPO, sha, "success", "ci")
    assert sorted(reads[0]()) == sorted([first, second])  # changed: a 200 with the news
    assert reads[1]() == "success"


def test_a_spent_budget_is_waited_out_and_audited(gh: tuple[ForgeEmulator,
                                                            GitHubForge]) -> None:
    emu, forge = gh
    number = emu.open_issue(REPO, "t", as_user="maintainer")
    emu.set_budget(limit=6, reset_in=2.0)
    audited: list[dict[str, object]] = []
    started = time.monotonic()
    with audit_waits(audited.append):
        for i in range(8):  # more than the budget allows in one window
            forge.upsert_comment(REPO, number, f"orchestrator:n{i}", f"note {i}")
    assert time.monotonic() - started >= 1.0  # it waited for the reset
    assert len(emu.issue(REPO, number).comments) == 8  # nothing failed, nothing twice
    assert any(x.status == 403 for x in emu.exchanges)
    assert audited and audited[0]["rate_limited"] is True
    assert forge.stats.waits >= 1 and forge.stats.limit == 6
    lines = "\n".join(metric_lines({"gh": forge}))
    assert 'orchestrator_forge_budget_limit{forge="gh"} 6' in lines
    assert 'orchestrator_forge_rate_limit_waits_total{forge="gh"}' in lines


def test_a_secondary_limit_is_waited_out(gh: tuple[ForgeEmulator, GitHubForge]) -> None:
    emu, forge = gh
    number = emu.open_issue(REPO, "t", as_user="maintainer")
    emu.secondary_limit_next(1, retry_after=1)
    started = time.monotonic()
    assert forge.get_issue(REPO, number).title == "t"
    assert time.monotonic() - started >= 0.9  # its Retry-After, not our 10 ms backoff
    assert forge.stats.waits == 1
