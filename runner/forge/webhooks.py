"""Verify and parse webhook deliveries from GitHub and Forgejo into one ``ForgeEvent``.

Framework-neutral: ``handle_delivery(headers, body, secret, seen=...)`` returns a
``WebhookResult`` carrying the HTTP status to answer, so a Starlette endpoint (or a CI job
reading a payload file) wraps it in three lines. An event only names an issue (or a commit) to
look at again; the runner re-reads the forge and never trusts the payload's story.

Pull request reviews: GitHub's ``pull_request_review`` and Forgejo's review deliveries
(``X-Forgejo-Event-Type: pull_request_review_approved|_rejected|_comment``) are kind "review"
with a lower-case ``review_state`` (Forgejo's carry no review id); a line comment
(``pull_request_review_comment``) and a PR conversation comment are kind "comment" with
``on_pull``; a ``pull_request`` closed by merging is marked ``merged``.

Pushes (``push`` on both forges) are kind "push" with the ``branch`` and its new head ``sha``;
a tag, or a branch deleted, is ignored (nothing to look at again).

Statuses: 413 body over 5 MB, 401 missing or bad signature, 400 malformed JSON (not JSON,
nested over 64 deep, a field of the wrong type, an issue number outside 1..2**31-1), 200 a
repeated delivery id (nothing done twice), 202 an accepted event, or an unknown event, ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

MAX_BODY = 5 * 1024 * 1024
MAX_DEPTH = 64  # real deliveries nest about 6 deep; deeper is an attack on the parser
MAX_NUMBER = 2**31 - 1  # issue and pull request numbers are 32-bit on both forges
# What reading a well-signed but malformed payload can raise: the delivery is refused (400).
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
              RecursionError)

ForgeKind = Literal["github", "forgejo"]
EventKind = Literal["issue", "comment", "pull", "review", "ci", "push", "ping"]
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # SHA-1 or SHA-256 object names
_ZERO_SHA = re.compile(r"0+")
MAX_BRANCH = 255  # git allows longer names; neither forge shows one
# Forgejo's review event types (X-Forgejo-Event-Type) and the lower-case state each means.
FORGEJO_REVIEW_STATES = {"pull_request_review_approved": "approved",
                         "pull_request_review_rejected": "changes_requested",
                         "pull_request_review_comment": "commented"}
# The same, by the coarse X-Forgejo-Event name, when a delivery has no event type.
_FORGEJO_REVIEW_EVENTS = {"pull_request_approved": "approved",
                          "pull_request_rejected": "changes_requested",
                          "pull_request_comment": "commented"}


@dataclass(frozen=True)
class ForgeEvent:
    """What a delivery says, reduced to what the controller needs to requeue a key."""

    forge: ForgeKind
    kind: EventKind
    action: str
    repo: str  # owner/name
    delivery: str
    actor: str = ""
    number: int | None = None  # the issue or PR to look at again
    comment_body: str | None = None
    label: str | None = None  # GitHub says which label; Forgejo's label_updated does not
    issue_title: str | None = None  # the issue's title and text as the delivery showed them
    issue_body: str | None = None  # (issue events)
    sha: str | None = None  # for CI events, pushes to a PR and pushes to a branch
    branch: str | None = None  # the head branch (CI and pull-request events), the pushed one
    # For CI events: True when it says something finished (a final status, a completed check
    # run, suite or workflow run); a CI job starting moves no run forward.
    finished: bool = False
    # Review events: approved, changes_requested, commented or dismissed (lower case).
    review_state: str | None = None
    review_id: int | None = None  # GitHub's; a Forgejo delivery names no review: list them
    on_pull: bool = False  # a comment made on a pull request (``number`` is the PR's)
    merged: bool = False  # a pull request closed by merging it


@dataclass(frozen=True)
class WebhookResult:
    """The answer to give the forge, and the event when there is one to act on."""

    status: int
    message: str
    event: ForgeEvent | None = None

    @property
    def accepted(self) -> bool:
        """True when the caller should act on ``event`` (not a duplicate, not ignored)."""
        return self.event is not None


class SeenDeliveries(Protocol):
    """Remembers delivery ids; ``first_time`` is True only once per id."""

    def first_time(self, delivery_id: str) -> bool: ...


class DeliveryDedup:
    """In-memory, bounded and time-limited memory of delivery ids (thread-safe).

    Forges redeliver only on request (the "Redeliver" button), so a day is plenty; a
    multi-process runner can pass a store-backed ``SeenDeliveries`` instead.
    """

    def __init__(self, max_entries: int = 10_000, ttl: float = 86_400.0) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str) -> bool:
        """Record ``delivery_id``; False when it was already recorded and not expired."""
        now = time.monotonic()
        with self._lock:
            while self._seen:
                oldest, at = next(iter(self._seen.items()))
                if now - at < self.ttl and len(self._seen) < self.max_entries:
                    break
                del self._seen[oldest]
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = now
            return True


def sign(secret: str | bytes, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``body``: Forgejo's signature, and GitHub's after ``sha256=``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def forgejo_event_type(headers: Mapping[str, str]) -> str:
    """Forgejo's fine event type (``X-Forgejo-Event-Type``, or Gitea's), "" when absent."""
    h = {k.lower(): v for k, v in headers.items()}
    return (h.get("x-forgejo-event-type") or h.get("x-gitea-event-type") or "").strip()


def detect(headers: Mapping[str, str]) -> tuple[ForgeKind, str, str, str] | None:
    """(forge, event, delivery id, signature) from the headers; Forgejo's are checked first.

    Forgejo also sends ``X-GitHub-Event`` and ``X-Hub-Signature-256``, so a delivery that has
    any Forgejo (or Gitea) header is Forgejo's.
    """
    h = {k.lower(): v for k, v in headers.items()}
    for name in ("forgejo", "gitea"):
        event = h.get(f"x-{name}-event")
        if event:
            signature = h.get("x-forgejo-signature") or h.get("x-gitea-signature") or ""
            delivery = h.get("x-forgejo-delivery") or h.get("x-gitea-delivery") or ""
            return "forgejo", event, delivery, signature
    event = h.get("x-github-event")
    if event:
        signature = h.get("x-hub-signature-256", "")
        return "github", event, h.get("x-github-delivery", ""), signature.removeprefix("sha256=")
    return None


def handle_delivery(headers: Mapping[str, str], body: bytes, secret: str | bytes | None, *,
                    seen: SeenDeliveries | None = None,
                    expect: ForgeKind | None = None) -> WebhookResult:
    """Verify, deduplicate and parse one delivery. Never raises for bad input."""
    if len(body) > MAX_BODY:
        return WebhookResult(413, f"body is {len(body)} bytes; the limit is {MAX_BODY}")
    found = detect(headers)
    if found is None:
        return WebhookResult(400, "no X-GitHub-Event, X-Forgejo-Event or X-Gitea-Event header")
    forge, event_name, delivery, signature = found
    if expect is not None and forge != expect:
        return WebhookResult(400, f"this endpoint receives {expect} webhooks, "
                                  f"but the delivery comes from {forge}")
    if not secret:
        return WebhookResult(401, "no webhook secret is configured, so no delivery can be "
                                  "verified (set forges.<name>.webhook_secret_env)")
    if not signature:
        return WebhookResult(401, "the delivery is not signed; set the webhook's secret")
    # As bytes: compare_digest raises TypeError on a str with non-ASCII characters, and a
    # header may carry any byte (it did: a fuzzed signature header made this a 500).
    given = signature.strip().lower().encode("utf-8", "replace")
    if not hmac.compare_digest(sign(secret, body).encode(), given):
        return WebhookResult(401, "bad signature: the webhook's secret differs from ours")
    try:
        payload = json.loads(body)
    except RecursionError:
        return WebhookResult(400, f"the body nests deeper than {MAX_DEPTH} levels")
    except ValueError:  # not JSON, not UTF-8, or an integer of thousands of digits
        return WebhookResult(400, "the body is not JSON (set the webhook's content type to "
                                  "application/json)")
    if not isinstance(payload, dict):
        return WebhookResult(400, "the body is JSON but not an object")
    if _depth(payload) > MAX_DEPTH:
        return WebhookResult(400, f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        if forge == "github":
            event = _github(event_name, payload, delivery)
        else:
            event = _forgejo(event_name, forgejo_event_type(headers), payload, delivery)
    except _MALFORMED as exc:
        return WebhookResult(400, f"{forge} {event_name} payload lacks a field or has one of "
                                  f"the wrong type: {type(exc).__name__} {str(exc)[:200]}")
    if event is None:
        return WebhookResult(202, f"{forge} event {event_name!r} ignored")
    if seen is not None and delivery and not seen.first_time(delivery):
        return WebhookResult(200, f"delivery {delivery} was already handled")
    return WebhookResult(202, f"{forge} {event_name}.{event.action} accepted", event)


def _depth(value: Any) -> int:
    """How deep JSON containers nest in ``value`` (iteratively: no recursion to exhaust)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                stack.extend((child, level + 1) for child in
                             (item.values() if isinstance(item, dict) else item))
    return deepest


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} is not a string")
    return value


def _number(value: Any, what: str = "number") -> int:
    """An issue or pull request number: an integer from 1 to 2**31-1, nothing else."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NUMBER:
        raise ValueError(f"{what} is not an integer from 1 to {MAX_NUMBER}")
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{what} is not an object")
    return value


def _repo(payload: dict[str, Any]) -> str:
    return _text(_object(payload["repository"], "repository")["full_name"],
                 "repository.full_name")


def _sender(payload: dict[str, Any]) -> str:
    sender = _object(payload.get("sender") or {}, "sender")
    return str(sender.get("login", ""))


def _label(payload: dict[str, Any]) -> str | None:
    name = _object(payload.get("label") or {}, "label").get("name")
    return None if name is None else _text(name, "label.name")


def _issue_number(payload: dict[str, Any]) -> int:
    return _number(_object(payload["issue"], "issue")["number"], "issue.number")


def _issue_text(payload: dict[str, Any]) -> tuple[str, str]:
    """The issue's title and text as the delivery shows them."""
    issue = _object(payload["issue"], "issue")
    title, body = issue.get("title"), issue.get("body")
    return ("" if title is None else _text(title, "issue.title"),
            "" if body is None else _text(body, "issue.body"))


def _github(name: str, p: dict[str, Any], delivery: str) -> ForgeEvent | None:
    action = str(p.get("action", ""))
    common = {"forge": "github", "delivery": delivery, "actor": _sender(p), "action": action}
    if name == "ping":
        repo = _object(p.get("repository") or {}, "repository").get("full_name", "")
        return ForgeEvent(kind="ping", repo=str(repo), **common)  # type: ignore[arg-type]
    if name == "issues":
        title, body = _issue_text(p)
        return ForgeEvent(kind="issue", repo=_repo(p), number=_issue_number(p),
                          label=_label(p), issue_title=title, issue_body=body,
                          **common)  # type: ignore[arg-type]
    if name == "issue_comment":
        issue = _object(p["issue"], "issue")
        return ForgeEvent(kind="comment", repo=_repo(p), number=_issue_number(p),
                          comment_body=str(_object(p["comment"], "comment").get("body") or ""),
                          on_pull=bool(issue.get("pull_request")),
                          **common)  # type: ignore[arg-type]
    if name in ("pull_request", "pull_request_review", "pull_request_review_comment"):
        pull = _object(p["pull_request"], "pull_request")
        head = _object(pull["head"], "head")
        where = {"repo": _repo(p), "number": _number(pull["number"]), "sha": str(head["sha"]),
                 "branch": _ref(head)}
        if name == "pull_request_review":
            review = _object(p["review"], "review")
            return ForgeEvent(kind="review", review_state=_text(review["state"],
                                                                "review.state").lower(),
                              review_id=_id(review.get("id"), "review.id"),
                              comment_body=str(review.get("body") or ""),
                              **where, **common)  # type: ignore[arg-type]
        if name == "pull_request_review_comment":
            comment = _object(p["comment"], "comment")
            return ForgeEvent(kind="comment", on_pull=True,
                              comment_body=str(comment.get("body") or ""),
                              review_id=_id(comment.get("pull_request_review_id"),
                                            "comment.pull_request_review_id"),
                              **where, **common)  # type: ignore[arg-type]
        return ForgeEvent(kind="pull", merged=action == "closed" and bool(pull.get("merged")),
                          **where, **common)  # type: ignore[arg-type]
    if name == "push":
        return _push(p, common)
    if name == "status":
        return ForgeEvent(kind="ci", repo=_repo(p), sha=str(p["sha"]),
                          finished=p.get("state") != "pending",
                          **common)  # type: ignore[arg-type]
    if name in ("check_run", "check_suite", "workflow_run"):
        item = _object(p[name], name)
        pulls = item.get("pull_requests") or []
        number = _number(_object(pulls[0], "pull_requests[0]")["number"]) if pulls else None
        suite = item.get("check_suite") or {}
        branch = item.get("head_branch") or (suite.get("head_branch")
                                             if isinstance(suite, dict) else None)
        return ForgeEvent(kind="ci", repo=_repo(p), sha=str(item["head_sha"]), number=number,
                          branch=str(branch) if branch else None,
                          finished=action == "completed",
                          **common)  # type: ignore[arg-type]
    return None


def _id(value: Any, what: str) -> int | None:
    """A review's or comment's id (64-bit on GitHub); None when the payload has none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**63:
        raise ValueError(f"{what} is not a positive 64-bit integer")
    return value


def _ref(head: dict[str, Any]) -> str | None:
    ref = head.get("ref")
    return str(ref) if ref else None


def _forgejo(name: str, fine: str, p: dict[str, Any], delivery: str) -> ForgeEvent | None:
    """Forgejo dispatches on the fine type: a PR conversation comment is ``issue_comment`` /
    ``pull_request_comment``, while a COMMENT review's coarse name is ``pull_request_comment``."""
    action = str(p.get("action", ""))
    common = {"forge": "forgejo", "delivery": delivery, "actor": _sender(p), "action": action}
    state = FORGEJO_REVIEW_STATES.get(fine) if fine else _FORGEJO_REVIEW_EVENTS.get(name)
    if state is not None:
        pull = _object(p["pull_request"], "pull_request")
        head = _object(pull.get("head") or {}, "head")
        review = _object(p.get("review") or {}, "review")
        return ForgeEvent(kind="review", repo=_repo(p), number=_number(pull["number"]),
                          sha=str(head.get("sha") or "") or None, branch=_ref(head),
                          review_state=state, comment_body=str(review.get("content") or ""),
                          **common)  # type: ignore[arg-type]
    if name == "issues":
        # label_updated covers adding and removing, and "label" may be absent: the
        # controller re-reads the issue's labels instead of trusting this.
        number = _number(p["number"]) if p.get("number") else _issue_number(p)
        title, body = _issue_text(p) if "issue" in p else (None, None)
        return ForgeEvent(kind="issue", repo=_repo(p), number=number, label=_label(p),
                          issue_title=title, issue_body=body,
                          **common)  # type: ignore[arg-type]
    if name == "issue_comment":
        comment = _object(p.get("comment") or {}, "comment")
        issue = _object(p["issue"], "issue")
        on_pull = (fine == "pull_request_comment" or p.get("is_pull") is True
                   or bool(issue.get("pull_request")))
        return ForgeEvent(kind="comment", repo=_repo(p), number=_issue_number(p),
                          comment_body=str(comment.get("body") or ""), on_pull=on_pull,
                          **common)  # type: ignore[arg-type]
    if name in ("pull_request", "pull_request_review"):
        pull = _object(p["pull_request"], "pull_request")
        head = _object(pull.get("head") or {}, "head")
        return ForgeEvent(kind="pull", repo=_repo(p), number=_number(pull["number"]),
                          sha=str(head.get("sha") or "") or None, branch=_ref(head),
                          merged=action == "closed" and pull.get("merged") is True,
                          **common)  # type: ignore[arg-type]
    if name == "push":
        return _push(p, common)
    if name == "status":
        return ForgeEvent(kind="ci", repo=_repo(p), sha=str(p["sha"]),
                          finished=p.get("state") != "pending",
                          **common)  # type: ignore[arg-type]
    return None


def _push(p: dict[str, Any], common: dict[str, Any]) -> ForgeEvent | None:
    """A push (both forges name the fields alike): the branch and its new head; None for a
    tag or a deleted branch."""
    ref, after = _text(p["ref"], "ref"), _text(p["after"], "after").lower()
    if not _SHA.fullmatch(after):
        raise ValueError("after is not a commit SHA")
    if not ref.startswith("refs/heads/") or _ZERO_SHA.fullmatch(after):
        return None
    branch = ref.removeprefix("refs/heads/")
    if not branch or len(branch) > MAX_BRANCH or any(ord(ch) < 32 for ch in branch):
        raise ValueError(f"ref is not a branch name of 1 to {MAX_BRANCH} printable characters")
    return ForgeEvent(kind="push", repo=_repo(p), sha=after, branch=branch,
                      **common)
