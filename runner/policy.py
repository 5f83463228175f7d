"""Pure rules: who may start and kill runs, what counts as a kill, what text reaches a model
(rendered by ``runner.text``).

Nothing here touches the network, the disk or a process; ``plan.py`` builds on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runner.forge.base import MARKER_RE, PERMISSION_RANK, Comment, LabelEvent
from runner.model import text_hash
from runner.text import UnreadableText, commands, visible, visible_title


@dataclass(frozen=True)
class Rules:
    """The configured policy: label names and who may act."""

    trigger_label: str = "orchestrator"
    kill_label: str = "orchestrator:kill"
    required_permission: str = "write"
    bot_user: str | None = None


def authorised(permission: str | None, required: str = "write") -> bool:
    """True when ``permission`` (admin, write, read, none) is at least ``required``."""
    return PERMISSION_RANK.get(permission or "none", 0) >= PERMISSION_RANK[required]


def task_text(title: str, body: str) -> tuple[str, str, str]:
    """(title, body, hash) of the issue as a reader of its page sees it, which is what the agent
    is given and what the hash covers. Raises ``UnreadableText`` when the runner cannot tell
    what a reader sees (a direction override): the run must not start."""
    shown_title, shown_body = visible_title(title), visible(body, what="issue body")
    return shown_title, shown_body, text_hash(f"{shown_title}\n\n{shown_body}")


def kill_command(body: str) -> str | None:
    """The reason of a ``/kill [reason]`` paragraph line in a comment ('' without one), else
    None. In code, a quote or hidden text it is no command (``text.commands``)."""
    for command in commands(body):
        if command.name == "kill":
            return command.argument
    return None


def latest_addition(events: Iterable[LabelEvent], label: str) -> LabelEvent | None:
    """The most recent time ``label`` was added, if it was."""
    return _latest(events, label, "added")


def latest_removal(events: Iterable[LabelEvent], label: str) -> LabelEvent | None:
    """The most recent time ``label`` was removed, if it was."""
    return _latest(events, label, "removed")


def _latest(events: Iterable[LabelEvent], label: str, action: str) -> LabelEvent | None:
    wanted = label.lower()
    found: LabelEvent | None = None
    for event in events:
        if event.label.lower() == wanted and event.action == action and (
                found is None or event.at >= found.at):
            found = event
    return found


@dataclass(frozen=True)
class KillComment:
    comment: Comment
    reason: str
    authorised: bool


def kill_comments(comments: Iterable[Comment], permissions: Mapping[str, str],
                  rules: Rules, since: float) -> list[KillComment]:
    """The ``/kill`` comments posted at or after ``since`` (epoch seconds), oldest first.

    Forges keep comment times to the second, so ``since`` counts from its whole second.
    """
    found = []
    for comment in comments:
        if comment.created_at.timestamp() < int(since) or is_own(comment, rules):
            continue
        reason = kill_command(comment.body)
        if reason is None:
            continue
        ok = authorised(permissions.get(comment.author), rules.required_permission)
        found.append(KillComment(comment, reason, ok))
    return found


def is_own(comment: Comment, rules: Rules) -> bool:
    """The runner's own comments: by the bot account, or carrying its hidden marker."""
    return comment.author == rules.bot_user or bool(MARKER_RE.search(comment.body))


def comments_for_agent(comments: Iterable[Comment], permissions: Mapping[str, str],
                       rules: Rules) -> list[tuple[str, str]]:
    """(author, text) of the comments that may steer the agent: by users with the required
    permission, not the bot, not kill commands, as a reader sees them."""
    out = []
    for comment in comments:
        if is_own(comment, rules) or kill_command(comment.body) is not None:
            continue
        if not authorised(permissions.get(comment.author), rules.required_permission):
            continue
        try:
            text = visible(comment.body, what="comment")
        except UnreadableText as exc:  # a writer's comment, but not one the runner can read
            text = f"(comment withheld: {exc})"
        if text:
            out.append((comment.author, text))
    return out
