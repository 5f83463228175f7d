"""What a gate reports, and the diff the gates look at: plain data, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class GatesError(Exception):
    """A usage or configuration mistake, phrased as one line the user can act on.

    ``python -m gates`` prints it and exits 2; it never means "a gate failed".
    """

    exit_code = 2


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate.

    ``expected`` and ``actual`` are short human strings ("<= 400 lines", "512 lines") so a table,
    a PR comment and the agent's next instruction can all show them as they are.
    """

    gate: str
    passed: bool
    expected: str
    actual: str
    message: str
    fast: bool = False
    duration_s: float = 0.0
    details: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by ``python -m gates --json``."""
        data = asdict(self)
        data["duration_s"] = round(self.duration_s, 3)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateResult:
        """Read one entry of ``python -m gates --json`` back (e.g. from a sandbox's output)."""
        known = {f: data[f] for f in cls.__dataclass_fields__ if f in data}
        return cls(**known)


@dataclass(frozen=True)
class FileDiff:
    """One changed file: its path after the change and the lines it adds (number, text)."""

    path: str
    status: str = "M"  # A added, M modified, D deleted, R renamed, C copied, T type, B binary
    added: tuple[tuple[int, str], ...] = ()
    removed_count: int = 0
    old_path: str | None = None

    @property
    def added_count(self) -> int:
        return len(self.added)


@dataclass(frozen=True)
class Diff:
    """Everything a branch changes against its base."""

    base: str
    files: tuple[FileDiff, ...] = field(default_factory=tuple)

    @property
    def lines_changed(self) -> int:
        """Added plus removed lines, the figure the size limit is about."""
        return sum(f.added_count + f.removed_count for f in self.files)

    def paths(self) -> list[str]:
        """Every path the diff touches, old names of renamed files included."""
        out: list[str] = []
        for f in self.files:
            out.append(f.path)
            if f.old_path and f.old_path != f.path:
                out.append(f.old_path)
        return out
