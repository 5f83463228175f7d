"""Without webhooks, the poll still finds what steers an ended run from the forge: a base
branch that made the PR conflict, and a ``/retry`` after a kill took the trigger label away.

The runner is in this process (local sandbox, SQLite, the emulators over loopback), going by
a ``FakeClock``: the poll comes when the test moves the clock, never by waiting.
"""

from __future__ import annotations

from collections.abc import Callable

from runner.clock import FakeClock
from runner.model import Run, RunState
from runner.testing.demo import MAINTAINER, REPO, DemoWorld, fixing_agent, slow_agent
from runner.testing.llm import Reply, Request

World = Callable[..., DemoWorld]
POLL = {"limits": {"poll_interval": "30s", "follow_up_quiet": "1s"}}
CONFLICTING = ('"""A tiny calculator."""\n\n\n'
               "def add(a, b):\n"
               '    """The sum of a and b."""\n'
               "    return a - b  # FIXME: wrong\n\n\n"
               "def mul(a, b):\n"
               "    return a * b\n")


def follow_ups(world: DemoWorld, issue: int, first: Run) -> list[Run]:
    return [r for r in world.store.list_runs(repo=REPO, limit=1000)
            if r.issue == issue and r.details.follows == first.id]


def next_poll(world: DemoWorld, clock: FakeClock, seconds: float = 30) -> None:
    """Move the clock to the next poll once the poller waits for it."""
    world.wait_for(lambda: clock.waits >= 1, 30, "the poller waiting for its next poll")
    clock.advance(seconds)


def settle(world: DemoWorld, clock: FakeClock) -> None:
    """Fire every timer that is due within ten minutes, then wait until no look is queued
    or under way."""
    queue = world.runner.controller.queue
    for _ in range(20):
        clock.advance(30)
        world.wait_for(lambda: (len(queue) == 0 and not queue._processing) or None, 30,
                       "the looks settling")


def test_the_push_webhook_of_a_base_commit_starts_the_conflict_follow_up(
        local_world: World, clock: FakeClock) -> None:
    world = local_world(settings={"limits": {"poll_interval": "1h", "follow_up_quiet": "1s"}})
    issue = world.open_issue()
    first = world.wait_finished(issue, timeout=60)
    assert first.state is RunState.SUCCEEDED, first.reason
    world.forge.commit_to_base(REPO, "calc.py", CONFLICTING, "Note the bug in add()")
    # The clock does not move: no poll comes; the push delivery is what makes the look.
    follow = world.wait_for(lambda: next(iter(follow_ups(world, issue, first)), None), 60,
                            "the conflict's follow-up")
    assert follow.details.follow_up_kind == "conflict"
    # A push to another branch looks at nothing.
    assert world.runner.controller.enqueue_base(REPO, "feature") == []


def test_without_webhooks_the_poll_sees_a_base_that_made_the_pr_conflict(
        local_world: World, clock: FakeClock) -> None:
    world = local_world(settings=POLL)
    issue = world.open_issue()
    first = world.wait_finished(issue, timeout=60)
    assert first.state is RunState.SUCCEEDED, first.reason
    world.forge.repo(REPO).hooks.clear()  # no webhook reaches the runner from now on
    # The maintainer takes the label off: the PR is what the issue is about now.
    world.forge.unlabel(REPO, issue, "orchestrator", as_user=MAINTAINER)
    world.forge.commit_to_base(REPO, "calc.py", CONFLICTING, "Note the bug in add()")
    assert not follow_ups(world, issue, first)
    next_poll(world, clock)
    follow = world.wait_for(lambda: next(iter(follow_ups(world, issue, first)), None), 60,
                            "the conflict's follow-up")
    assert follow.details.follow_up_kind == "conflict"


def test_without_webhooks_the_poll_sees_a_retry_after_a_kill_removed_the_label(
        local_world: World, clock: FakeClock) -> None:
    slow = slow_agent(300)
    fixing = fixing_agent()
    retried = {"yes": False}

    def agent(request: Request) -> Reply:
        if "/retry" in request.first_user_text():
            retried["yes"] = True
        return fixing(request) if retried["yes"] else slow(request)

    world = local_world(settings=POLL, agent=agent)
    issue = world.open_issue()
    world.wait_for(lambda: (r := world.run_for(issue)) is not None
                   and r.state is RunState.RUNNING, 60, "the agent working")
    world.forge.comment(REPO, issue, "/kill enough", as_user=MAINTAINER)
    killed = world.wait_finished(issue, timeout=60)
    assert killed.state is RunState.CANCELLED
    labels = [label.name for label in world.forge.issue(REPO, issue).labels]
    assert "orchestrator" not in labels  # the kill took it off
    world.forge.repo(REPO).hooks.clear()
    settle(world, clock)  # what the kill left on timers is done: only the poll looks now
    world.forge.comment(REPO, issue, "/retry", as_user=MAINTAINER)
    next_poll(world, clock)
    again = world.wait_for(lambda: next(iter(follow_ups(world, issue, killed)), None), 60,
                           "the run /retry asked for")
    assert again.details.follow_up_kind == "retry"


def test_a_kill_label_left_on_the_pr_holds_follow_ups_says_so_once_and_lets_go_when_removed(
        local_world: World) -> None:
    world = local_world(settings=POLL)
    issue = world.open_issue()
    first = world.wait_finished(issue, timeout=60)
    assert first.state is RunState.SUCCEEDED, first.reason
    pr = first.pr_number
    assert pr is not None
    world.forge.label(REPO, pr, "orchestrator:kill", as_user=MAINTAINER)
    marker = "orchestrator:follow-up-kill-label"

    def told() -> list[str]:
        return [c.body for c in world.forge.issue(REPO, pr).comments if marker in c.body]

    world.forge.review(REPO, pr, MAINTAINER, "request_changes", "Please name it sum().")
    world.wait_for(lambda: told() or None, 60, "the PR told why nothing starts")
    world.forge.review(REPO, pr, MAINTAINER, "request_changes", "And add a docstring.")
    world.wait_for(lambda: world.store.get_run(first.id).details.kill_label_told or None, 30,
                   "the run recording that it told")
    world.forge.wait_idle()
    assert len(told()) == 1 and "`orchestrator:kill` label is on the pull request" in told()[0]
    assert not follow_ups(world, issue, first)
    world.forge.unlabel(REPO, pr, "orchestrator:kill", as_user=MAINTAINER)
    follow = world.wait_for(lambda: next(iter(follow_ups(world, issue, first)), None), 60,
                            "the follow-up once the label is gone")
    assert follow.details.follow_up_kind == "review"
    assert "Please name it sum()." in follow.details.follow_up
