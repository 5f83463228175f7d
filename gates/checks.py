"""The individual gates. Each returns a GateResult; none raises for a failing check."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from gates.model import Diff, GateResult
from gates.profiles import Command, Coverage, Limits
from gates.secrets import scan_diff

OUTPUT_TAIL_CHARS = 4000
_MAX_LISTED = 20


def _listing(items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = len(items) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more else "")


def check_secrets(diff: Diff) -> GateResult:
    """No added line may hold a credential. Findings name file, line and kind, never the value."""
    findings = scan_diff(diff)
    if not findings:
        return GateResult("secrets", True, "no secrets in added lines", "none found",
                          f"scanned {sum(f.added_count for f in diff.files)} added lines",
                          fast=True)
    listed = [str(f) for f in findings]
    return GateResult(
        "secrets", False, "no secrets in added lines", f"{len(findings)} found",
        f"possible secrets (values not shown): {_listing(listed)}. Remove them from the change "
        "and rotate any real credential; do not commit secrets, read them from the environment",
        fast=True, details="\n".join(listed))


def check_size(diff: Diff, limits: Limits) -> GateResult:
    """The change stays small enough to review."""
    files, lines = len(diff.files), diff.lines_changed
    expected = []
    problems = []
    if limits.max_files is not None:
        expected.append(f"<= {limits.max_files} files")
        if files > limits.max_files:
            problems.append(f"{files} files changed, the limit is {limits.max_files}")
    if limits.max_lines is not None:
        expected.append(f"<= {limits.max_lines} lines")
        if lines > limits.max_lines:
            problems.append(f"{lines} lines changed, the limit is {limits.max_lines}")
    actual = f"{files} files, {lines} lines"
    if problems:
        return GateResult("diff-size", False, ", ".join(expected), actual,
                          "; ".join(problems) + ": make a smaller change, or split the issue",
                          fast=True)
    return GateResult("diff-size", True, ", ".join(expected) or "no limit", actual,
                      "within the limits", fast=True)


def is_protected(path: str, protected: Iterable[str]) -> bool:
    """Whether ``path`` is under a protected directory (``dir/``) or matches a protected glob."""
    lowered = path.replace("\\", "/").lower()
    while lowered.startswith("./"):
        lowered = lowered[2:]
    for entry in protected:
        rule = entry.replace("\\", "/").removeprefix("./").lower()
        if rule.endswith("/"):
            if lowered.startswith(rule) or lowered == rule.rstrip("/"):
                return True
        elif lowered == rule or fnmatch.fnmatchcase(lowered, rule):
            return True
    return False


def check_protected_paths(diff: Diff, protected: Iterable[str], labels: Iterable[str],
                          allow_label: str) -> GateResult:
    """The agent may not change CI, the gates or the prompts unless the issue allows it."""
    rules = list(protected)
    touched = sorted({p for p in diff.paths() if is_protected(p, rules)})
    allowed = any(lbl.lower() == allow_label.lower() for lbl in labels)
    expected = "no protected path changed"
    if not touched:
        return GateResult("protected-paths", True, expected, "none touched",
                          f"none of {', '.join(rules)} changed", fast=True)
    actual = f"{len(touched)} touched"
    if allowed:
        return GateResult("protected-paths", True, expected, actual,
                          f"allowed by the label {allow_label}: {_listing(touched)}", fast=True)
    return GateResult(
        "protected-paths", False, expected, actual,
        f"the change touches protected paths: {_listing(touched)}. Revert those files; CI, "
        f"gate and prompt changes need a maintainer's label {allow_label} on the issue",
        fast=True)


def _tail(text: str) -> str:
    return text if len(text) <= OUTPUT_TAIL_CHARS else "...\n" + text[-OUTPUT_TAIL_CHARS:]


def command_result(name: str, command: Command, exit_code: int | None, output: str,
                   duration_s: float) -> GateResult:
    """The GateResult for a command run elsewhere (e.g. in the sandbox); None = timed out."""
    expected = "exit 0"
    if exit_code is None:
        return GateResult(name, False, expected, f"timed out after {command.timeout:.0f}s",
                          f"`{command.run}` did not finish within {command.timeout:.0f}s",
                          fast=command.fast, duration_s=duration_s, details=_tail(output))
    if exit_code == 0:
        return GateResult(name, True, expected, "exit 0", f"`{command.run}` passed",
                          fast=command.fast, duration_s=duration_s, details=_tail(output))
    hint = " (command not found: is the tool installed?)" if exit_code == 127 else ""
    last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "")
    message = f"`{command.run}` failed with exit {exit_code}{hint}"
    if last:
        message += f": {last[:300]}"
    return GateResult(name, False, expected, f"exit {exit_code}", message, fast=command.fast,
                      duration_s=duration_s, details=_tail(output))


def run_command(name: str, command: Command, repo: Path) -> GateResult:
    """Run one configured command in ``repo`` under its timeout (the whole process group)."""
    start = time.monotonic()
    try:
        # the repository's own gate command line, run as its author wrote it
        proc = subprocess.Popen(command.run, shell=True, cwd=repo, stdout=subprocess.PIPE,  # noqa: S602
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    except OSError as exc:
        return GateResult(name, False, "exit 0", "did not start",
                          f"`{command.run}` could not start: {exc}", fast=command.fast)
    try:
        raw, _ = proc.communicate(timeout=command.timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        # Kill the whole group: a test runner's children would otherwise outlive the gate.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raw, _ = proc.communicate()
        code = None
    output = raw.decode("utf-8", "replace")
    return command_result(name, command, code, output, time.monotonic() - start)


def check_coverage(repo: Path, coverage: Coverage, not_before: float | None = None) -> GateResult:
    """Total coverage from coverage.py's JSON report is at least the threshold.

    ``not_before`` (a time.time()) rejects a report older than this gate run: a stale file
    left in the checkout must not pass for a test run that did not write one.
    """
    expected = f">= {coverage.threshold:g}%"
    report = repo / coverage.report
    writer = f" (the `{coverage.after}` command should write it with `coverage json`)" \
        if coverage.after else " (write it with `coverage json`)"
    try:
        if not_before is not None and report.stat().st_mtime < not_before - 1:
            return GateResult("coverage", False, expected, "stale report",
                              f"{coverage.report} was not rewritten by this run{writer}")
        data = json.loads(report.read_text(encoding="utf-8"))
        percent = float(data["totals"]["percent_covered"])
    except FileNotFoundError:
        return GateResult("coverage", False, expected, "no report",
                          f"{coverage.report} does not exist{writer}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return GateResult("coverage", False, expected, "unreadable report",
                          f"{coverage.report} is not coverage.py JSON with totals.percent_covered"
                          f" ({type(exc).__name__}){writer}")
    actual = f"{percent:.1f}%"
    if percent + 1e-9 >= coverage.threshold:
        return GateResult("coverage", True, expected, actual, "coverage meets the threshold")
    return GateResult("coverage", False, expected, actual,
                      f"total coverage is {percent:.1f}%, below {coverage.threshold:g}%: add "
                      "tests for the code this change adds")
