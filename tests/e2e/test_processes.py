"""`orchestrator serve` as real processes: crash recovery, and several processes on one Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.model import RunState
from runner.testing.demo import MAINTAINER, REPO, DemoWorld, fixing_agent, slow_agent
from runner.testing.llm import Reply, Request
from tests.support import (
    Serve,
    containers_of,
    pulls_from,
    start_serve,
    status_comments,
    worktrees_left,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_kill9_mid_run_then_restart_ends_cleanly(tmp_path: Path, sandbox_image: str,
                                                docker_client, processes: list[Serve]) -> None:
    mode = {"slow": True}
    slow, fixing = slow_agent(60), fixing_agent()

    def agent(request: Request) -> Reply:
        return slow(request) if mode["slow"] else fixing(request)

    with DemoWorld(tmp_path, agent=agent, start_runner=False) as world:
        first = start_serve(world, tmp_path, processes)
        issue = world.open_issue()
        run = world.wait_state(issue, RunState.RUNNING, timeout=60)
        world.wait_for(lambda: containers_of(docker_client, run.id), 60, "the run's container")
        first.kill9()
        mode["slow"] = False
        second = first.restart()
        processes.append(second)
        run = second.finish(world, issue, timeout=180)
        assert run.state is RunState.SUCCEEDED, run.reason
        assert len(pulls_from(world.forge, f"orchestrator/issue-{issue}")) == 1
        assert len(status_comments(world.forge, issue)) == 1
        assert containers_of(docker_client, run.id) == []
        assert worktrees_left(tmp_path / "data") == []
        kinds = [e.kind for e in world.store.events(run.id, limit=10000)]
        assert "workspace" in kinds


def test_two_processes_on_redis_share_work_and_kills(tmp_path: Path, sandbox_image: str,
                                                    redis_url: str, docker_client,
                                                    processes: list[Serve]) -> None:
    with DemoWorld(tmp_path, agent=slow_agent(90), start_runner=False,
                   settings={"store": {"redis": redis_url},
                             "limits": {"max_concurrent": 1}}) as world:
        # Webhooks reach A only; B learns of kills through Redis.
        a = start_serve(world, tmp_path, processes, "a")
        b = start_serve(world, tmp_path, processes, "b", webhooks=False)
        issues = [world.open_issue(title=f"bug {i}") for i in range(2)]
        runs = [world.wait_state(i, RunState.RUNNING, timeout=90) for i in issues]

        def owners() -> dict[str, str] | None:
            found = {r.id: world.store.current_lease(r.id) for r in runs}
            if all(found.values()):
                return {run_id: lease.worker for run_id, lease in found.items()}
            return None

        owner = world.wait_for(owners, 60, "both runs claimed")
        assert set(owner.values()) == {a.worker, b.worker}, (owner, a.output(), b.output())
        on_b = next(r for r in runs if owner[r.id] == b.worker)
        world.forge.comment(REPO, on_b.issue, "/kill stop it", as_user=MAINTAINER)
        killed = world.wait_state(on_b.issue, RunState.CANCELLED, timeout=30)
        assert killed.killed_by == MAINTAINER
        # The audit's "killed" record follows the transition (it says in which state).
        event = world.wait_for(lambda: next((e for e in world.store.events(killed.id, limit=1000)
                                             if e.kind == "killed"), None), 10, "the kill record")
        assert event.data["reason"] == "stop it"
        world.wait_finished(on_b.issue)
        assert containers_of(docker_client, killed.id) == []
        other = next(r for r in runs if r.id != on_b.id)
        world.forge.comment(REPO, other.issue, "/kill", as_user=MAINTAINER)
        assert world.wait_finished(other.issue).state is RunState.CANCELLED
