"""Pure rules: who may start and kill runs, what counts as a kill, what text reaches a model
(rendered by ``runner.text``).

Nothing here touches the network, the disk or a process; ``plan.py`` builds on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runner.forge.base import MARKER_RE, PERMISSION_RANK, Comment, Issue, LabelEvent, TextEdit
from runner.model import text_hash
from runner.text import UnreadableText, commands, visible, visible_title


@dataclass(frozen=True)
class Rules:
    """The configured policy: label names and who may act."""

    trigger_label: str = "orchestrator"
    kill_label: str = "orchestrator:kill"
    required_permission: str = "write"
    bot_user: str | None = None
    bot_logins: frozenset[str] = frozenset()  # every login the runner acts as (App: <slug>[bot])
    max_follow_ups: int = 3  # follow-up runs per issue
    follow_up_quiet: float = 60.0  # seconds without a new review comment before a follow-up
    max_cost_usd: float = float("inf")  # what an issue's runs may spend together


def authorised(permission: str | None, required: str = "write") -> bool:
    """True when ``permission`` (admin, write, read, none) is at least ``required``."""
    return PERMISSION_RANK.get(permission or "none", 0) >= PERMISSION_RANK[required]


def task_text(title: str, body: str) -> tuple[str, str, str]:
    """(title, body, hash) of the issue as a reader of its page sees it, which is what the agent
    is given and what the hash covers. Raises ``UnreadableText`` when the runner cannot tell
    what a reader sees (a direction override): the run must not start."""
    shown_title, shown_body = visible_title(title), visible(body, what="issue body")
    return shown_title, shown_body, text_hash(f"{shown_title}\n\n{shown_body}")


@dataclass(frozen=True)
class Witness:
    """A signed delivery showed that ``actor`` labelled, opened or edited the issue while its
    title and text were the ones with ``digest`` (``text_digest``)."""

    actor: str
    digest: str


def text_digest(title: str, body: str) -> str:
    """The digest by which a witnessed issue title and text are compared with them now."""
    return text_hash(f"{title}\0{body}")


def text_as_triggered(issue: Issue, trigger: LabelEvent, edit: TextEdit | None,
                      witnessed: Iterable[Witness], permissions: Mapping[str, str],
                      rules: Rules) -> str | None:
    """None when the issue's title and text now are ones an authorised user saw when
    triggering (or wrote since); else the reason no run may start, for the issue.

    Where the forge records who last edited them (GitHub): an edit after the trigger counts
    only when its editor is authorised. Where it does not (Forgejo): they must be ones that a
    signed delivery showed an authorised user labelling, opening or editing; without any such
    delivery (polling only), the issue must not have changed since the trigger at all (to the
    second, as forges keep time). ``edit`` None: the caller did not look (no check).
    """
    if edit is None:
        return None
    perm, label, by = rules.required_permission, rules.trigger_label, trigger.actor
    again = (f"A user with {perm} permission must read the issue as it is now and add the "
             f"`{label}` label again (remove it first).")
    if edit.recorded:
        for what, at, editor in (("text", edit.at, edit.editor),
                                 ("title", edit.title_at, edit.title_editor)):
            # An edit in the trigger's own second counts as after it: forges keep whole seconds.
            if at is None or int(at.timestamp()) < int(trigger.at.timestamp()):
                continue
            if editor and authorised(permissions.get(editor), perm):
                continue
            return (f"No run started: @{editor or 'someone'} edited the issue's {what} at "
                    f"{at:%Y-%m-%d %H:%M:%S} UTC, after @{by} added the `{label}` label, without "
                    f"{perm} permission, so it is not the one @{by} triggered. {again}")
        return None
    witnesses = list(witnessed)
    digest = text_digest(issue.title, issue.body)
    if any(w.digest == digest and authorised(permissions.get(w.actor), perm) for w in witnesses):
        return None
    changed = issue.updated_at is not None and \
        int(issue.updated_at.timestamp()) > int(trigger.at.timestamp())
    if not witnesses and not changed:
        return None
    return (f"No run started: the issue changed after @{by} added the `{label}` label, and this "
            "forge does not record who edits an issue's text, so the runner cannot show that "
            f"the title and text now are the ones @{by} triggered. {again}")


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
    """The runner's own comments: by the bot account (or the App's ``<slug>[bot]``), or
    carrying its hidden marker."""
    if comment.author and (comment.author == rules.bot_user
                           or comment.author.lower() in rules.bot_logins):
        return True
    return bool(MARKER_RE.search(comment.body))


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
