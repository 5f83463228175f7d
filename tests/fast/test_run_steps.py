"""The controller and every run step in this process: the forge and LLM emulators over
loopback HTTP, real git, SQLite, and the local sandbox backend (no Docker).

What a maintainer sees: the pull request, its checks and review, the one status comment, the
run's end state and reason, and nothing written to the forge after a kill.
"""

from __future__ import annotations

from collections.abc import Callable

from runner.model import Run, RunState
from runner.testing.demo import (
    MAINTAINER,
    READER,
    REPO,
    TEST_COMMAND,
    DemoWorld,
    fixing_agent,
    slow_agent,
)
from runner.testing.llm import Reply, Request
from tests.support import (
    events_of,
    pulls_from,
    status_comments,
    two_step_agent,
    worktrees_left,
)

World = Callable[..., DemoWorld]


def transitions(world: DemoWorld, run: Run) -> list[str]:
    """The states the run entered, in order."""
    return [e.data["to"] for e in events_of(world, run) if e.kind == "transition"]


def test_a_labelled_issue_becomes_a_green_reviewed_pull_request(local_world: World) -> None:
    world = local_world()
    issue = world.open_issue()
    run = world.wait_finished(issue, timeout=60)
    assert run.state is RunState.SUCCEEDED, run.reason
    assert transitions(world, run) == ["preparing", "running", "pushing", "gating",
                                       "reviewing", "succeeded"]
    assert any(e.kind == "waiting" for e in events_of(world, run))  # CI: waited, then woken
    pr = world.forge.issue(REPO, run.pr_number or 0)
    assert pr.pull is not None and not pr.pull.draft
    assert pr.pull.head == f"orchestrator/issue-{issue}" and f"Closes #{issue}" in pr.body
    assert "`ci/tests` success" in pr.body and "AI review: approve" in pr.body
    # The reviewer's verdict is on the PR as a review, besides the PR's text.
    assert [r.user.login for r in pr.pull.reviews] == ["orchestrator-bot"]
    comments = status_comments(world.forge, issue)
    assert len(comments) == 1
    assert "**succeeded**" in comments[0] and run.pr_url in comments[0]
    assert worktrees_left(world.workdir / "data") == []


def test_failing_ci_goes_back_to_the_agent_and_the_next_iteration_is_green(
        local_world: World) -> None:
    world = local_world(agent=two_step_agent())
    world.forge.configure_ci(REPO, f"{TEST_COMMAND} && python3 -c 'from calc import sub; "
                             "assert sub(5, 3) == 2'", context="ci/tests")
    issue = world.open_issue()
    run = world.wait_finished(issue, timeout=90)
    assert run.state is RunState.SUCCEEDED, run.reason
    assert run.iteration == 2
    assert [e.data["state"] for e in events_of(world, run) if e.kind == "ci"] == \
        ["failure", "success"]
    assert transitions(world, run).count("running") == 2
    prompts = [x.request.first_user_text() for x in world.llm.exchanges
               if "what failed last time" in x.request.first_user_text()]
    assert prompts and "ci/tests" in prompts[0] and "ImportError" in prompts[0]
    assert len(pulls_from(world.forge, run.branch)) == 1
    assert len(status_comments(world.forge, issue)) == 1


def test_a_reviewer_asking_for_changes_sends_the_run_back_to_the_agent(
        local_world: World) -> None:
    reviews: list[Request] = []

    def reviewer(request: Request) -> Reply:
        reviews.append(request)
        if len(reviews) == 1:
            return Reply.text('{"verdict": "request_changes", "confidence": 0.9, "summary": '
                              '"add() needs a docstring example", "findings": []}')
        return Reply.text('{"verdict": "approve", "confidence": 0.95, "summary": "good", '
                          '"findings": []}')

    fixing = fixing_agent()

    def agent(request: Request) -> Reply:
        if "what failed last time" not in request.first_user_text():
            return fixing(request)
        if request.turn == 0:
            return Reply.bash("sed -i 's/The sum of a and b./The sum of a and b: add(2, 3) "
                              "is 5./' calc.py", "Adding the example.")
        return Reply.finish("Document add() with an example")

    world = local_world(agent=agent, reviewer=reviewer)
    issue = world.open_issue()
    run = world.wait_finished(issue, timeout=90)
    assert run.state is RunState.SUCCEEDED, run.reason
    assert len(reviews) == 2 and run.iteration == 2
    entered = transitions(world, run)
    assert entered.count("reviewing") == 2 and entered.count("running") == 2
    prompts = [x.request.first_user_text() for x in world.llm.exchanges
               if "what failed last time" in x.request.first_user_text()]
    assert prompts and "docstring example" in prompts[0]


def test_a_writers_kill_cancels_the_working_agent_and_nothing_is_written_after_it(
        local_world: World) -> None:
    world = local_world(agent=slow_agent(60))
    issue = world.open_issue()
    run = world.wait_state(issue, RunState.RUNNING, timeout=60)
    world.wait_for(lambda: any(e.kind == "agent.turn" for e in events_of(world, run)), 60,
                   "the agent working")
    world.forge.comment(REPO, issue, "/kill wrong approach", as_user=MAINTAINER)
    run = world.wait_finished(issue, timeout=30)
    assert run.state is RunState.CANCELLED
    assert (run.killed_by, run.reason) == (MAINTAINER, "wrong approach")
    killed = next(e for e in events_of(world, run) if e.kind == "killed")
    assert killed.data["state"] == "running"
    comment = status_comments(world.forge, issue)
    assert len(comment) == 1 and f"Killed by @{MAINTAINER}" in comment[0]
    assert "orchestrator" not in [label.name for label in world.forge.issue(REPO, issue).labels]
    assert worktrees_left(world.workdir / "data") == []
    assert pulls_from(world.forge, run.branch) == []  # the agent never got to push
    # After the kill only its own record: the status comment and the label taken off.
    world.forge.wait_idle()
    after = [f"{w.method} {w.path}" for w in list(world.forge.writes) if w.at >= killed.at]
    assert all("/comments" in w or "/labels" in w for w in after), after
    assert not any("git-receive-pack" in w or "/pulls" in w for w in after), after


def test_a_kill_from_someone_without_write_permission_is_answered_once_and_ignored(
        local_world: World) -> None:
    world = local_world(agent=slow_agent(60))
    issue = world.open_issue()
    run = world.wait_state(issue, RunState.RUNNING, timeout=60)
    world.forge.comment(REPO, issue, "/kill", as_user=READER)
    world.wait_for(lambda: any(e.kind == "kill_rejected" for e in events_of(world, run)), 30,
                   "the rejection")
    replies = [c.body for c in world.forge.issue(REPO, issue).comments
               if "rejected-kill" in c.body]
    assert len(replies) == 1 and f"@{READER}" in replies[0]
    assert not world.store.get_run(run.id).terminal
    world.forge.comment(REPO, issue, "/kill", as_user=MAINTAINER)
    assert world.wait_finished(issue, timeout=30).state is RunState.CANCELLED


def test_an_issue_too_large_for_one_run_fails_with_the_reason_before_any_work(
        local_world: World) -> None:
    world = local_world()
    body = "Rewrite everything.\n\n## Context Estimate\nTotal estimated: 900,000 tokens\n"
    issue = world.open_issue("Rewrite the calculator", body)
    run = world.wait_finished(issue, timeout=60)
    assert run.state is RunState.FAILED
    assert run.reason.startswith("too large for one run (the 50% rule)")
    assert transitions(world, run) == ["failed"]
    labels = [label.name for label in world.forge.issue(REPO, issue).labels]
    assert "orchestrator:too-large" in labels
    assert [c for c in world.forge.issue(REPO, issue).comments if "split" in c.body.lower()]
    assert world.llm.exchanges == [] and pulls_from(world.forge, run.branch) == []


def test_an_agent_that_changes_nothing_fails_the_run_with_the_reason(
        local_world: World) -> None:
    world = local_world(agent=lambda request: Reply.finish("Nothing to do"))
    issue = world.open_issue()
    run = world.wait_finished(issue, timeout=60)
    assert run.state is RunState.FAILED
    assert run.reason
    comments = status_comments(world.forge, issue)
    assert len(comments) == 1 and "**failed**" in comments[0]
    assert pulls_from(world.forge, run.branch) == []
