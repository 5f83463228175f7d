"""Pure rules: who may start and kill runs, what counts as a kill, what text reaches a model.

Nothing here touches the network, the disk or a process; ``plan.py`` builds on it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runner.forge.base import MARKER_RE, PERMISSION_RANK, Comment, LabelEvent
from runner.model import text_hash

# Characters a human does not see but a model reads: zero-width, bidi controls, tag characters.
_INVISIBLE = re.compile(
    "[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000e0000-\U000e007f]"
)
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
# Markdown "comments" that render as nothing: [//]: # (hidden) and [comment]: <> (hidden)
_MD_COMMENT = re.compile(r"^\s{0,3}\[(?://|comment)\]:\s*(?:#|<>)\s*.*$", re.MULTILINE | re.I)
_KILL = re.compile(r"^\s*/kill(?:\s+(?P<reason>[^\n]*))?\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Rules:
    """The configured policy: label names and who may act."""

    trigger_label: str = "orchestrator"
    kill_label: str = "orchestrator:kill"
    required_permission: str = "write"
    bot_user: str | None = None
    bot_logins: frozenset[str] = frozenset()  # every login the runner acts as (App: <slug>[bot])


def authorised(permission: str | None, required: str = "write") -> bool:
    """True when ``permission`` (admin, write, read, none) is at least ``required``."""
    return PERMISSION_RANK.get(permission or "none", 0) >= PERMISSION_RANK[required]


def strip_hidden(text: str) -> str:
    """The text without what a reader cannot see: HTML and Markdown comments, zero-width and
    bidi control characters. Applied to everything before it reaches a model."""
    text = unicodedata.normalize("NFC", text)
    text = _HTML_COMMENT.sub("", text)
    text = _MD_COMMENT.sub("", text)
    text = _INVISIBLE.sub("", text)
    return text.strip()


def task_text(title: str, body: str) -> tuple[str, str, str]:
    """(title, body, hash) of the issue as the agent will be given it."""
    clean_title, clean_body = strip_hidden(title), strip_hidden(body)
    return clean_title, clean_body, text_hash(f"{clean_title}\n\n{clean_body}")


def kill_command(body: str) -> str | None:
    """The reason of a ``/kill [reason]`` line in a comment ('' without one), else None.

    Hidden text is stripped first, so a ``/kill`` inside an HTML comment does not count.
    """
    match = _KILL.search(strip_hidden(body))
    if match is None:
        return None
    return (match.group("reason") or "").strip()


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
    """The runner's own comments: by the bot account (or the App's ``<slug>[bot]``), or
    carrying its hidden marker."""
    if comment.author and (comment.author == rules.bot_user
                           or comment.author.lower() in rules.bot_logins):
        return True
    return bool(MARKER_RE.search(comment.body))


def comments_for_agent(comments: Iterable[Comment], permissions: Mapping[str, str],
                       rules: Rules) -> list[tuple[str, str]]:
    """(author, text) of the comments that may steer the agent: by users with the required
    permission, not the bot, not kill commands, hidden text stripped."""
    out = []
    for comment in comments:
        if is_own(comment, rules) or kill_command(comment.body) is not None:
            continue
        if not authorised(permissions.get(comment.author), rules.required_permission):
            continue
        text = strip_hidden(comment.body)
        if text:
            out.append((comment.author, text))
    return out


PRIORITY_PREFIX = "orchestrator:priority-"


def is_priority_label(label: str) -> bool:
    """True for the labels that set a run's priority (``orchestrator:priority-<n>``)."""
    return label.lower().startswith(PRIORITY_PREFIX)


def label_priority(labels: Iterable[str], events: Iterable[LabelEvent],
                   permissions: Mapping[str, str], required: str) -> int | None:
    """The highest priority (1 to 10) among ``orchestrator:priority-<n>`` labels that a user
    with ``required`` permission added last; None when there is none."""
    events = tuple(events)
    found: list[int] = []
    for label in labels:
        if not is_priority_label(label):
            continue
        number = label[len(PRIORITY_PREFIX):]
        if not number.isdigit() or not 1 <= int(number) <= 10:
            continue
        added = latest_addition(events, label)
        if added is not None and authorised(permissions.get(added.actor), required):
            found.append(int(number))
    return max(found, default=None)
