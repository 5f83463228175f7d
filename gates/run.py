"""Run a profile's gates in parallel, each under its own time limit."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from gates.checks import (
    check_coverage,
    check_protected_paths,
    check_secrets,
    check_size,
    run_command,
)
from gates.diff import collect_diff
from gates.model import Diff, GateResult
from gates.profiles import GatesConfig, Profile, find_config, load_config

IN_PROCESS = ("secrets", "protected-paths", "diff-size")


def check_diff(diff: Diff, profile: Profile, labels: Iterable[str],
               config: GatesConfig) -> list[GateResult]:
    """The in-process gates on a diff: secret scan, protected paths, size. No commands run.

    The pipeline calls this on the host (the container has no .git to diff with) and runs
    ``profile.fast_commands()`` in the sandbox; both together are the pre-push gates.
    """
    labels = list(labels)
    results = []
    if profile.secret_scan:
        results.append(check_secrets(diff))
    results.append(check_protected_paths(diff, config.protected_paths, labels,
                                         config.allow_ci_changes_label))
    results.append(check_size(diff, profile.limits))
    return results


def _timed(gate: str, fn: Callable[[], GateResult]) -> Callable[[], GateResult]:
    def wrapper() -> GateResult:
        start = time.monotonic()
        try:
            result = fn()
        except Exception as exc:  # a crashing gate is a failing gate, with the reason  # noqa: BLE001
            return GateResult(gate, False, "the check runs", "error",
                              f"the check crashed: {type(exc).__name__}: {exc}",
                              duration_s=time.monotonic() - start)
        if not result.duration_s:
            result = GateResult(**{**result.to_dict(), "duration_s": time.monotonic() - start})
        return result
    return wrapper


def run_profile(repo_path: str | os.PathLike[str], profile: Profile | str, base: str,
                labels: Iterable[str] = (), *, config: GatesConfig | None = None,
                only_fast: bool = False, max_workers: int | None = None) -> list[GateResult]:
    """Run ``profile``'s gates on the checkout at ``repo_path`` against ``base``.

    ``profile`` is a Profile or a name looked up in ``config`` (default: the gates.yml found
    for the repository, see gates.profiles). ``only_fast`` runs just the pre-push part: the
    in-process checks and the commands marked ``fast``. Results come back in a stable order:
    secrets, protected-paths, diff-size, then commands as configured, then coverage.

    Raises GatesError for usage mistakes (no checkout, unknown base or profile); a failing or
    timed-out gate is a result with ``passed=False``.
    """
    repo = Path(repo_path)
    if config is None:
        config = load_config(find_config(repo))
    if isinstance(profile, str):
        profile = config.profile(profile)
    labels = list(labels)
    diff = collect_diff(repo, base)
    commands = profile.fast_commands() if only_fast else dict(profile.commands)
    started = time.time()

    jobs: dict[str, Callable[[], GateResult]] = {}
    if profile.secret_scan:
        jobs["secrets"] = lambda: check_secrets(diff)
    jobs["protected-paths"] = lambda: check_protected_paths(
        diff, config.protected_paths, labels, config.allow_ci_changes_label)
    jobs["diff-size"] = lambda: check_size(diff, profile.limits)
    for name, command in commands.items():
        jobs[name] = (lambda n=name, c=command: run_command(n, c, repo))  # type: ignore[misc]

    workers = max_workers or min(8, len(jobs))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gate")
    try:
        futures: dict[str, Future[GateResult]] = {
            name: pool.submit(_timed(name, fn)) for name, fn in jobs.items()}
        results: dict[str, GateResult] = {}
        for name, future in futures.items():
            # Commands enforce their own timeout by killing the process group; this limit is
            # the backstop for the in-process checks (and a little slack for the commands).
            limit = commands[name].timeout + 30 if name in commands else profile.fast_timeout
            try:
                results[name] = future.result(timeout=limit)
            except FutureTimeout:
                results[name] = GateResult(name, False, f"done within {limit:.0f}s", "timed out",
                                           f"the {name} check did not finish within "
                                           f"{limit:.0f}s", fast=name in IN_PROCESS)
        coverage = profile.coverage
        if coverage is not None and not only_fast:
            after = results.get(coverage.after) if coverage.after else None
            if after is not None and not after.passed:
                results["coverage"] = GateResult(
                    "coverage", False, f">= {coverage.threshold:g}%", "not measured",
                    f"coverage was not checked because `{coverage.after}` failed")
            else:
                results["coverage"] = _timed("coverage", lambda: check_coverage(
                    repo, coverage, not_before=started))()
    finally:
        # Do not wait for a stuck in-process check; its result is already a failure.
        pool.shutdown(wait=False, cancel_futures=True)
    return list(results.values())


def all_passed(results: Iterable[GateResult]) -> bool:
    """True when every gate passed (an empty list passes: nothing was asked)."""
    return all(r.passed for r in results)
