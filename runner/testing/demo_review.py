"""The demo's review round: after the green pull request, the maintainer requests one change
on a line of it, and the agent answers in a follow-up (``orchestrator demo`` and the e2e
tests show the same round)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runner.agent.base import FOLLOW_UP_HEADING
from runner.model import Run, RunState
from runner.testing.llm import Policy, Reply, Request, Script

REVIEW_PATH, REVIEW_LINE = "calc.py", 9
REVIEW_TEXT = "mul() needs a docstring, like add() has."
ANSWER_SUMMARY = "Added a docstring to mul(), as the review asked"
_MUL = "def mul(a, b):\n"
_DOCUMENTED = 'def mul(a, b):\n    """The product of a and b."""\n'


def answering(first: Policy, test_command: str = "python3 test_calc.py") -> Policy:
    """``first`` for a run's own work; in a follow-up, the agent adds the docstring the
    demo's review asks for, runs the tests and says what it did."""
    answer = Script([
        Reply.edit("str_replace", REVIEW_PATH, "The review asks for a docstring on mul().",
                   old_str=_MUL, new_str=_DOCUMENTED),
        Reply.bash(test_command, "Running the tests again."),
        Reply.finish(f"{ANSWER_SUMMARY}.\n\n`{REVIEW_PATH}` line {REVIEW_LINE}: done; "
                     f"`{test_command}` passes."),
    ])

    def policy(request: Request) -> Reply:
        if FOLLOW_UP_HEADING in request.first_user_text():
            return answer(request)
        return first(request)

    return policy


def review_round(world: Any, issue: int, run: Run, say: Callable[[str], None],
                 stamp: Callable[[], str], maintainer: str) -> Run | None:
    """The maintainer requests one change on the green PR of ``run``; the follow-up that
    answers it, once it has ended (None when none started in time)."""
    assert run.pr_number is not None
    world.forge.review(run.repo, run.pr_number, maintainer, "changes_requested",
                       "One small thing before I merge.",
                       comments=[(REVIEW_PATH, REVIEW_LINE, REVIEW_TEXT)])
    say(f"{stamp()} {maintainer} requested changes on PR #{run.pr_number}: "
        f"`{REVIEW_PATH}` line {REVIEW_LINE}: {REVIEW_TEXT}")

    def follow_up() -> Run | None:
        latest = world.run_for(issue)
        return latest if latest is not None and latest.id != run.id else None

    try:
        started = world.wait_for(follow_up, 120, f"a follow-up of {run.id}")
    except TimeoutError:
        return None
    say(f"{stamp()} #{issue} {started.id}: follow-up of {run.id} started from the PR's branch")
    done: Run = world.wait_finished(issue)
    if done.state is RunState.SUCCEEDED:
        say(f"{stamp()} #{issue} {done.id}: {done.state}; commit {done.head_sha[:12]} on "
            f"PR #{done.pr_number}, the thread answered, CI and AI review green again")
    else:
        say(f"{stamp()} #{issue} {done.id}: {done.state} ({done.reason})")
    return done

