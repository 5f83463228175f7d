"""What a step answers: go on to the state it moved the run to, or wait (owned by nobody)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GoOn:
    """The step moved the run on (or ended it): take the next step now."""


@dataclass(frozen=True)
class Wait:
    """Nothing to do until an event concerns the run, or until ``until`` (epoch seconds).

    The run gives up its worker slot, its lease and its container meanwhile; whichever process
    sees the event or the time first takes the next step."""

    until: float
    reason: str


Outcome = GoOn | Wait
