"""Pure decisions about gates for one issue: which profile, and whether YOLO mode skips them.

No I/O: the caller passes the issue's labels and the repository's settings. Whether a label
was added by someone allowed to add it is the caller's check (the forge knows, this does not).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gates.model import GatesError

PROFILE_LABEL_PREFIX = "gates:"
YOLO_LABEL = "orchestrator:yolo"
YOLO_MARKER = "quality gates disabled"


@dataclass(frozen=True)
class ProfileChoice:
    """The profile to use and why (``label`` or ``repository default``)."""

    name: str
    source: str


def choose_profile(labels: Iterable[str], repo_default: str,
                   known: Iterable[str] | None = None) -> ProfileChoice:
    """The issue's ``gates:<profile>`` label if it has one, else the repository default.

    Raises GatesError when the issue carries two different profile labels or names a profile
    that ``known`` (when given) does not contain: running a weaker profile than the one asked
    for because of a typo would be worse than not running.
    """
    wanted = sorted({label[len(PROFILE_LABEL_PREFIX):].strip() for label in labels
                     if label.lower().startswith(PROFILE_LABEL_PREFIX)})
    known_set = set(known) if known is not None else None
    if len(wanted) > 1:
        names = ", ".join(PROFILE_LABEL_PREFIX + w for w in wanted)
        raise GatesError(f"the issue has several gate profile labels ({names}); keep one")
    if wanted:
        name, source = wanted[0], "label"
    else:
        name, source = repo_default, "repository default"
    if known_set is not None and name not in known_set:
        where = f" (from the label {PROFILE_LABEL_PREFIX}{name})" if source == "label" else ""
        raise GatesError(f"no gate profile {name!r}{where} "
                         f"(known: {', '.join(sorted(known_set))})")
    return ProfileChoice(name=name, source=source)


@dataclass(frozen=True)
class YoloDecision:
    """Whether gates are skipped; ``reason`` is for the audit record either way."""

    skip_gates: bool
    reason: str

    @property
    def marker(self) -> str:
        """The text every comment, PR body and status description carries ("" when gated)."""
        return YOLO_MARKER if self.skip_gates else ""

    def banner(self) -> str:
        """A one-line warning for PR bodies and status comments ("" when gated)."""
        if not self.skip_gates:
            return ""
        return f"**⚠ {YOLO_MARKER}** (YOLO mode: {self.reason}). Nothing checked this change."

    def status_description(self, text: str) -> str:
        """``text`` for a commit status, prefixed with the marker in YOLO mode (140 chars)."""
        out = f"{YOLO_MARKER}: {text}" if self.skip_gates else text
        return out[:140]


def decide_yolo(labels: Iterable[str], *, repo_yolo: bool, allow_label: bool,
                global_yolo: bool = False, label: str = YOLO_LABEL) -> YoloDecision:
    """Skip the gates when the configuration says so, or on the YOLO label where allowed."""
    if global_yolo:
        return YoloDecision(True, "yolo: true in the runner's configuration")
    if repo_yolo:
        return YoloDecision(True, "yolo: true for this repository")
    has_label = any(lbl.lower() == label.lower() for lbl in labels)
    if has_label and allow_label:
        return YoloDecision(True, f"label {label} (the repository allows it)")
    if has_label:
        return YoloDecision(False, f"label {label} ignored: the repository does not allow it "
                                   "(set allow_yolo_label: true)")
    return YoloDecision(False, "gates apply")
