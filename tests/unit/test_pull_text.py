"""The pull request a reviewer reads: title and description rendered from a run's events."""

from __future__ import annotations

from typing import Any

from runner.model import Event, Run
from runner.run.pull_text import pull_body, pull_title

RUN = Run(id="r-0123456789ab", repo="acme/w", issue=7, issue_title="add() is wrong",
          trigger_actor="alice")


def ev(kind: str, **data: Any) -> Event:
    return Event(run_id=RUN.id, kind=kind, at=0.0, data=data)


def story() -> list[Event]:
    return [
        ev("agent.start", iteration=1),
        ev("agent.tool", tool="bash", input={"command": "python3 test_calc.py"}, exit_code=1),
        ev("agent_done", summary="Tried something"),
        ev("gates", stage="pre-push", results=[{"gate": "secrets", "passed": True},
                                               {"gate": "tests", "passed": False}]),
        ev("iteration", iteration=2, failures=["gate:tests"]),
        ev("agent.start", iteration=2),
        ev("agent.tool", tool="bash", input={"command": "python3 test_calc.py"}, exit_code=1),
        ev("agent.tool", tool="editor", input={"command": "str_replace"}, exit_code=None),
        ev("agent.tool", tool="bash", input={"command": "python3 test_calc.py"}, exit_code=0),
        ev("agent_done", summary="Fix add() to return the sum\n\nIt subtracted; thanks @octo."),
        ev("gates", stage="pre-push", results=[{"gate": "secrets", "passed": True},
                                               {"gate": "tests", "passed": True}]),
        ev("pushed", sha="abcdef0123456789"),
        ev("ci", sha="abcdef0123456789", state="success", contexts={"ci/tests": "success"}),
        ev("review", verdict="approve", confidence=0.95),
    ]


def test_the_title_says_what_the_change_does() -> None:
    assert pull_title(RUN, story()) == "Fix add() to return the sum"
    assert pull_title(RUN, []) == "add() is wrong"  # before the agent has said anything
    long = [ev("agent_done", summary="x" * 200)]
    assert len(pull_title(RUN, long)) == 72


def test_a_cut_summary_keeps_its_code_span_closed_and_its_words_whole() -> None:
    said = "Added a test for `python3 -m pytest tests/test_negative_numbers.py` " * 3
    title = pull_title(RUN, [ev("agent_done", summary=said)])
    assert len(title) <= 72 and title.endswith("…")
    assert title.count("`") % 2 == 0, title
    last_word = title.removesuffix("…").split()[-1].strip("`")
    assert last_word in said.replace("`", "").split()


def test_the_description_holds_the_summary_the_checks_and_the_history() -> None:
    body = pull_body(RUN, story(), cost="Cost: $0.01")
    assert body.startswith("Closes #7")
    assert "> Fix add() to return the sum" in body and "Tried something" not in body
    # The last iteration's commands, each once with its last result.
    assert body.count("`python3 test_calc.py`: ok") == 1 and "exit 1" not in body
    assert "Pre-push gates passed: secrets, tests" in body
    assert "`ci/tests` success" in body and "AI review: approve (confidence 0.95)" in body
    assert "- Iteration 2: after gate:tests" in body and "Pushed `abcdef012345`" in body
    assert body.rstrip().endswith("Cost: $0.01")


def test_the_agents_words_cannot_ping_people_or_load_images() -> None:
    events = [ev("agent_done", summary="Done @octo-org/admins ![x](https://evil.example/p.png)"
                                       " mail me@example.com")]
    body = pull_body(RUN, events)
    assert "`@octo-org/admins`" in body and "![" not in body
    assert "me@example.com" in body  # an address is not a mention


def test_a_follow_up_keeps_the_title_and_adds_its_history() -> None:
    from dataclasses import replace

    from runner.model import RunDetails, RunState

    first = replace(RUN, state=RunState.SUCCEEDED)
    follow = Run(id="r-00000000ffff", repo="acme/w", issue=7, trigger_actor="alice",
                 state=RunState.PUSHING,
                 details=RunDetails(follows=first.id, follow_up_kind="review", follow_ups=1))
    later = [ev("agent.start", iteration=1),
             ev("agent.tool", tool="bash", input={"command": "python3 test_calc.py"},
                exit_code=0),
             ev("agent_done", summary="Added a docstring to mul()"),
             ev("pushed", sha="0123456789abcdef")]
    earlier = [(first, story())]
    assert pull_title(follow, later, earlier) == "Fix add() to return the sum"
    body = pull_body(follow, later, earlier=earlier)
    assert "> Fix add() to return the sum" in body  # what the change does: the first run's
    assert f"- Run `{first.id}`: succeeded" in body
    assert "  - Iteration 2: after gate:tests" in body
    assert (f"- Follow-up 1 (run `{follow.id}`), answering the review by @alice: pushing: "
            "Added a docstring to mul()") in body
    assert "  - Pushed `0123456789ab`" in body
    assert body.index("Pushed `abcdef012345`") < body.index("Pushed `0123456789ab`")


def test_what_the_reviewer_left_out_is_listed() -> None:
    events = [*story(), ev("review", verdict="approve", confidence=0.95, findings=[
        {"path": "calc.py", "line": 4, "message": "add() has no type hints"}])]
    body = pull_body(RUN, events)
    assert "## Left out" in body and "- `calc.py` line 4: add() has no type hints" in body
