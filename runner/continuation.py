"""The fixed continuation prompt: every failure, with guidance that tightens each attempt.

Pure: the template text (``config/prompts/continuation.md``) is passed in by the caller.
The template is a common part, then one section per stage, each opened by a line
``=== stage: NAME ===``. Stages in order: normal, failures-only, minimal, and last for the
final iteration. Placeholders: ``{iteration}``, ``{max_iterations}``, ``{count}``,
``{failures}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

STAGES = ("normal", "failures-only", "minimal", "last")
_STAGE_LINE = re.compile(r"^=== stage: ([a-z-]+) ===\s*$", re.MULTILINE)
DETAILS_CHARS = 3_000


class TemplateError(ValueError):
    """The continuation template is missing a stage or a placeholder."""


@dataclass(frozen=True)
class Failure:
    """One thing that must be fixed: a gate, a CI context or a review finding."""

    source: str  # "gate", "ci" or "review"
    name: str
    message: str
    path: str | None = None
    line: int | None = None
    details: str = ""

    def render(self) -> str:
        """A numbered-list entry body: what failed, where, and the log excerpt if any."""
        where = f" {self.path}:{self.line}" if self.path and self.line else (
            f" {self.path}" if self.path else "")
        text = f"[{self.source}: {self.name}]{where} {self.message}".rstrip()
        details = self.details.strip()
        if details:
            if len(details) > DETAILS_CHARS:
                details = "...\n" + details[-DETAILS_CHARS:]
            fence = "````" if "```" in details else "```"
            text += f"\n{fence}\n{details}\n{fence}"
        return text


class GateLike(Protocol):
    """What is read from a gate result (``gates.GateResult`` is frozen, hence properties)."""

    @property
    def gate(self) -> str: ...
    @property
    def passed(self) -> bool: ...
    @property
    def expected(self) -> str: ...
    @property
    def actual(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def details(self) -> str: ...


def failures_from_gates(results: Iterable[GateLike], source: str = "gate") -> list[Failure]:
    """The failed gates (``gates.GateResult``) as failures; passed ones are dropped."""
    return [Failure(source, r.gate, f"{r.message} (expected {r.expected}, got {r.actual})",
                    details=r.details if r.gate != "secrets" else "")
            for r in results if not r.passed]


def stage_for(iteration: int, max_iterations: int) -> str:
    """The stage for ``iteration`` (the one about to start; the first continuation is 2)."""
    if iteration >= max_iterations:
        return "last"
    continuation = max(1, iteration - 1)
    return STAGES[min(continuation - 1, 2)]


def parse_template(template: str) -> tuple[str, dict[str, str]]:
    """Split a template into its common part and its stage sections."""
    parts = _STAGE_LINE.split(template)
    common, stages = parts[0], {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        stages[name] = body.strip()
    missing = [s for s in STAGES if s not in stages]
    if missing:
        raise TemplateError(f"continuation template has no stage(s) {', '.join(missing)} "
                            "(add a line `=== stage: NAME ===` for each)")
    if "{failures}" not in common:
        raise TemplateError("continuation template must contain {failures} before the stages")
    return common.strip(), stages


def render_continuation(template: str, failures: Iterable[Failure], iteration: int,
                        max_iterations: int) -> str:
    """The agent's next instruction: the common part, every failure, then the stage's guidance.

    Raises ValueError when there is nothing to fix (a continuation without failures would
    only invite the agent to change things for no reason).
    """
    items = list(failures)
    if not items:
        raise ValueError("no failures: a continuation is only sent when something failed")
    common, stages = parse_template(template)
    listed = "\n".join(f"{i}. {f.render()}" for i, f in enumerate(items, start=1))
    values = {"{iteration}": str(iteration), "{max_iterations}": str(max_iterations),
              "{count}": str(len(items))}
    # Replace the small placeholders first, the failure list last: failure text may itself
    # contain "{iteration}" and must come through untouched.
    for key, value in values.items():
        common = common.replace(key, value)
    guidance = stages[stage_for(iteration, max_iterations)]
    for key, value in values.items():
        guidance = guidance.replace(key, value)
    head, _, tail = common.partition("{failures}")
    return f"{head}{listed}{tail}\n\n{guidance}\n"
