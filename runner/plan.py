"""Pure: (what the forge says of an issue, what the runner holds for it) -> the one next action.

The controller calls ``plan`` every time it looks at an issue, whatever made it look (a webhook,
a poll, a restart), so an action must be right to take even when the look is repeated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from runner.follow_up import (
    AnnounceBound,
    FollowUp,
    Gather,
    KillLabelHolds,
    PullView,
    RecordPull,
    plan_pull,
    refuse_for_kill_label,
)
from runner.forge.base import Comment, Issue, LabelEvent, TextEdit
from runner.model import Run
from runner.policy import (
    Rules,
    Witness,
    authorised,
    kill_comments,
    label_priority,
    latest_addition,
    latest_removal,
    task_text,
    text_as_triggered,
)
from runner.text import UnreadableText


@dataclass(frozen=True)
class IssueView:
    """What the forge says now. ``permissions`` covers every actor named in events and comments."""

    issue: Issue
    label_events: tuple[LabelEvent, ...] = ()
    comments: tuple[Comment, ...] = ()
    permissions: Mapping[str, str] = field(default_factory=dict)
    text_edit: TextEdit | None = None  # who last edited the text, where the forge says
    witnessed: tuple[Witness, ...] = ()  # what signed deliveries showed of the text


@dataclass(frozen=True)
class Nothing:
    reason: str


@dataclass(frozen=True)
class Start:
    """Create a run for the issue, with its text as the authorised user triggered it."""

    actor: str
    title: str
    body: str
    text_hash: str
    trigger_at: str  # ISO time of the label event that triggered, so it starts one run only
    trigger_count: int = 1  # how many times the label had been added by then
    priority: int | None = None  # from a writer's orchestrator:priority-<n> label


@dataclass(frozen=True)
class Cancel:
    run_id: str
    actor: str
    reason: str


@dataclass(frozen=True)
class RejectKill:
    """A ``/kill`` from someone without permission: ignored, audited, answered once."""

    run_id: str
    comment_id: int
    author: str


@dataclass(frozen=True)
class Decline:
    """A trigger the runner does not act on (a user without permission added the label, or
    the text cannot be read as a reader sees it): said once on the issue and kept, as a run
    that ends at once, so that it is audited and looking again does nothing more."""

    actor: str
    reason: str  # what the issue is told, and the run's reason
    trigger_at: str
    trigger_count: int


Action = Nothing | Start | Cancel | RejectKill | Decline | FollowUp | Gather | AnnounceBound \
    | RecordPull | KillLabelHolds


def plan(view: IssueView | None, run: Run | None, rules: Rules, pull: PullView | None = None,
         now: float = 0.0) -> Action:
    """The one next action for an issue. ``view`` is None when the issue no longer exists;
    ``run`` is the issue's latest run, finished or not; ``pull`` what its PR says now (None:
    it has none, or the caller did not look); ``now`` the epoch time (quiet periods)."""
    active = run if run is not None and not run.terminal else None
    if active is not None:
        return _plan_active(view, active, rules, pull)
    fresh = _plan_trigger(view, run, rules)
    if run is None or isinstance(fresh, Start | Decline):
        return fresh
    steerable = view is not None and view.issue.state == "open"
    followed = plan_pull(run, pull, view.comments if view else (),
                         view.permissions if view else {}, rules, now=now,
                         pull_commands=steerable)
    # The kill label, on the issue or on the PR, holds back every follow-up while it stays.
    held = "issue" if view is not None and view.issue.has_label(rules.kill_label) else \
        "pull request" if pull is not None and pull.pull.has_label(rules.kill_label) else ""
    if held:
        followed = refuse_for_kill_label(run, pull, followed, held, rules)
    return fresh if followed is None else followed


def _additions(events: Iterable[LabelEvent], rules: Rules) -> int:
    return sum(1 for e in events if e.action == "added"
               and e.label.lower() == rules.trigger_label.lower())


def already_triggered(run: Run, events: Sequence[LabelEvent], rules: Rules) -> bool:
    """True when ``run`` was started by the trigger label's latest addition in ``events`` (or
    there is none): no new run is due, so the issue's text need not be checked again."""
    trigger = latest_addition(events, rules.trigger_label)
    if trigger is None:
        return True
    # Forges keep label times to the second: count the additions, so that a label removed
    # and added again within one second still starts a new run.
    if run.details.trigger_count:
        return run.details.trigger_count >= _additions(events, rules)
    return run.details.trigger_at == trigger.at.isoformat()


def _plan_trigger(view: IssueView | None, run: Run | None, rules: Rules) -> Action:
    """A new run from the trigger label, when one asks for it."""
    if view is None:
        return Nothing("the issue does not exist")
    issue = view.issue
    if issue.state != "open":
        return Nothing("the issue is closed")
    if not issue.has_label(rules.trigger_label):
        return Nothing(f"no {rules.trigger_label!r} label")
    if issue.has_label(rules.kill_label):
        return Nothing(f"the {rules.kill_label!r} label is present")
    trigger = latest_addition(view.label_events, rules.trigger_label)
    if trigger is None:
        return Nothing("cannot tell who added the trigger label")
    added = _additions(view.label_events, rules)
    if run is not None and already_triggered(run, view.label_events, rules):
        return Nothing(f"run {run.id} already {run.state} for this label; "
                       "remove and add the label to try again")
    at = trigger.at.isoformat()
    if not authorised(view.permissions.get(trigger.actor), rules.required_permission):
        return Decline(trigger.actor, f"@{trigger.actor} added the `{rules.trigger_label}` "
                       f"label without {rules.required_permission} permission on this "
                       "repository, so no run starts; a user with that permission must add it",
                       at, added)
    changed = text_as_triggered(issue, trigger, view.text_edit, view.witnessed,
                                view.permissions, rules)
    if changed is not None:
        return Decline(trigger.actor, changed, at, added)
    try:
        title, body, digest = task_text(issue.title, issue.body)
    except UnreadableText as exc:
        return Decline(trigger.actor, f"No run started: {exc}, then add the "
                       f"`{rules.trigger_label}` label again (remove it first).", at, added)
    priority = label_priority(issue.labels, view.label_events, view.permissions,
                              rules.required_permission)
    return Start(actor=trigger.actor, title=title, body=body, text_hash=digest,
                 trigger_at=at, trigger_count=added, priority=priority)


def _plan_active(view: IssueView | None, run: Run, rules: Rules,
                 pull: PullView | None) -> Action:
    if view is None:
        return Cancel(run.id, "runner", "the issue was deleted")
    on_pull = _plan_active_pull(run, pull, rules)
    if on_pull is not None:
        return on_pull
    issue = view.issue
    if issue.state != "open":
        return Cancel(run.id, "runner", "the issue was closed")
    if issue.has_label(rules.kill_label):
        killer = latest_addition(view.label_events, rules.kill_label)
        if killer is None or authorised(view.permissions.get(killer.actor),
                                        rules.required_permission):
            actor = killer.actor if killer else "unknown"
            return Cancel(run.id, actor, f"{rules.kill_label} label added by {actor}")
    kills = kill_comments(view.comments, view.permissions, rules, since=run.created_at)
    for kill in kills:
        if kill.authorised:
            return Cancel(run.id, kill.comment.author, kill.reason or "/kill")
    answered = set(run.details.rejected_kills)
    for kill in kills:
        if kill.comment.id not in answered:
            return RejectKill(run.id, kill.comment.id, kill.comment.author)
    if not issue.has_label(rules.trigger_label):
        removal = latest_removal(view.label_events, rules.trigger_label)
        if run.details.follows and (removal is None or removal.at.timestamp() <= int(
                run.created_at)):
            return Nothing(f"run {run.id} is {run.state}")  # a follow-up needs no label
        actor = removal.actor if removal else "unknown"
        return Cancel(run.id, actor, f"{rules.trigger_label} label removed by {actor}")
    return Nothing(f"run {run.id} is {run.state}")


def _plan_active_pull(run: Run, pull: PullView | None, rules: Rules) -> Action | None:
    """``/kill`` and the kill label on the run's PR, as on the issue; a follow-up ends with
    its PR closed."""
    if pull is None:
        return None
    if pull.pull.state == "closed" and run.details.follows:
        what = "merged" if pull.pull.merged else "closed without merging"
        return Cancel(run.id, "runner", f"the pull request was {what}")
    killer = latest_addition(pull.label_events, rules.kill_label)
    if killer is not None and authorised(pull.permissions.get(killer.actor),
                                         rules.required_permission):
        removal = latest_removal(pull.label_events, rules.kill_label)
        if removal is None or removal.at < killer.at:
            left = " (left there: it stops every follow-up until it is removed)" \
                if run.details.follows and killer.at.timestamp() < int(run.created_at) else ""
            return Cancel(run.id, killer.actor,
                          f"{rules.kill_label} label added to the PR by {killer.actor}{left}")
    kills = kill_comments(pull.comments, pull.permissions, rules, since=run.created_at)
    for kill in kills:
        if kill.authorised:
            return Cancel(run.id, kill.comment.author, kill.reason or "/kill on the PR")
    for kill in kills:  # answered once (on the issue, beside the status) and audited
        if kill.comment.id not in run.details.rejected_kills:
            return RejectKill(run.id, kill.comment.id, kill.comment.author)
    return None
