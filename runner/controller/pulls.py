"""What the controller reads of an issue's pull request, and the follow-ups it starts.

The PR is the runner's when a run of the issue opened it (the run keeps its number). A look
at an issue reads its PR only when that can matter: an active run (``/kill`` or the kill label
on the PR, a PR closed under a follow-up), or an ended run whose PR is open (reviews, bot
mentions, ``/retry``, a conflicting base) or whose end is not recorded yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from runner.follow_up import (
    BOUND_MARKER,
    KILL_LABEL_MARKER,
    AnnounceBound,
    FollowUp,
    KillLabelHolds,
    PullView,
    RecordPull,
)
from runner.forge.base import Comment, Forge, NotFound, hidden_marker
from runner.model import Run, RunDetails, RunState
from runner.run_creation import create_follow_up
from runner.store.base import Store
from runner.text import commands

log = logging.getLogger("orchestrator.controller")


# How long after a run failed or was cancelled the poll still looks for a ``/retry`` on its
# issue (webhooks bring one at any time).
RETRY_WATCH = 7 * 86400.0


def _open_pull(run: Run) -> bool:
    return bool(run.pr_number) and not run.details.pull_state


def watched(store: Store, now: float, repo: str | None = None, *,
            retries: bool = True) -> list[tuple[str, int]]:
    """Issues whose latest run has ended but that the forge may still steer: its PR is open
    (reviews, bot mentions, ``/retry``, a conflicting base, the PR's end), or, with
    ``retries``, it failed or was cancelled less than RETRY_WATCH ago (a ``/retry`` on the
    issue). The poll looks at these beside labelled issues, whose label may be gone."""
    latest: dict[tuple[str, int], Run] = {}
    for run in store.list_runs(repo=repo, limit=100000):  # newest first
        latest.setdefault((run.repo, run.issue), run)
    return [key for key, run in latest.items() if run.terminal and (
        _open_pull(run) or (retries and run.state in (RunState.FAILED, RunState.CANCELLED)
                            and bool(run.issue_hash) and now - run.updated_at < RETRY_WATCH))]


def _since(run: Run) -> datetime:
    """Forges keep whole seconds: from the second the run began (or its last answer)."""
    return datetime.fromtimestamp(int(run.details.answered_until or run.created_at), tz=UTC)


def observe_pull(forge: Forge, run: Run | None, permission: Callable[[str], str],
                 own: frozenset[str] = frozenset()) -> PullView | None:
    """What the run's PR says now, with the permissions of every author who may matter (not
    the runner's own logins ``own``, nor authors of what was answered before); None when the
    run has no PR, or its end is recorded already."""
    if run is None or not run.pr_number or run.details.pull_state:
        return None
    try:
        pull = forge.get_pull(run.repo, run.pr_number)
    except NotFound:
        return None
    if pull.state == "closed":
        return PullView(pull=pull)
    if not run.terminal:
        comments = tuple(forge.list_comments(run.repo, pull.number,
                                             since=datetime.fromtimestamp(
                                                 int(run.created_at), tz=UTC)))
        labels = tuple(e for e in forge.label_events(run.repo, pull.number))
        actors = {e.actor for e in labels} | {c.author for c in comments if commands(c.body)}
        return PullView(pull=pull, comments=comments, label_events=labels,
                        permissions={a: permission(a) for a in actors if a})
    reviews = tuple(forge.list_reviews(run.repo, pull.number))
    lines = tuple(forge.list_line_comments(run.repo, pull.number))
    since = _since(run)
    comments = tuple(forge.list_comments(run.repo, pull.number, since=since))
    after = since.timestamp()
    actors = {r.author for r in reviews
              if r.submitted_at and r.submitted_at.timestamp() >= after} | \
        {c.author for c in lines if c.created_at and c.created_at.timestamp() >= after} | \
        {c.author for c in comments}
    # Only new words need their author's permission: one request per author, not per look.
    return PullView(pull=pull, reviews=reviews, line_comments=lines, comments=comments,
                    permissions={a: permission(a) for a in actors
                                 if a and a.lower() not in own})


def retry_comments(forge: Forge, run: Run | None, permission: Callable[[str], str]
                   ) -> tuple[tuple[Comment, ...], dict[str, str]]:
    """The issue's comments that may hold a ``/retry`` for a failed or cancelled run, and
    the permissions of their authors."""
    if run is None or not run.terminal or run.state is RunState.SUCCEEDED or \
            not run.issue_hash:
        return (), {}
    comments = tuple(c for c in forge.list_comments(run.repo, run.issue, since=_since(run))
                     if commands(c.body))
    return comments, {c.author: permission(c.author) for c in comments if c.author}


def start_follow_up(store: Store, previous: Run, action: FollowUp) -> tuple[Run, bool]:
    """A new run for the issue of ``previous`` that resumes from its branch and answers what
    ``action`` says; recorded with the run it follows and what it answers."""
    details = previous.details
    run, created = create_follow_up(
        store, previous, actor=action.actor, details=RunDetails(
            trigger_at=details.trigger_at, trigger_count=details.trigger_count,
            follows=previous.id, follow_up=action.text, follow_up_kind=action.kind,
            answers=action.answers, threads=action.threads,
            answered_until=max(details.answered_until, action.newest),
            follow_ups=details.follow_ups + 1,
            spent_before=details.spent_before + previous.cost_usd))
    if created:
        store.append_event(run.id, "follow_up", {
            "follows": previous.id, "kind": action.kind, "answers": list(action.answers),
            "threads": list(action.threads), "pull": previous.pr_number}, actor=action.actor)
        log.info("run %s follows %s for %s#%s (%s by %s)", run.id, previous.id, run.repo,
                 run.issue, action.kind, action.actor)
    return run, created


def record_pull(store: Store, action: RecordPull) -> None:
    """The run's record says its PR was merged or closed (its state does not change)."""
    run = store.get_run(action.run_id)
    store.update_run(run.id, details=replace(run.details, pull_state=action.state))
    store.append_event(run.id, f"pull_{action.state}", {"pull": run.pr_number})


def announce_bound(store: Store, forge: Forge, run: Run, action: AnnounceBound) -> None:
    """Say once on the PR that no more follow-ups start (a marker makes a repeat an edit)."""
    forge.upsert_comment(run.repo, action.pull, hidden_marker(BOUND_MARKER), action.text)
    store.update_run(run.id, details=replace(store.get_run(run.id).details, bound_told=True))
    store.append_event(run.id, "follow_up_bound", {"pull": action.pull})


def tell_kill_label(store: Store, forge: Forge, run: Run, action: KillLabelHolds) -> None:
    """Say once on the PR that the kill label holds back follow-ups (a repeat is an edit)."""
    forge.upsert_comment(run.repo, action.pull, hidden_marker(KILL_LABEL_MARKER), action.text)
    store.update_run(run.id, details=replace(store.get_run(run.id).details,
                                             kill_label_told=True))
    store.append_event(run.id, "follow_up_held", {"pull": action.pull, "why": "kill label"})
