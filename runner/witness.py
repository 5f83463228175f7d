"""What signed deliveries showed of an issue's text: who labelled, opened or edited it, and
the digest of the title and text it had then. In memory, per process, bounded.

Where a forge does not record who edits an issue (Forgejo), this is how the runner shows that
the text it starts from is one an authorised user saw when they triggered (``policy.
text_as_triggered``). A process that did not receive the delivery (another runner process, or
after a restart) knows nothing, and the rule falls back on the issue's update time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from runner.policy import Witness, text_digest

# Deliveries that say "this user acted on the issue while it read so".
WITNESS_ACTIONS = frozenset({"opened", "edited", "labeled", "label_updated"})


class Witnesses:
    """Thread-safe memory of witnesses per issue: the last ``per_issue`` of each, for the last
    ``issues`` issues."""

    def __init__(self, *, issues: int = 10_000, per_issue: int = 20) -> None:
        self._issues, self._per_issue = issues, per_issue
        self._seen: OrderedDict[tuple[str, int], tuple[Witness, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def saw(self, repo: str, number: int, actor: str, action: str, title: str,
            body: str) -> None:
        """Record that a signed delivery showed ``actor`` doing ``action`` on the issue while
        its title and text were ``title`` and ``body`` (ignored for actions that say nothing
        about them)."""
        if action not in WITNESS_ACTIONS or not actor:
            return
        key = (repo.lower(), number)
        with self._lock:
            kept = (*self._seen.pop(key, ()), Witness(actor, text_digest(title, body)))
            self._seen[key] = kept[-self._per_issue:]
            while len(self._seen) > self._issues:
                self._seen.popitem(last=False)

    def of(self, repo: str, number: int) -> tuple[Witness, ...]:
        """The witnesses of an issue, oldest first."""
        with self._lock:
            return self._seen.get((repo.lower(), number), ())
