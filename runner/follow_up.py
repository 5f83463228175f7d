"""Pure: what a pull request's reviewers and commands ask of a finished run -> the next action.

A follow-up is a new run for the same issue that resumes from the PR's branch. It is asked
for by a writer's review requesting changes, a writer's review or comment that mentions the
bot, a writer's ``/retry`` after a failed or cancelled run, or a base branch the PR conflicts
with. Everything it answers goes to the agent in one first message (``render_request``), as
a reader of the page saw it when the follow-up was triggered. Readers' words never get here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from runner.forge.base import Comment, LabelEvent, LineComment, PullRequest, Review
from runner.model import Run, RunState
from runner.policy import Rules, authorised, is_own
from runner.text import UnreadableText, commands, visible

RETRY, REVIEW, CONFLICT = "retry", "review", "conflict"
BOUND_MARKER = "orchestrator:follow-up-bound"
KILL_LABEL_MARKER = "orchestrator:follow-up-kill-label"
MAX_REQUEST_CHARS = 60_000  # a review longer than this is cut, and the agent told so


@dataclass(frozen=True)
class PullView:
    """What the forge says now of the run's pull request. ``permissions`` covers every author
    of a review, line comment and comment here."""

    pull: PullRequest
    reviews: tuple[Review, ...] = ()
    line_comments: tuple[LineComment, ...] = ()
    comments: tuple[Comment, ...] = ()  # the PR's conversation
    label_events: tuple[LabelEvent, ...] = ()
    permissions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FollowUp:
    """Start a follow-up of ``follows`` that answers ``text`` (already as a reader sees it)."""

    follows: str
    kind: str  # review, retry or conflict
    actor: str
    text: str
    answers: tuple[int, ...] = ()  # review and comment ids
    threads: tuple[int, ...] = ()  # first line comments of the threads answered
    newest: float = 0.0  # epoch time of the newest thing answered


@dataclass(frozen=True)
class Gather:
    """Comments are still coming: look again in ``seconds`` (the quiet period)."""

    seconds: float


@dataclass(frozen=True)
class AnnounceBound:
    """The issue has had all its follow-ups: say so on the PR, once."""

    run_id: str
    pull: int
    text: str


@dataclass(frozen=True)
class KillLabelHolds:
    """A follow-up was asked for while the kill label is on the issue or the PR: none starts;
    say so on the PR, once, with what to do."""

    run_id: str
    pull: int
    text: str


@dataclass(frozen=True)
class RecordPull:
    """The run's PR was merged or closed: its record says so."""

    run_id: str
    state: str  # merged or closed


PullAction = FollowUp | Gather | AnnounceBound | RecordPull | KillLabelHolds


def mentions(text: str, rules: Rules) -> bool:
    """True when ``text`` (as a reader sees it, code left out) addresses the bot by name."""
    names = {login.removesuffix("[bot]") for login in rules.bot_logins}
    if rules.bot_user:
        names.add(rules.bot_user.lower())
    prose = re.sub(r"`+[^`]*`+", " ", text)
    return any(re.search(rf"(?<![\w@/.-])@{re.escape(name)}(?![\w-])", prose, re.IGNORECASE)
               for name in names if name)


def _shown(body: str, what: str) -> str:
    try:
        return visible(body, what=what).strip()
    except UnreadableText as exc:  # a writer's text, but not one the runner can read
        return f"(withheld: {exc})"


def _epoch(at: datetime | None) -> float:
    return at.timestamp() if at is not None else 0.0


def _writer(author: str, permissions: Mapping[str, str], rules: Rules) -> bool:
    return bool(author) and authorised(permissions.get(author), rules.required_permission)


def _own(author: str, rules: Rules) -> bool:
    lowered = author.lower()
    return lowered in rules.bot_logins or (rules.bot_user or "").lower() == lowered


def command_of(body: str, name: str) -> bool:
    """True when ``body`` holds the command ``/name`` as a reader sees it (not in code)."""
    return any(c.name == name for c in commands(body))


def plan_pull(run: Run, pull: PullView | None, issue_comments: Iterable[Comment],
              issue_permissions: Mapping[str, str], rules: Rules, *, now: float,
              pull_commands: bool = True) -> PullAction | None:
    """The one next action for the PR of ``run`` (the issue's latest run, ended), None when
    there is nothing to do. ``pull_commands`` False: only the PR's end is recorded."""
    if pull is not None and pull.pull.state == "closed":
        state = "merged" if pull.pull.merged else "closed"
        return None if run.details.pull_state == state else RecordPull(run.id, state)
    if not pull_commands:
        return None
    since = int(run.details.answered_until or run.created_at)
    answered = set(run.details.answers)
    asked = _retry(run, pull, issue_comments, issue_permissions, rules, since, answered)
    if asked is None and pull is not None:
        asked = _review(run, pull, rules, since, answered)
        if asked is None and run.state is RunState.SUCCEEDED:
            asked = _conflict(run, pull)
    if asked is None:
        return None
    if asked.kind == REVIEW and now - asked.newest < rules.follow_up_quiet:
        return Gather(rules.follow_up_quiet - (now - asked.newest))
    spent = run.details.spent_before + run.cost_usd
    if run.details.follow_ups >= rules.max_follow_ups or spent >= rules.max_cost_usd:
        if pull is None or run.details.bound_told:
            return None
        why = (f"the limit of {rules.max_follow_ups} follow-up(s) per issue"
               if run.details.follow_ups >= rules.max_follow_ups
               else f"the issue's cost budget (${rules.max_cost_usd:.2f}, ${spent:.2f} spent)")
        who = "" if asked.kind == CONFLICT else f"@{asked.actor}: "
        return AnnounceBound(run.id, pull.pull.number,
                             f"{who}this pull request has reached {why}, so no "
                             "follow-up starts; the runner will not answer further reviews "
                             "here. Push the remaining changes yourself, or raise "
                             "`limits.max_follow_ups` and comment again.")
    return asked


def refuse_for_kill_label(run: Run, pull: PullView | None, asked: PullAction | None,
                          where: str, rules: Rules) -> PullAction | None:
    """What to do with ``asked`` while the kill label is on ``where`` (the issue or the pull
    request): nothing starts; the PR is told once (``kill_label_told``). The PR's end is
    still recorded."""
    if not isinstance(asked, FollowUp | Gather):
        return asked if isinstance(asked, RecordPull) else None
    if pull is None or run.details.kill_label_told:
        return None
    what = {REVIEW: "the review asks for changes", RETRY: "`/retry` asks for a new attempt",
            CONFLICT: "the base branch conflicts with this pull request"}
    why = what.get(asked.kind, "") if isinstance(asked, FollowUp) else \
        "the review asks for changes"
    label = rules.kill_label
    return KillLabelHolds(run.id, pull.pull.number,
                          f"No follow-up starts although {why}: the `{label}` label is on "
                          f"the {where}, and it stops every run of the issue, follow-ups "
                          f"included, for as long as it stays. Remove the `{label}` label "
                          f"from the {where} and the runner answers at its next look.")


def _retry(run: Run, pull: PullView | None, issue_comments: Iterable[Comment],
           issue_permissions: Mapping[str, str], rules: Rules, since: int,
           answered: set[int]) -> FollowUp | None:
    if run.state not in (RunState.FAILED, RunState.CANCELLED) or not run.issue_hash:
        return None  # a declined trigger has no text a writer triggered: relabel instead
    found: list[tuple[Comment, Mapping[str, str]]] = [(c, issue_permissions)
                                                      for c in issue_comments]
    if pull is not None:
        found += [(c, pull.permissions) for c in pull.comments]
    for comment, permissions in sorted(found, key=lambda pair: _epoch(pair[0].created_at)):
        if _epoch(comment.created_at) < since or comment.id in answered:
            continue
        if is_own(comment, rules) or not _writer(comment.author, permissions, rules):
            continue
        if command_of(comment.body, "retry"):
            return FollowUp(run.id, RETRY, comment.author,
                            f"@{comment.author} asked for a new attempt (`/retry`) after the "
                            f"last run {run.state}: {run.reason or 'no reason given'}. The "
                            "earlier work is on the branch; finish the task.",
                            answers=(comment.id,), newest=_epoch(comment.created_at))
    return None


def _review(run: Run, view: PullView, rules: Rules, since: int,
            answered: set[int]) -> FollowUp | None:
    """Every writer's review that requests changes or mentions the bot, and every writer's
    comment addressed to the bot, since the last follow-up: one request."""
    perms = view.permissions

    def new(item_id: int, at: datetime | None) -> bool:
        return at is not None and _epoch(at) >= since and item_id not in answered

    reviews = [r for r in view.reviews
               if new(r.id, r.submitted_at) and not _own(r.author, rules)
               and _writer(r.author, perms, rules) and r.state not in ("dismissed", "pending")]
    asking = [r for r in reviews
              if r.state == "changes_requested" or mentions(_shown(r.body, "review"), rules)]
    asking_ids = {r.id for r in asking}
    lines = [c for c in view.line_comments
             if new(c.id, c.created_at) and not _own(c.author, rules)
             and _writer(c.author, perms, rules)
             and (c.review_id in asking_ids or mentions(_shown(c.body, "review comment"),
                                                        rules))]
    talk = [c for c in view.comments
            if new(c.id, c.created_at) and not is_own(c, rules)
            and _writer(c.author, perms, rules) and not commands(c.body)
            and mentions(_shown(c.body, "comment"), rules)]
    if not (asking or lines or talk):
        return None
    times = [_epoch(r.submitted_at) for r in asking] + [_epoch(c.created_at) for c in lines] \
        + [_epoch(c.created_at) for c in talk]
    first = (asking[0].author if asking else lines[0].author if lines else talk[0].author)
    threads = tuple(dict.fromkeys(c.in_reply_to or c.id for c in lines))
    text = render_request(asking, lines, talk, view.line_comments)
    ids = tuple(r.id for r in asking) + tuple(c.id for c in lines) + tuple(c.id for c in talk)
    return FollowUp(run.id, REVIEW, first, text, answers=ids, threads=threads,
                    newest=max(times))


def _conflict(run: Run, view: PullView) -> FollowUp | None:
    """A PR that conflicts with its base: one follow-up merges the base (not another one
    after a follow-up that tried)."""
    if view.pull.mergeable is not False or run.details.follow_up_kind == CONFLICT:
        return None
    return FollowUp(run.id, CONFLICT, "runner",
                    f"The base branch `{view.pull.base}` has moved and this pull request now "
                    "conflicts with it. The runner has merged the base into the branch; the "
                    "files listed below hold conflict markers. Resolve each conflict so that "
                    "both changes work together, remove every marker, and run the tests.")


def _fence(code: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", code)), default=0)
    return "`" * max(3, longest + 1)


def render_request(reviews: Iterable[Review], lines: Iterable[LineComment],
                   talk: Iterable[Comment], every_line: Iterable[LineComment] = ()) -> str:
    """The reviewers' words as one message: each review's text, each line comment with its
    path, line and the diff hunk it sits on, each comment addressed to the bot."""
    roots = {c.id: c for c in every_line}
    parts: list[str] = []
    for review in reviews:
        verb = "requested changes" if review.state == "changes_requested" else "reviewed"
        body = _shown(review.body, "review")
        parts += [f"@{review.author} {verb}" + (":" if body else "."), *([body] if body else []),
                  ""]
    for comment in lines:
        root = roots.get(comment.in_reply_to or 0, comment)
        path, line = comment.path or root.path, comment.line or root.line
        hunk = comment.diff_hunk or root.diff_hunk
        where = f"`{path}` line {line}" if line else f"`{path}` (line no longer in the diff)"
        parts += [f"### {where}, @{comment.author} wrote:", "", _shown(comment.body,
                                                                       "review comment"), ""]
        if hunk:
            fence = _fence(hunk)
            parts += ["The diff hunk it is on:", "", f"{fence}diff", hunk.rstrip("\n"), fence,
                      ""]
    for said in talk:
        parts += [f"@{said.author} commented on the pull request:", "",
                  _shown(said.body, "comment"), ""]
    text = "\n".join(parts).strip()
    if len(text) > MAX_REQUEST_CHARS:
        cut = len(text) - MAX_REQUEST_CHARS
        text = text[:MAX_REQUEST_CHARS] + f"\n\n[… {cut} more characters of the review cut]"
    return text
