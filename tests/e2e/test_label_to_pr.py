"""Label to pull request, and /kill: the whole product on loopback, with real Docker and git.

Each test builds a world: the forge emulator (GitHub or Forgejo flavour) with a sample
repository whose test fails, the LLM emulator playing the agent, and a runner receiving the
forge's signed webhooks over HTTP.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from runner.model import RunState
from runner.testing.demo import (
    MAINTAINER,
    READER,
    REPO,
    TEST_COMMAND,
    DemoWorld,
    slow_agent,
)
from tests.support import (
    containers_of,
    pulls_from,
    status_comments,
    two_step_agent,
    worktrees_left,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]
FLAVOURS = ["github", "forgejo"]


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest, sandbox_image: str) -> str:
    return str(request.param)


@pytest.mark.parametrize("flavour_", FLAVOURS)
def test_label_gives_a_green_pull_request(tmp_path: Path, sandbox_image: str, docker_client,
                                          flavour_: str) -> None:
    with DemoWorld(tmp_path, flavour=flavour_) as world:  # type: ignore[arg-type]
        issue = world.open_issue()
        run = world.wait_finished(issue)
        assert run.state is RunState.SUCCEEDED, run.reason
        pr = world.forge.issue(REPO, run.pr_number or 0)
        assert pr.pull is not None and not pr.pull.draft
        assert f"Closes #{issue}" in pr.body
        # A reviewer reads what the change does, how it was checked, and what it cost.
        assert pr.title == "Fix add() to return the sum"
        assert "> Fix add() to return the sum" in pr.body
        assert "`python3 test_calc.py`: ok" in pr.body and "`ci/tests` success" in pr.body
        assert "AI review: approve" in pr.body and "Cost: $" in pr.body
        assert pr.pull.head == f"orchestrator/issue-{issue}"
        # the fix is on the branch, made by the bot
        head = pr.pull.head_sha
        statuses = world.forge.state.latest_statuses(world.forge.repo(REPO), head)
        assert {s.context: s.state for s in statuses}["ci/tests"] == "success"
        comments = status_comments(world.forge, issue)
        assert len(comments) == 1
        assert "**succeeded**" in comments[0] and "[x] Done" in comments[0]
        assert run.pr_url in comments[0]
        # nothing left behind
        assert containers_of(docker_client, run.id) == []
        assert worktrees_left(tmp_path / "data") == []
        kinds = [e.kind for e in world.store.events(run.id, limit=1000)]
        assert kinds.index("agent.tool") < kinds.index("pushed") < kinds.index("ci")


def test_failing_ci_goes_back_to_the_agent(tmp_path: Path, sandbox_image: str,
                                           flavour: str) -> None:
    with DemoWorld(tmp_path, flavour=flavour, agent=two_step_agent()) as world:  # type: ignore[arg-type]
        world.forge.configure_ci(REPO, f"{TEST_COMMAND} && python3 -c 'from calc import sub; "
                                 "assert sub(5, 3) == 2'", context="ci/tests")
        issue = world.open_issue()
        run = world.wait_finished(issue)
        assert run.state is RunState.SUCCEEDED, run.reason
        assert run.iteration == 2
        events = world.store.events(run.id, limit=1000)
        ci_results = [e.data["state"] for e in events if e.kind == "ci"]
        assert ci_results == ["failure", "success"]
        iteration = next(e for e in events if e.kind == "iteration")
        assert iteration.data["failures"] == ["ci:ci/tests"]
        # the second agent run was told what failed, with the CI log
        prompts = [x.request.first_user_text() for x in world.llm.exchanges
                   if "what failed last time" in x.request.first_user_text()]
        assert prompts and "ci/tests" in prompts[0] and "ImportError" in prompts[0]
        assert len(pulls_from(world.forge, f"orchestrator/issue-{issue}")) == 1
        # The description follows the iterations: the summary of the last, and the history.
        pr = world.forge.issue(REPO, run.pr_number or 0)
        assert pr.title == "Added sub()" and "> Added sub()" in pr.body
        assert "- Iteration 2: after ci:ci/tests" in pr.body
        assert pr.body.count("- Pushed `") == 2


def test_kill_from_a_writer_stops_the_run_within_seconds(tmp_path: Path, docker_client,
                                                        flavour: str) -> None:
    with DemoWorld(tmp_path, flavour=flavour, agent=slow_agent()) as world:  # type: ignore[arg-type]
        issue = world.open_issue()
        run = world.wait_state(issue, RunState.RUNNING)
        world.wait_for(lambda: any(e.kind == "agent.turn" for e in
                                   world.store.events(run.id, limit=1000)), 60, "agent working")
        world.wait_for(lambda: containers_of(docker_client, run.id), 30, "container")
        started = time.monotonic()
        world.forge.comment(REPO, issue, "/kill wrong approach", as_user=MAINTAINER)
        run = world.wait_state(issue, RunState.CANCELLED, timeout=30)
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, f"cancelled after {elapsed:.2f}s"
        assert (run.killed_by, run.reason) == (MAINTAINER, "wrong approach")
        run = world.wait_finished(issue)
        assert containers_of(docker_client, run.id) == []
        assert worktrees_left(tmp_path / "data") == []
        killed = [e for e in world.store.events(run.id, limit=1000) if e.kind == "killed"]
        assert killed[0].data["actor"] == MAINTAINER
        assert killed[0].data["state"] == "running"
        comment = status_comments(world.forge, issue)[0]
        assert f"Killed by @{MAINTAINER}" in comment and "wrong approach" in comment
        labels = [label.name for label in world.forge.issue(REPO, issue).labels]
        assert "orchestrator" not in labels  # so it does not restart by itself


def test_kill_from_a_reader_is_ignored(tmp_path: Path, flavour: str) -> None:
    with DemoWorld(tmp_path, flavour=flavour, agent=slow_agent(20)) as world:  # type: ignore[arg-type]
        issue = world.open_issue()
        run = world.wait_state(issue, RunState.RUNNING)
        world.forge.comment(REPO, issue, "/kill", as_user=READER)
        world.wait_for(lambda: any(e.kind == "kill_rejected" for e in
                                   world.store.events(run.id, limit=1000)), 30, "rejection")
        assert world.run_for(issue).state not in (RunState.CANCELLED,)  # type: ignore[union-attr]
        replies = [c.body for c in world.forge.issue(REPO, issue).comments
                   if "rejected-kill" in c.body]
        assert len(replies) == 1 and f"@{READER}" in replies[0]
        world.forge.comment(REPO, issue, "/kill", as_user=MAINTAINER)
        assert world.wait_finished(issue).state is RunState.CANCELLED


def test_duplicate_webhooks_make_one_run(tmp_path: Path, flavour: str) -> None:
    with DemoWorld(tmp_path, flavour=flavour) as world:  # type: ignore[arg-type]
        issue = world.open_issue()
        world.forge.wait_idle()
        labelled = [d for d in world.forge.deliveries if '"labeled"' in d.body.decode()
                    or "label_updated" in d.body.decode()]
        assert labelled
        for _ in range(3):
            assert world.forge.redeliver(labelled[-1]) == 200  # seen: no second effect
        world.forge.label(REPO, issue, "orchestrator", as_user=MAINTAINER)  # again: no-op
        run = world.wait_finished(issue)
        assert run.state is RunState.SUCCEEDED, run.reason
        assert len(world.store.list_runs(repo=REPO)) == 1
        assert len(pulls_from(world.forge, f"orchestrator/issue-{issue}")) == 1
        assert len(status_comments(world.forge, issue)) == 1


def test_a_run_of_a_repository_no_longer_configured_fails_with_the_reason(
        tmp_path: Path, sandbox_image: str) -> None:
    with DemoWorld(tmp_path) as world:
        ghost, _ = world.store.create_run("ghost/repo", 1)
        run = world.wait_for(lambda: (r := world.store.get_run(ghost.id)).terminal and r, 30,
                             "the ghost run to end")
        assert run.state is RunState.FAILED
        assert run.reason == "ghost/repo is no longer under `repos` in the configuration"
