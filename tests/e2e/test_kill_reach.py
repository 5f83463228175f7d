"""A kill reaches a run wherever it is: a step blocked in a forge request writes nothing after
it, a run waiting on CI (owned by no process) is cancelled by a kill from the CLI or the API,
kill --all stops every working run, and what a run learnt before a wait survives it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from runner.model import RunState
from runner.testing import forge_git
from runner.testing.demo import MAINTAINER, REPO, DemoWorld
from tests.e2e.kill_scenarios import Writes
from tests.support import containers_of, pulls_from

pytestmark = [pytest.mark.docker, pytest.mark.slow]

HANG = 6.0  # the forge's answer to the look for an existing PR: below the client's timeout


def test_no_pull_request_is_opened_after_a_kill_while_the_look_for_one_hangs(
        tmp_path: Path, sandbox_image: str, docker_client: Any) -> None:
    """PUSHING: the branch is pushed, then ``find_or_create_pull`` looks for an open PR (GET)
    and opens one (POST). A kill while the GET hangs leaves the step behind after 0.5 s; when
    the GET comes back, the left-behind step does not open the PR."""
    writes = Writes()
    with DemoWorld(tmp_path, settings={"limits": {"max_concurrent": 2, "per_repo": 4,
                                                  "lease_ttl": "5s", "ci_timeout": "15m"}}
                   ) as world:
        world.forge.slow_api(HANG, "/pulls")
        world.forge.observers.append(writes.observe)
        issue = world.open_issue(title="kill me while the PR is looked for")
        run = world.wait_state(issue, RunState.PUSHING, timeout=180)
        git_dir = world.forge.repo(REPO).git_dir
        world.wait_for(lambda: run.branch in forge_git.refs(git_dir), 60, "the branch pushed")
        time.sleep(0.5)  # the GET /pulls is in flight, hanging
        world.forge.comment(REPO, issue, "/kill enough", as_user=MAINTAINER)
        writes.since = time.time()
        ended = world.wait_finished(issue, timeout=60)
        assert ended.state is RunState.CANCELLED
        time.sleep(2 * HANG + 4)  # the hung GET returns, then the POST (hung too) lands
        assert pulls_from(world.forge, run.branch) == []
        assert writes.not_the_kills_own() == []


@pytest.mark.parametrize("how", ["one", "all"])
def test_a_kill_from_the_cli_or_api_lands_on_a_waiting_run(
        how: str, tmp_path: Path, sandbox_image: str, docker_client: Any) -> None:
    """``orchestrator kill RUN`` / ``POST /api/runs/RUN/kill`` (and ``kill --all``) record the
    kill and publish it; a run waiting on CI has no owner to deliver it to, and (``--all``)
    dispatch is paused. It still ends CANCELLED at once, not at its next look at CI
    (``ci_poll_max``, 5 min by default) or after a resume."""
    from runner.store.base import kill_all
    from runner.testing.demo import CI_CONTEXT, TEST_COMMAND

    with DemoWorld(tmp_path, settings={"limits": {"max_concurrent": 2, "per_repo": 4,
                                                  "lease_ttl": "5s", "ci_timeout": "15m",
                                                  "poll_interval": "10m"}}) as world:
        world.forge.configure_ci(REPO, f"sleep 300 && {TEST_COMMAND}", context=CI_CONTEXT)
        issue = world.open_issue(title="kill me from the CLI while I wait")
        world.wait_for(lambda: (r := world.run_for(issue)) is not None and r.waiting, 180,
                       "the run waiting on CI")
        run = world.run_for(issue)
        assert run is not None
        if how == "one":
            world.store.request_kill(run.id, actor="cli:ops", reason="stop")
        else:
            assert run.id in kill_all(world.store, actor="cli:ops", reason="stop")
        ended = world.wait_finished(issue, timeout=15)
        assert ended.state is RunState.CANCELLED


def test_kill_all_stops_every_working_run(
        tmp_path: Path, sandbox_image: str, docker_client: Any) -> None:
    """``kill --all`` publishes one kill per run; the bus listener hands each to its run and
    goes on to the next at once (containers are stopped off its thread)."""
    from runner.store.base import kill_all
    from tests.e2e.kill_scenarios import _agent

    with DemoWorld(tmp_path, agent=_agent(("busy",)),
                   settings={"limits": {"max_concurrent": 4, "per_repo": 4,
                                        "lease_ttl": "5s", "poll_interval": "10m"}}) as world:
        issues = [world.open_issue(title=f"busy {i}") for i in range(4)]
        for issue in issues:
            world.wait_state(issue, RunState.RUNNING, timeout=180)
        time.sleep(2.0)  # every agent is in its long command
        kill_all(world.store, actor="cli:ops", reason="stop everything")
        for issue in issues:  # their commands would run for ten minutes
            run = world.wait_finished(issue, timeout=60)
            assert run.state is RunState.CANCELLED and run.killed_by == "cli:ops"
            assert containers_of(docker_client, run.id) == []


def test_the_reviewer_still_sees_the_gate_results_after_the_wait_for_ci(
        tmp_path: Path, sandbox_image: str, docker_client: Any) -> None:
    """The review runs in a later claim than the pre-push gates (the wait for CI is between):
    their results are kept with the run, and the reviewer is given them."""
    from runner.testing.demo import approving_reviewer
    from runner.testing.llm import Reply, Request

    seen: list[str] = []

    def reviewer(request: Request) -> Reply:
        seen.append(str(request.messages[-1].get("content", "")) if request.messages else "")
        return approving_reviewer(request)

    with DemoWorld(tmp_path, reviewer=reviewer) as world:
        issue = world.open_issue()
        run = world.wait_finished(issue, timeout=180)
        assert run.state is RunState.SUCCEEDED, run.reason
        assert seen, "the reviewer was not asked"
        assert "no gate results were given" not in seen[-1]
        assert "tests: PASS" in seen[-1]
