"""What a forge event's payload says, for ``orchestrator handle-event`` (a CI job's event)."""

from __future__ import annotations

from typing import Any

from runner.witness import Witnesses


def witness_event(witnesses: Witnesses, repo: str, number: int, payload: dict[str, Any]) -> None:
    """Remember who acted on the issue in this event and the text it had then."""
    sender, issue = payload.get("sender"), payload.get("issue")
    if isinstance(sender, dict) and isinstance(issue, dict):
        witnesses.saw(repo, number, str(sender.get("login") or ""),
                      str(payload.get("action") or ""), str(issue.get("title") or ""),
                      str(issue.get("body") or ""))


def adds_trigger_label(event_name: str, payload: dict[str, Any], trigger: str) -> bool | None:
    """Whether the event is the trigger label being added; None when the payload cannot
    tell (Forgejo's label_updated is sent for additions and removals, often unnamed)."""
    action = payload.get("action")
    if event_name != "issues" or action not in ("labeled", "label_updated"):
        return False
    label = payload.get("label")
    name = label.get("name") if isinstance(label, dict) else None
    if action == "labeled" and name:
        return str(name).lower() == trigger.lower()
    return None
