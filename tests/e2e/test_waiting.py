"""Runs that wait hold nothing: CI waits give back their worker slot and container, CI events
wake the run they concern, and waiting runs are claimed by priority."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.model import RunState
from runner.testing.demo import (
    CI_CONTEXT,
    MAINTAINER,
    READER,
    REPO,
    TEST_COMMAND,
    DemoWorld,
    fixing_agent,
    slow_agent,
)
from runner.testing.llm import Reply, Request
from tests.support import containers_of, pulls_from, status_comments

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_runs_waiting_on_ci_give_back_their_one_slot_and_their_container(
        tmp_path: Path, sandbox_image: str, docker_client: Any) -> None:
    settings = {"limits": {"max_concurrent": 1, "per_repo": 5, "lease_ttl": "5s",
                           "ci_timeout": "5m"}}
    with DemoWorld(tmp_path, settings=settings) as world:
        world.forge.configure_ci(REPO, f"sleep 25 && {TEST_COMMAND}", context=CI_CONTEXT)
        issues = [world.open_issue(title=f"wait {i}") for i in range(3)]

        def all_waiting() -> bool:
            runs = [world.run_for(issue) for issue in issues]
            return all(r is not None and r.state is RunState.GATING and r.waiting
                       for r in runs)

        # One worker slot, three runs: all three wait on CI at once (a waiting run holds no
        # slot), and none of them keeps a container meanwhile.
        world.wait_for(all_waiting, 150, "three runs waiting on CI at once")
        for issue in issues:
            run = world.run_for(issue)
            assert run is not None and containers_of(docker_client, run.id) == []
        for issue in issues:
            run = world.wait_finished(issue)
            assert run.state is RunState.SUCCEEDED, run.reason
            assert len(pulls_from(world.forge, run.branch)) == 1
            assert len(status_comments(world.forge, issue)) == 1
            # With webhooks the run's own look at CI was minutes away (ci_poll_max): the CI
            # event woke it, long before.
            waits = [e for e in world.store.events(run.id, limit=1000) if e.kind == "waiting"]
            assert waits and waits[0].data["state"] == "gating"
            assert waits[0].data["seconds"] >= 60


def test_a_ci_event_for_a_pull_request_number_wakes_its_run_not_an_issue(
        tmp_path: Path, sandbox_image: str) -> None:
    with DemoWorld(tmp_path) as world:
        world.forge.configure_ci(REPO, f"sleep 10 && {TEST_COMMAND}", context=CI_CONTEXT)
        issue = world.open_issue()
        run = world.wait_state(issue, RunState.GATING, timeout=120)
        assert run.pr_number is not None and run.pr_number != issue
        run = world.wait_finished(issue)
        assert run.state is RunState.SUCCEEDED, run.reason
        # Nothing was ever started for the pull request's number.
        assert world.run_for(run.pr_number) is None


def _agent_by_title(slow_title: str) -> Any:
    fixing, sleepy = fixing_agent(), slow_agent(300)

    def policy(request: Request) -> Reply:
        first = str(request.messages[0].get("content", "")) if request.messages else ""
        return sleepy(request) if slow_title in first else fixing(request)

    return policy


def test_with_one_slot_a_higher_priority_run_is_claimed_next(
        tmp_path: Path, sandbox_image: str) -> None:
    settings = {"limits": {"max_concurrent": 1, "per_repo": 10, "lease_ttl": "5s"}}
    with DemoWorld(tmp_path, agent=_agent_by_title("blocker"), settings=settings) as world:
        blocker = world.open_issue(title="blocker")
        world.wait_state(blocker, RunState.RUNNING, timeout=120)
        queued = []
        for i in range(5):
            number = world.open_issue(title=f"queued {i}", label=False)
            if i == 3:
                world.forge.label(REPO, number, "orchestrator:priority-9", as_user=MAINTAINER)
            elif i == 1:  # a reader's priority label counts for nothing
                world.forge.label(REPO, number, "orchestrator:priority-10", as_user=READER)
            world.forge.label(REPO, number, "orchestrator", as_user=MAINTAINER)
            queued.append(number)
        world.wait_for(lambda: all(world.run_for(n) is not None for n in queued), 60,
                       "five queued runs")
        world.forge.comment(REPO, blocker, "/kill make room", as_user=MAINTAINER)
        first_out = world.wait_for(lambda: next(
            (n for n in queued if (r := world.run_for(n)) is not None
             and r.state is not RunState.QUEUED), None), 120, "the next run claimed")
        assert first_out == queued[3]
        prioritised = world.run_for(queued[3])
        assert prioritised is not None and prioritised.priority == 9
        unprivileged = world.run_for(queued[1])
        assert unprivileged is not None and unprivileged.priority == 5
        for number in queued:
            world.forge.comment(REPO, number, "/kill done", as_user=MAINTAINER)


