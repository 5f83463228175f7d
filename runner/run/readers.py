"""What a run reads of its issue, as the policy allows: trusted labels, writers' comments."""

from __future__ import annotations

from gates.choose import YOLO_LABEL
from runner.config import Settings
from runner.forge.base import own_logins
from runner.policy import Rules, authorised, comments_for_agent, latest_addition
from runner.run.context import RunContext
from runner.sizing import FORCE_LABEL


def rules_for(settings: Settings, bot_logins: frozenset[str] = frozenset()) -> Rules:
    """The policy the configuration sets: label names, the permission to act, and the logins
    the runner itself acts as (whose words never steer a run)."""
    return Rules(trigger_label=settings.labels.trigger, kill_label=settings.labels.kill,
                 required_permission=settings.limits.trigger_permission,
                 bot_logins=bot_logins, max_follow_ups=settings.limits.max_follow_ups,
                 follow_up_quiet=settings.limits.follow_up_quiet,
                 max_cost_usd=settings.agent.max_cost_usd)


def trusted_labels(ctx: RunContext, labels: list[str]) -> list[str]:
    """The issue's labels, without the privileged ones (force, YOLO, allow CI changes)
    unless someone with the required permission added them."""
    privileged = {p.lower() for p in (FORCE_LABEL, YOLO_LABEL, ctx.gates.allow_ci_changes_label)}
    if not any(label.lower() in privileged for label in labels):
        return labels
    run = ctx.run
    events = ctx.forge.label_events(run.repo, run.issue)
    trusted = []
    for label in labels:
        if label.lower() in privileged:
            added = latest_addition(events, label)
            if added is None or not authorised(ctx.forge.permission(run.repo, added.actor),
                                               ctx.settings.limits.trigger_permission):
                ctx.event("label_ignored", {"label": label,
                                            "added_by": added.actor if added else "unknown"})
                continue
        trusted.append(label)
    return trusted


def writer_comments(ctx: RunContext) -> list[tuple[str, str]]:
    """Comments by writers, read once per iteration (a maintainer may steer between)."""
    iteration = max(ctx.run.iteration, 1)
    if ctx.comments is not None and ctx.comments[0] == iteration:
        return ctx.comments[1]
    run = ctx.run
    comments = ctx.forge.list_comments(run.repo, run.issue)
    permissions = {c.author: ctx.forge.permission(run.repo, c.author) for c in comments}
    # The bot's own login (an App's <slug>[bot]): its words never steer the agent.
    found = comments_for_agent(comments, permissions,
                               rules_for(ctx.settings, own_logins([ctx.forge])))
    ctx.comments = (iteration, found)
    return found
