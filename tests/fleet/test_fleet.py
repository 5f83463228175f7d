"""A fleet under real faults (issue 16): three runner containers sharing one Valkey, the
forge and the LLM emulated on the host; runners cut off, killed and restarted, Valkey paused.

Each scenario ends with the fault tests' end state over the whole fleet: every run ended
once, one PR and one status comment per issue at most, no container or worktree left on any
runner, and no forge write by a runner after it lost its lease or the run was cancelled.
The figures they measure are printed (``-s``) and recorded in docs/scaling.md.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from runner.model import Run, RunState
from runner.testing.demo import BUG, MAINTAINER, REPO, TEST_COMMAND, fixing_agent
from runner.testing.llm import Reply, Request
from tests.fleet.conftest import (
    LEASE_TTL,
    Fleet,
    Runner,
    assert_fleet_clean,
    forge_writes_by,
    stale_writes_by,
)
from tests.fleet.conftest import must as must_docker
from tests.support import containers_of, worktrees_left

pytestmark = [pytest.mark.fleet, pytest.mark.docker, pytest.mark.slow,
              pytest.mark.timeout(600)]

SLOW_MARK = "This will take a while (fleet)."


class SlowFirstSessions:
    """An agent whose first ``count`` sessions start with a long command (``sleep``), so a
    fault lands while they work; it then fixes the bug. Later sessions (a new owner's) fix
    it at once."""

    def __init__(self, seconds: float, count: int = 1) -> None:
        self.seconds, self.left = seconds, count
        self.fixing = fixing_agent()
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Reply:
        if request.turn == 0:
            with self.lock:
                slow, self.left = self.left > 0, self.left - 1
            if slow:
                return Reply.bash(f"sleep {self.seconds:g}", SLOW_MARK)
            return self.fixing(request)
        if SLOW_MARK not in str(request.messages[1:2]):
            return self.fixing(request)
        path, old, new = BUG
        if request.turn == 1:
            return Reply.edit("str_replace", path, "Fixing add().", old_str=old, new_str=new)
        if request.turn == 2:
            return Reply.bash(TEST_COMMAND, "Running the tests.")
        return Reply.finish("Fixed add().")


def working(fleet: Fleet, issue: int, timeout: float = 90) -> Run:
    """The issue's run once its agent ran its first command, and owned by a runner."""
    world = fleet.world

    def started() -> Run | None:
        run = world.run_for(issue)
        if run is None or fleet.owner(run) is None:
            return None
        kinds = {e.kind for e in world.store.events(run.id, limit=1000)}
        return run if "agent.turn" in kinds or "tool" in kinds else None

    return world.wait_for(started, timeout, f"the agent working on #{issue}")


def taken_over(fleet: Fleet, run: Run, old: Runner, timeout: float = 60) -> float:
    """Seconds until a runner other than ``old`` holds ``run``'s lease (or the run ended)."""
    began = time.monotonic()

    def moved() -> bool:
        owner = fleet.owner(run)
        current = fleet.world.store.get_run(run.id)
        return (owner is not None and owner is not old) or current.terminal

    fleet.world.wait_for(moved, timeout, f"a takeover of {run.id}")
    return time.monotonic() - began


def finished(fleet: Fleet, issue: int, timeout: float = 90) -> Run:
    try:
        return fleet.world.wait_finished(issue, timeout=timeout)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{fleet.logs()}") from None


def report(name: str, **figures: Any) -> None:
    print(f"\nFLEET {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def addresses(runner: Runner) -> set[str]:
    """Every address ``runner`` had on the edge network so far (a reconnect may change it)."""
    return runner.seen_addresses


def test_node_loss_mid_run_is_taken_over_and_completes(fleet_factory: Any,
                                                        docker_client: Any) -> None:
    """`docker kill` of the runner working on a run: another takes it over once the lease
    lapses and finishes it; the dead runner's leftovers go when it starts again."""
    fleet: Fleet = fleet_factory(agent=SlowFirstSessions(seconds=30))
    issue = fleet.world.open_issue()
    run = working(fleet, issue)
    victim = fleet.owner(run)
    assert victim is not None
    victim.kill()
    killed_at = time.time()
    takeover = taken_over(fleet, run, victim)
    done = finished(fleet, issue)
    assert done.state is RunState.SUCCEEDED, done.reason
    assert forge_writes_by(fleet.world, addresses(victim), killed_at) == []
    victim.start()  # its orphan sweep removes what the dead process held
    fleet.wait_healthy(victim)
    fleet.world.wait_for(lambda: not worktrees_left(victim.data_dir), 30,
                         f"{victim.name}'s orphan sweep")
    assert_fleet_clean(fleet, docker_client, done)
    report("node_loss", lease_ttl_s=LEASE_TTL, takeover_s=round(takeover, 1))


def test_partition_from_valkey_and_forge_then_heal(fleet_factory: Any,
                                                   docker_client: Any) -> None:
    """The owner cut off from Valkey and the forge for longer than lease_ttl: another
    runner takes the run over and finishes it; the healed runner writes nothing for it and
    removes what it held."""
    fleet: Fleet = fleet_factory(agent=SlowFirstSessions(seconds=20))
    issue = fleet.world.open_issue()
    run = working(fleet, issue)
    victim = fleet.owner(run)
    assert victim is not None
    victim.partition()
    cut_at = time.time()
    takeover = taken_over(fleet, run, victim)
    fleet.world.wait_for(lambda: time.time() - cut_at > 3 * LEASE_TTL, 30, "a long partition")
    victim.heal()
    done = finished(fleet, issue)
    assert done.state is RunState.SUCCEEDED, done.reason
    # The healed runner removes its worktree and container once it sees the run ended.
    fleet.world.wait_for(lambda: not worktrees_left(victim.data_dir), 30,
                         f"{victim.name} cleaning up")
    fleet.world.wait_for(lambda: not containers_of(docker_client, run.id), 30,
                         "the containers' removal")
    assert stale_writes_by(fleet.world, addresses(victim), run.id, victim.worker_prefix,
                           cut_at) == []
    assert_fleet_clean(fleet, docker_client, done)
    report("partition_full", lease_ttl_s=LEASE_TTL, takeover_s=round(takeover, 1))


def test_late_push_after_a_valkey_partition_is_refused_by_the_fence(
        fleet_factory: Any, docker_client: Any) -> None:
    """The owner is about to push (fetching for its conflict check) when it is cut off from
    Valkey; its push waits for the store to confirm its lease. Another runner takes the run
    over and finishes it. Healed, the old owner's push is refused by the fencing check, with
    a ``write_refused`` audit event, and nothing of it reaches the forge."""
    fleet: Fleet = fleet_factory()
    world = fleet.world
    issue = world.open_issue()
    run = working(fleet, issue)
    world.forge.slow_git(12, "upload-pack")  # the owner's conflict check: a slow fetch
    run = world.wait_state(issue, RunState.PUSHING, timeout=90)
    victim = fleet.owner(run)
    assert victim is not None
    time.sleep(1)  # its fetch is under way
    victim.partition(edge=False)
    cut_at = time.time()
    world.forge.slow_git(0, "upload-pack")
    takeover = taken_over(fleet, run, victim)
    fleet.world.wait_for(lambda: time.time() - cut_at > 14, 30, "the old owner's fetch")
    victim.heal()

    def refused() -> list[Any]:
        return [e for e in world.store.events(run.id, limit=100000)
                if e.kind == "write_refused" and
                str(e.data.get("worker", "")).startswith(victim.worker_prefix)]

    events = world.wait_for(refused, 30, "the fencing check's refusal")
    assert events[0].data["reason"] == "lease lost"
    assert events[0].data["state"] == "pushing"
    assert events[0].data["owner_fence"] is None or \
        events[0].data["owner_fence"] > events[0].data["fence"]
    done = finished(fleet, issue)
    assert done.state is RunState.SUCCEEDED, done.reason
    fleet.world.wait_for(lambda: not worktrees_left(victim.data_dir), 30,
                         f"{victim.name} cleaning up")
    fleet.world.wait_for(lambda: not containers_of(docker_client, run.id), 30,
                         "the containers' removal")
    assert stale_writes_by(world, addresses(victim), run.id, victim.worker_prefix,
                           cut_at) == []
    assert_fleet_clean(fleet, docker_client, done)
    report("partition_valkey_late_push", lease_ttl_s=LEASE_TTL, takeover_s=round(takeover, 1))


def test_kill_while_the_owner_is_cut_off(fleet_factory: Any, docker_client: Any) -> None:
    """`/kill` while the owner cannot hear it: the run is cancelled once its lease lapses and
    another runner acts for it; the owner, healed, writes nothing and removes its container."""
    fleet: Fleet = fleet_factory(agent=SlowFirstSessions(seconds=40))
    world = fleet.world
    issue = world.open_issue()
    run = working(fleet, issue)
    victim = fleet.owner(run)
    assert victim is not None
    victim.partition()
    cut_at = time.time()
    world.forge.comment(REPO, issue, "/kill not needed any more", as_user=MAINTAINER)
    kill_at = time.monotonic()
    cancelled = world.wait_state(issue, RunState.CANCELLED, timeout=60)
    latency = time.monotonic() - kill_at
    victim.heal()
    done = finished(fleet, issue)
    assert done.id == cancelled.id and done.state is RunState.CANCELLED
    fleet.world.wait_for(lambda: not containers_of(docker_client, run.id), 30,
                         "the cut-off owner's container removed")
    fleet.world.wait_for(lambda: not worktrees_left(victim.data_dir), 30,
                         f"{victim.name} cleaning up")
    assert forge_writes_by(world, addresses(victim), cut_at) == []
    assert_fleet_clean(fleet, docker_client, done)
    report("kill_while_cut_off", lease_ttl_s=LEASE_TTL, kill_latency_s=round(latency, 1))


def test_valkey_paused_for_20s_under_two_runs(fleet_factory: Any, docker_client: Any) -> None:
    """Valkey frozen (`docker pause`) for 20 s while two runs work: every runner loses the
    store at once and every lease lapses meanwhile. Once it is back, each run is finished
    exactly once, and nothing is left on any runner."""
    fleet: Fleet = fleet_factory(agent=SlowFirstSessions(seconds=25, count=2))
    world = fleet.world
    issues = [world.open_issue(), world.open_issue("mul() is slow", "Please check add() too.")]
    runs = [working(fleet, n) for n in issues]
    must_docker("pause", fleet.valkey)
    paused_at = time.monotonic()
    try:
        time.sleep(20)
    finally:
        must_docker("unpause", fleet.valkey)
    back_at = time.monotonic()
    done = [finished(fleet, n, timeout=120) for n in issues]
    recovered = time.monotonic() - back_at
    for run, end in zip(runs, done, strict=True):
        assert end.id == run.id and end.state is RunState.SUCCEEDED, end.reason
        assert_fleet_clean(fleet, docker_client, end)
    report("valkey_paused", paused_s=round(back_at - paused_at, 1),
           runs_completed=f"{len(done)}/{len(issues)}",
           finished_after_unpause_s=round(recovered, 1))


def test_rolling_restart_under_a_burst_of_15_issues(fleet_factory: Any,
                                                     docker_client: Any) -> None:
    """15 issues labelled at once, then each runner stopped (SIGTERM) and started again, one
    by one, as a deployment of a new version does: every run completes, once."""
    fleet: Fleet = fleet_factory(agent=SlowFirstSessions(seconds=8, count=15))
    world = fleet.world
    began = time.monotonic()
    issues = [world.open_issue(f"add() is wrong ({n})") for n in range(15)]
    world.wait_for(lambda: sum(1 for n in issues if world.run_for(n) is not None) >= 6, 60,
                   "the burst under way")
    held = []  # runs each runner was working on when it was stopped
    for runner in fleet.runners:
        held.append(sum(1 for n in issues if (run := world.run_for(n)) is not None
                        and fleet.owner(run) is runner))
        runner.stop()
        runner.start()
        fleet.wait_healthy(runner)
    restarted = time.monotonic() - began
    done = [finished(fleet, n, timeout=240) for n in issues]
    elapsed = time.monotonic() - began
    assert [r.state for r in done] == [RunState.SUCCEEDED] * len(issues), \
        [(r.issue, r.state, r.reason) for r in done]
    for run in done:
        assert_fleet_clean(fleet, docker_client, run)
    assert sum(held) > 0, "no runner had a run in flight when it was stopped"
    report("rolling_restart", issues=len(issues), runs_completed=f"{len(done)}/{len(issues)}",
           held_when_stopped=held,
           restarts_done_s=round(restarted, 1), all_done_s=round(elapsed, 1))


def test_valkey_restarted_with_persistence_under_two_runs(fleet_factory: Any,
                                                           docker_client: Any) -> None:
    """Valkey restarted (`docker restart`, its append-only file kept) while two runs work:
    the runs, their audit logs and fencing tokens outlive it, and each run finishes once."""
    fleet: Fleet = fleet_factory(agent=SlowFirstSessions(seconds=15, count=2))
    world = fleet.world
    issues = [world.open_issue(), world.open_issue("mul() is slow", "Please check add() too.")]
    runs = [working(fleet, n) for n in issues]
    before = {run.id: len(world.store.events(run.id, limit=100000)) for run in runs}
    must_docker("restart", "-t", "5", fleet.valkey)
    back_at = time.monotonic()
    fleet.wait_valkey()
    fleet.reopen_store()  # its address may have changed
    for run in runs:  # nothing of what was written before is lost
        assert world.store.get_run(run.id).issue == run.issue
        assert len(world.store.events(run.id, limit=100000)) >= before[run.id]
    done = [finished(fleet, n, timeout=120) for n in issues]
    recovered = time.monotonic() - back_at
    for run, end in zip(runs, done, strict=True):
        assert end.id == run.id and end.state is RunState.SUCCEEDED, end.reason
        assert_fleet_clean(fleet, docker_client, end)
    report("valkey_restarted", runs_completed=f"{len(done)}/{len(issues)}",
           finished_after_restart_s=round(recovered, 1))
