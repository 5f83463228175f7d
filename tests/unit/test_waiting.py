"""Pure parts of waiting: how often a waiting run looks at CI, and which priority label counts."""

from __future__ import annotations

from datetime import UTC, datetime

from runner.forge.base import LabelEvent
from runner.model import Run, RunDetails, RunState
from runner.policy import label_priority
from runner.run.gating import poll_delay


def test_without_webhooks_the_looks_back_off_from_the_first_interval_to_the_longest() -> None:
    delays = [poll_delay(looks, 10, 300, webhooks=False) for looks in range(1, 8)]
    assert delays == [10, 20, 40, 80, 160, 300, 300]


def test_with_webhooks_a_waiting_run_looks_only_on_the_longest_fallback() -> None:
    assert {poll_delay(looks, 10, 300, webhooks=True) for looks in range(1, 5)} == {300}


def _added(label: str, actor: str, minute: int) -> LabelEvent:
    return LabelEvent(label=label, action="added", actor=actor,
                      at=datetime(2026, 1, 1, 0, minute, tzinfo=UTC))


def test_the_highest_priority_label_a_writer_added_counts() -> None:
    labels = ["orchestrator", "orchestrator:priority-3", "orchestrator:priority-9",
              "orchestrator:priority-10"]
    events = [_added("orchestrator:priority-3", "alice", 1),
              _added("orchestrator:priority-9", "alice", 2),
              _added("orchestrator:priority-10", "mallory", 3)]
    permissions = {"alice": "write", "mallory": "read"}
    assert label_priority(labels, events, permissions, "write") == 9


def test_no_priority_from_labels_out_of_range_or_without_a_known_author() -> None:
    labels = ["orchestrator:priority-0", "orchestrator:priority-11", "orchestrator:priority-x",
              "orchestrator:priority-4"]
    events = [_added(label, "alice", 1) for label in labels[:3]]
    assert label_priority(labels, events, {"alice": "admin"}, "write") is None


def test_a_run_record_from_before_details_keeps_what_it_held() -> None:
    old = {"id": "r-0123456789ab", "repo": "acme/w", "issue": 3, "state": "gating",
           "extra": {"trigger_at": "2026-01-01T00:00:00+00:00", "trigger_count": 2,
                     "labels": ["orchestrator"], "something_retired": 1}}
    run = Run.from_dict(old)
    assert run.state is RunState.GATING and run.priority == 5 and not run.waiting
    assert run.details == RunDetails(trigger_at="2026-01-01T00:00:00+00:00", trigger_count=2,
                                     labels=("orchestrator",))
    assert Run.from_dict(run.to_dict()) == run
