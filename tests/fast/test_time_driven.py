"""What happens with time, moved forward by a ``FakeClock`` instead of waited for: polls and
CI looks without webhooks, CI deadlines, a lease that lapses while its step works, and the
daily spend budget's new day.

The runner is in this process (local sandbox, SQLite, the emulators over loopback); the
clock jumps when a run holds nothing (it waits), or, for the lease, on purpose.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from runner.clock import FakeClock
from runner.model import Run, RunState
from runner.spend import next_day
from runner.testing.demo import REPO, TEST_COMMAND, DemoWorld, fixing_agent
from runner.testing.llm import Reply, Request
from tests.support import events_of, pulls_from, status_comments

World = Callable[..., DemoWorld]


def waiting_in(world: DemoWorld, issue: int, state: RunState,
               also: Callable[[Run], bool] = lambda run: True) -> Run:
    """The issue's run once it waits (holding nothing) in ``state``."""
    def parked() -> Run | None:
        run = world.run_for(issue)
        return run if run is not None and run.state is state and run.waiting and also(run) \
            else None

    run: Run = world.wait_for(parked, 60, f"the run of #{issue} waiting in {state}")
    return run


def test_without_webhooks_the_poll_finds_the_issue_and_the_ci_look_comes_on_its_backoff(
        local_world: World, clock: FakeClock) -> None:
    world = local_world(settings={"limits": {"poll_interval": "30s", "ci_poll_max": "5m"}})
    world.forge.repo(REPO).hooks.clear()  # no webhook reaches the runner from now on
    issue = world.open_issue()
    # Nothing else waits on the clock now (no run, no failed look): the poller does.
    world.wait_for(lambda: clock.waits >= 1, 30, "the poller waiting for its next poll")
    clock.advance(30)  # the next poll: it lists the labelled issue
    run = waiting_in(world, issue, RunState.GATING)
    world.wait_for(lambda: all(job.done.is_set() for job in world.forge.ci_jobs), 60,
                   "CI finished")
    assert world.run_for(issue).state is RunState.GATING  # type: ignore[union-attr]
    clock.advance(300)  # ci_poll_max: the fallback look at CI
    run = world.wait_finished(issue, timeout=60)
    assert run.state is RunState.SUCCEEDED, run.reason
    ci = [e.data["state"] for e in events_of(world, run) if e.kind == "ci"]
    assert ci == ["success"]
    assert "**succeeded**" in status_comments(world.forge, issue)[0]


def test_ci_that_never_reports_the_required_context_fails_the_run_at_its_deadline(
        local_world: World, clock: FakeClock) -> None:
    world = local_world(settings={"limits": {"ci_timeout": "120s"}})
    # CI runs and reports, but under another name than the required `ci/tests`.
    world.forge.configure_ci(REPO, TEST_COMMAND, context="ci/other")
    issue = world.open_issue()
    waiting_in(world, issue, RunState.GATING)
    world.forge.wait_idle()  # CI reported, and its event woke the run for a look
    waiting_in(world, issue, RunState.GATING, lambda run: run.details.ci_looks >= 1)
    clock.advance(121)
    run = world.wait_finished(issue, timeout=60)
    assert run.state is RunState.FAILED
    assert run.reason.startswith("CI did not finish on") and "within 120s" in run.reason
    assert "ci/other=success" in run.reason
    comments = status_comments(world.forge, issue)
    assert len(comments) == 1 and "**failed**" in comments[0]
    assert len(pulls_from(world.forge, run.branch)) == 1  # the PR stays, for a human to see


def test_a_lapsed_lease_is_claimed_again_and_the_old_claim_writes_nothing(
        local_world: World, clock: FakeClock) -> None:
    stalled, release = threading.Event(), threading.Event()
    conversations: list[str] = []
    fixing = fixing_agent()

    def agent(request: Request) -> Reply:
        if request.turn == 0:
            conversations.append(request.first_user_text())
        if len(conversations) == 1:  # the first owner's model call hangs
            stalled.set()
            release.wait(30)
            return Reply.finish("late: written by the owner that lost its lease")
        return fixing(request)

    world = local_world(agent=agent)
    issue = world.open_issue()
    world.wait_for(stalled.is_set, 60, "the first owner's model call")
    run = world.run_for(issue)
    assert run is not None and run.state is RunState.RUNNING
    clock.advance(6)  # past lease_ttl (5s) at once: the heartbeat comes too late

    def claims() -> list[int]:
        return [e.data["fence"] for e in events_of(world, run) if e.kind == "claimed"]

    world.wait_for(lambda: len(claims()) >= 2, 30, "the run claimed again")
    release.set()  # the old claim's step goes on now, under a fence that is no longer valid
    run = world.wait_finished(issue, timeout=90)
    assert run.state is RunState.SUCCEEDED, run.reason
    assert claims()[:2] == [1, 2]
    kinds = [e.kind for e in events_of(world, run)]
    second_claim = [i for i, kind in enumerate(kinds) if kind == "claimed"][1]
    assert kinds.count("pushed") == 1 and kinds.index("pushed") > second_claim
    assert [e.data["to"] for e in events_of(world, run)
            if e.kind == "transition"].count("succeeded") == 1
    pr = world.forge.issue(REPO, run.pr_number or 0)
    assert "late" not in pr.title and "late" not in pr.body
    assert len(pulls_from(world.forge, run.branch)) == 1
    assert len(status_comments(world.forge, issue)) == 1


def test_a_run_held_by_the_spent_daily_budget_starts_on_the_next_utc_day(
        local_world: World, clock: FakeClock) -> None:
    world = local_world(settings={"limits": {"daily_cost_usd": 0.000001}})
    first = world.wait_finished(world.open_issue(title="first"), timeout=60)
    assert first.state is RunState.SUCCEEDED and first.cost_usd > 0  # today's budget is spent
    held = world.open_issue(title="held by the budget")
    waiting_in(world, held, RunState.QUEUED)
    told = [c.body for c in world.forge.issue(REPO, held).comments
            if "orchestrator:budget" in c.body]
    assert len(told) == 1 and "is spent" in told[0]
    assert status_comments(world.forge, held) == []  # not acknowledged: it has not started
    assert world.run_for(held).state is RunState.QUEUED  # type: ignore[union-attr]
    clock.advance(next_day(clock.now()) - clock.now() + 1)  # past midnight UTC: a new budget
    run = world.wait_finished(held, timeout=60)
    assert run.state is RunState.SUCCEEDED, run.reason
    told = [c.body for c in world.forge.issue(REPO, held).comments
            if "orchestrator:budget" in c.body]
    assert len(told) == 1 and "allows this run now" in told[0]
