"""The run state machine: legal transitions only, terminal states never change."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.model import (
    TERMINAL,
    TRANSITIONS,
    Budget,
    IllegalTransition,
    Run,
    RunState,
    Usage,
    can_transition,
)

HAPPY_PATH = [RunState.PREPARING, RunState.RUNNING, RunState.PUSHING, RunState.GATING,
              RunState.REVIEWING, RunState.SUCCEEDED]


def new_run() -> Run:
    return Run(id="r-000000abcdef", repo="acme/widgets", issue=7)


def test_the_happy_path_of_the_architecture() -> None:
    run = new_run()
    for target in HAPPY_PATH:
        run, _ = run.transition(target, actor="runner", reason="", at=1.0)
        assert run.state is target
    assert run.terminal


@pytest.mark.parametrize("source", [RunState.GATING, RunState.REVIEWING])
def test_gating_and_review_failures_go_back_to_the_agent(source: RunState) -> None:
    assert can_transition(source, RunState.RUNNING)


@pytest.mark.parametrize("state", sorted(set(RunState) - TERMINAL))
def test_failed_and_cancelled_reachable_from_every_active_state(state: RunState) -> None:
    assert can_transition(state, RunState.FAILED)
    assert can_transition(state, RunState.CANCELLED)


def test_illegal_transition_raises_with_what_is_allowed() -> None:
    with pytest.raises(IllegalTransition, match="cannot go from queued to pushing"):
        new_run().transition(RunState.PUSHING, actor="x", reason="", at=0)


def test_cancel_records_who_and_why() -> None:
    run, event = new_run().transition(RunState.CANCELLED, actor="alice", reason="/kill", at=5.0)
    assert (run.killed_by, run.reason) == ("alice", "/kill")
    assert event.data == {"from": "queued", "to": "cancelled", "reason": "/kill"}
    assert (event.actor, event.at, event.kind) == ("alice", 5.0, "transition")


@given(st.lists(st.sampled_from(list(RunState)), max_size=40))
def test_no_sequence_leaves_a_terminal_state(targets: list[RunState]) -> None:
    run = new_run()
    reached_terminal: RunState | None = None
    for target in targets:
        try:
            run, _ = run.transition(target, actor="t", reason="", at=0)
        except IllegalTransition:
            continue
        if reached_terminal is not None:
            pytest.fail(f"left terminal state {reached_terminal} for {target}")
        if run.terminal:
            reached_terminal = run.state
    if reached_terminal is not None:
        assert run.state is reached_terminal


@given(st.lists(st.sampled_from(list(RunState)), max_size=40))
def test_every_applied_transition_yields_exactly_one_event(targets: list[RunState]) -> None:
    run, events, applied = new_run(), [], 0
    for target in targets:
        before = run.state
        try:
            run, event = run.transition(target, actor="t", reason="r", at=float(applied))
        except IllegalTransition:
            assert target not in TRANSITIONS[before]
            continue
        applied += 1
        events.append(event)
        assert event.data["from"] == before and event.data["to"] == target
    assert len(events) == applied


def test_run_round_trips_through_a_dict() -> None:
    run, _ = new_run().transition(RunState.PREPARING, actor="a", reason="", at=1)
    assert Run.from_dict(run.to_dict()) == run
    assert run.key == "acme/widgets#7"


def test_budget_names_the_cap_reached() -> None:
    budget = Budget(max_turns=10, max_tokens=1000, max_cost_usd=1.0)
    assert budget.exceeded(3, Usage(tokens_in=100)) is None
    assert budget.exceeded(10, Usage()) == "max_turns"
    assert budget.exceeded(1, Usage(tokens_in=900, tokens_out=100)) == "budget"
    assert budget.exceeded(1, Usage(cost_usd=1.0)) == "budget"
    assert budget.share_used(9, Usage()) == pytest.approx(0.9)
