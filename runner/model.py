"""Runs, their states and legal transitions, audit events, budgets: pure data, no I/O.

    queued -> preparing -> running -> pushing -> gating -> reviewing -> succeeded
                              ^                    |          |
                              +--------------------+----------+   (next iteration)
    failed and cancelled are reachable from every non-terminal state; terminal states never change.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any


class RunState(StrEnum):
    QUEUED = "queued"
    PREPARING = "preparing"
    RUNNING = "running"
    PUSHING = "pushing"
    GATING = "gating"
    REVIEWING = "reviewing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})
ACTIVE = frozenset(RunState) - TERMINAL

_FORWARD: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.PREPARING}),
    RunState.PREPARING: frozenset({RunState.RUNNING}),
    RunState.RUNNING: frozenset({RunState.PUSHING}),
    RunState.PUSHING: frozenset({RunState.GATING}),
    RunState.GATING: frozenset({RunState.REVIEWING, RunState.RUNNING, RunState.SUCCEEDED}),
    RunState.REVIEWING: frozenset({RunState.SUCCEEDED, RunState.RUNNING}),
}

# Gating may finish a run directly when its profile turns the AI review off.
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    state: (_FORWARD.get(state, frozenset()) | {RunState.FAILED, RunState.CANCELLED})
    if state in ACTIVE else frozenset()
    for state in RunState
}


class IllegalTransition(ValueError):
    """A state change the run's state machine does not allow."""

    def __init__(self, run_id: str, current: RunState, target: RunState) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none: the run is finished"
        super().__init__(f"run {run_id}: cannot go from {current} to {target} "
                         f"(allowed from {current}: {allowed})")
        self.current, self.target = current, target


def can_transition(current: RunState, target: RunState) -> bool:
    return target in TRANSITIONS[current]


_RUN_ID = re.compile(r"^r-[0-9a-f]{6,32}$")


def is_run_id(text: str) -> bool:
    return bool(_RUN_ID.match(text))


def branch_name(issue: int) -> str:
    """The branch a run for an issue works on."""
    return f"orchestrator/issue-{issue}"


def text_hash(text: str) -> str:
    """The hash kept with a run of the issue text the agent was given."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Event:
    """One audit record: a transition, a tool call, a gate result, a cost, a kill."""

    run_id: str
    kind: str
    at: float
    actor: str = "runner"
    data: dict[str, Any] = field(default_factory=dict)
    seq: int = 0  # assigned by the store, 1-based per run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        return cls(run_id=raw["run_id"], kind=raw["kind"], at=float(raw["at"]),
                   actor=raw.get("actor", "runner"), data=dict(raw.get("data") or {}),
                   seq=int(raw.get("seq", 0)))


PRIORITY_DEFAULT = 5  # 1 (last) to 10 (first): the order in which waiting runs are claimed


@dataclass(frozen=True)
class RunDetails:
    """What a run keeps between its steps, beside the fields every run has."""

    trigger_at: str = ""  # ISO time of the label event that triggered the run
    trigger_count: int = 0  # how many times the trigger label had been added by then
    issue_labels: tuple[str, ...] = ()  # the issue's labels when the run started
    labels: tuple[str, ...] = ()  # those of them the run trusts (privileged ones by writers)
    profile: str = ""  # the gate profile, chosen while preparing
    gates_yml: str = ""  # the repository's own gate profiles, kept for a resumed run
    gates_source: str = ""
    feedback: str = ""  # the next instruction for the agent (failures of the last iteration)
    attempts: int = 0  # environmental failures so far
    outage_since: float = 0.0  # when the forge started answering "try again later"
    rejected_kills: tuple[int, ...] = ()  # /kill comments answered as not allowed
    ci_deadline: float = 0.0  # epoch seconds by which CI must finish on the head
    ci_looks: int = 0  # how many times CI was read on this head (sets the poll backoff)
    # The last pre-push gate results (as GateResult.to_dict), for the reviewer in a later claim.
    gate_results: tuple[dict[str, Any], ...] = ()
    budget_told: str = ""  # the UTC day the issue was told its run waits for the spend budget
    # A follow-up (a run started by a review, a bot mention, /retry or a conflicting base):
    follows: str = ""  # the id of the run it follows
    follow_up: str = ""  # what it answers, as the agent is given it (the text when triggered)
    follow_up_kind: str = ""  # review, retry or conflict
    answers: tuple[int, ...] = ()  # ids of the reviews and comments it answers
    threads: tuple[int, ...] = ()  # ids of the line comments whose threads get a reply
    answered_until: float = 0.0  # epoch time of the newest review or comment answered so far
    follow_ups: int = 0  # follow-ups of the issue so far, this one included
    spent_before: float = 0.0  # model cost (USD) of the issue's earlier runs this one follows
    replied: tuple[int, ...] = ()  # line comments answered on the forge already
    pull_state: str = ""  # "merged" or "closed" once the run's pull request is
    bound_told: bool = False  # the PR was told that no more follow-ups start
    kill_label_told: bool = False  # the PR was told a kill label holds back follow-ups

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | RunDetails | None) -> RunDetails:
        if isinstance(raw, RunDetails):
            return raw
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in (raw or {}).items():
            if key not in known:
                continue  # written by another version of the runner
            values[key] = tuple(value) if isinstance(value, list) else value
        return cls(**values)


@dataclass(frozen=True)
class Run:
    """One attempt to turn one issue into a green pull request."""

    id: str
    repo: str  # owner/name
    issue: int
    state: RunState = RunState.QUEUED
    created_at: float = 0.0
    updated_at: float = 0.0
    trigger_actor: str = ""
    issue_title: str = ""
    issue_body: str = ""  # the text as it was when an authorised user triggered
    issue_hash: str = ""
    iteration: int = 0
    branch: str = ""
    pr_number: int | None = None
    pr_url: str = ""
    head_sha: str = ""
    cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    reason: str = ""  # why it ended, for terminal runs
    killed_by: str = ""
    priority: int = PRIORITY_DEFAULT
    # Claimable from this epoch time on (0: now). A waiting run sets it to its next look;
    # an event that concerns the run sets it back to 0 and counts in ``wakes``.
    wake_at: float = 0.0
    wakes: int = 0
    details: RunDetails = field(default_factory=RunDetails)

    @property
    def key(self) -> str:
        """The work-queue key of the issue this run belongs to."""
        return f"{self.repo}#{self.issue}"

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    def transition(self, target: RunState, *, actor: str, reason: str, at: float
                   ) -> tuple[Run, Event]:
        """The run in ``target`` and the one audit event that records the change."""
        if not can_transition(self.state, target):
            raise IllegalTransition(self.id, self.state, target)
        changes: dict[str, Any] = {"state": target, "updated_at": at}
        if target.terminal:
            changes["reason"] = reason
        if target is RunState.CANCELLED:
            changes["killed_by"] = actor
        event = Event(run_id=self.id, kind="transition", at=at, actor=actor,
                      data={"from": str(self.state), "to": str(target), "reason": reason})
        return replace(self, **changes), event

    @property
    def waiting(self) -> bool:
        """True while the run waits for an event or its next look, owned by no process."""
        return not self.terminal and self.wake_at > 0

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["state"] = str(self.state)
        raw["details"] = self.details.to_dict()
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Run:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in raw.items() if k in known}
        values["state"] = RunState(values.get("state", "queued"))
        # Records written before ``details`` had a free-form ``extra``.
        values["details"] = RunDetails.from_dict(raw.get("details", raw.get("extra")))
        return cls(**values)


# Fields a store may update without a state change.
MUTABLE_FIELDS = frozenset(Run.__dataclass_fields__) - {"id", "repo", "issue", "state",
                                                         "created_at"}


@dataclass(frozen=True)
class Lease:
    """A worker's claim on a run. ``token`` fences writes: it only ever grows per run."""

    run_id: str
    worker: str
    token: int
    expires_at: float


@dataclass(frozen=True)
class KillRequest:
    run_id: str
    actor: str
    reason: str
    at: float


@dataclass(frozen=True)
class Usage:
    tokens_in: int = 0
    tokens_out: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.tokens_in + other.tokens_in, self.tokens_out + other.tokens_out,
                     self.cache_read + other.cache_read, self.cache_write + other.cache_write,
                     self.cost_usd + other.cost_usd)

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out + self.cache_read + self.cache_write


@dataclass(frozen=True)
class Budget:
    """What one run may spend. ``check`` says which cap, if any, is reached."""

    max_turns: int
    max_tokens: int
    max_cost_usd: float
    warn_at: float = 0.9

    def exceeded(self, turns: int, usage: Usage) -> str | None:
        if turns >= self.max_turns:
            return "max_turns"
        if usage.tokens >= self.max_tokens or usage.cost_usd >= self.max_cost_usd:
            return "budget"
        return None

    def share_used(self, turns: int, usage: Usage) -> float:
        return max(turns / self.max_turns, usage.tokens / self.max_tokens,
                   usage.cost_usd / self.max_cost_usd)
