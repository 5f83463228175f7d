"""Pure parts: profile choice, YOLO, the 50% rule, the continuation prompt, diff parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gates import GatesError, choose_profile, decide_yolo, parse_config, parse_unified_diff
from gates.checks import is_protected
from runner import sizing
from runner.continuation import (
    Failure,
    TemplateError,
    failures_from_gates,
    render_continuation,
    stage_for,
)

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = (ROOT / "config/prompts/continuation.md").read_text()


# ---------------------------------------------------------------- profile choice and YOLO


def test_label_overrides_repo_default() -> None:
    assert choose_profile(["bug", "gates:strict"], "standard").name == "strict"
    choice = choose_profile(["bug"], "minimal", known=["minimal", "strict"])
    assert (choice.name, choice.source) == ("minimal", "repository default")


def test_unknown_or_conflicting_profile_labels_are_refused() -> None:
    with pytest.raises(GatesError, match="gates:strcit"):
        choose_profile(["gates:strcit"], "standard", known=["standard", "strict"])
    with pytest.raises(GatesError, match="several gate profile labels"):
        choose_profile(["gates:strict", "gates:minimal"], "standard")


def test_yolo_only_where_allowed() -> None:
    off = decide_yolo(["orchestrator:yolo"], repo_yolo=False, allow_label=False)
    assert not off.skip_gates and "not allow" in off.reason and off.marker == ""
    on = decide_yolo(["orchestrator:yolo"], repo_yolo=False, allow_label=True)
    assert on.skip_gates and on.marker == "quality gates disabled"
    assert "quality gates disabled" in on.banner()
    assert on.status_description("ok").startswith("quality gates disabled")
    assert decide_yolo([], repo_yolo=True, allow_label=False).skip_gates
    assert decide_yolo([], repo_yolo=False, allow_label=False, global_yolo=True).skip_gates
    assert not decide_yolo(["bug"], repo_yolo=False, allow_label=True).skip_gates


# ---------------------------------------------------------------- gates.yml


def test_bundled_profiles() -> None:
    config = parse_config((ROOT / "config/gates.yml").read_text())
    assert {"strict", "standard", "minimal"} <= set(config.profiles)
    strict, minimal = config.profile("strict"), config.profile("minimal")
    standard = config.profile("standard")
    assert strict.coverage and standard.coverage
    assert strict.coverage.threshold > standard.coverage.threshold
    assert strict.review.threshold >= 0.9 and not minimal.review.enabled
    assert all(p.ci_contexts for p in config.profiles.values())
    assert strict.fast_commands() and not minimal.commands
    custom = config.profile("node-service")  # extends standard
    assert custom.limits == config.profile("standard").limits and custom.coverage is None


def test_extends_loop_and_bad_values_are_reported() -> None:
    with pytest.raises(GatesError, match="loop"):
        parse_config("profiles:\n  a: {extends: b}\n  b: {extends: a}\n")
    with pytest.raises(GatesError, match=r"gates.yml:4: profiles.s.commands.t.timeout"):
        parse_config("profiles:\n  s:\n    commands:\n      t: {run: x, timeout: soon}\n")


def test_protected_path_rules() -> None:
    rules = [".github/", "config/gates.yml", "config/prompts/"]
    assert is_protected(".github/workflows/ci.yml", rules)
    assert is_protected("./.GitHub/x", rules)
    assert is_protected("config/gates.yml", rules)
    assert not is_protected("config/gates.yml.bak", rules)
    assert not is_protected("docs/.github-notes.md", rules)


# ---------------------------------------------------------------- diff parsing


def test_parse_unified_diff_line_numbers_renames_and_deletions() -> None:
    patch = """diff --git a/src/a.py b/src/a.py
index 1..2 100644
--- a/src/a.py
+++ b/src/a.py
@@ -10,0 +11,2 @@ def f():
+x = 1
+--- not a header
@@ -20 +22 @@
-old
+new
diff --git a/old.txt b/new.txt
similarity index 90%
rename from old.txt
rename to new.txt
diff --git a/gone.py b/gone.py
deleted file mode 100644
--- a/gone.py
+++ /dev/null
@@ -1,2 +0,0 @@
-a
-b
"""
    diff = parse_unified_diff(patch, base="main")
    a, renamed, gone = diff.files
    assert a.added == ((11, "x = 1"), (12, "--- not a header"), (22, "new"))
    assert a.removed_count == 1
    assert (renamed.path, renamed.old_path, renamed.status) == ("new.txt", "old.txt", "R")
    assert (gone.path, gone.status, gone.removed_count) == ("gone.py", "D", 2)
    assert diff.lines_changed == 6
    assert "old.txt" in diff.paths()


# ---------------------------------------------------------------- the 50% rule


def test_declared_estimate_wins() -> None:
    body = "Do it.\n\n## Context Estimate\n- a.py\n**Total estimated:** 45,000 tokens\n"
    assert sizing.parse_declared(body) == 45_000
    assert sizing.parse_declared("## Context Estimate\nTotal estimated: 120k tokens") == 120_000
    decision = sizing.decide(body + "x" * 10_000_000, [], 200_000)
    assert decision.allowed and decision.estimate.source == "declared"


def test_heuristic_counts_files_text_and_overhead() -> None:
    body = "Change runner/cli.py and tests/test_cli.py (see https://example.com/x.py)."
    est = sizing.estimate(body, ["also README.md"])
    assert est.files == ("runner/cli.py", "tests/test_cli.py", "README.md")
    text_tokens = -(-(len(body) + 1 + len("also README.md")) // 4)
    assert est.text_tokens == text_tokens
    assert est.tokens == -(-int((3 * 7000 + text_tokens) * 13) // 10)


def test_oversized_issue_is_refused_with_comment_and_label() -> None:
    files = " ".join(f"src/m{i}.py" for i in range(20))  # 20 x 7000 x 1.3 = 182k > 100k
    decision = sizing.decide(files, [], 200_000)
    assert not decision.allowed
    assert decision.label == "orchestrator:too-large"
    assert "split" in decision.comment and "orchestrator:force" in decision.comment
    assert decision.limit == 100_000
    assert "182,069 tokens" in decision.comment and "100,000" in decision.comment
    forced = sizing.decide(files, [], 200_000, labels=["orchestrator:force"])
    assert forced.allowed and forced.forced and forced.label is None
    assert "forced" in forced.reason


@given(st.text(max_size=300), st.integers(min_value=0, max_value=5))
def test_naming_more_files_never_lowers_the_estimate(text: str, extra: int) -> None:
    more = text + " " + " ".join(f"pkg/new{i}.py" for i in range(extra))
    assert sizing.estimate(more).tokens >= sizing.estimate(text).tokens or \
        sizing.parse_declared(text) is not None


# ---------------------------------------------------------------- continuation


def test_stages_tighten_and_the_last_is_last() -> None:
    assert [stage_for(i, 5) for i in (2, 3, 4, 5)] == ["normal", "failures-only", "minimal",
                                                       "last"]
    assert [stage_for(i, 3) for i in (2, 3)] == ["normal", "last"]
    failures = [Failure("gate", "lint", "ruff failed"), Failure("review", "major", "off by one",
                                                                path="a.py", line=3)]
    texts = [render_continuation(TEMPLATE, failures, i, 5) for i in (2, 3, 4, 5)]
    assert len(set(texts)) == 4
    for text in texts:
        assert "1. [gate: lint] ruff failed" in text
        assert "2. [review: major] a.py:3 off by one" in text
    assert "last attempt" in texts[-1] and "Iteration 5 of 5" in texts[-1]
    assert "smallest change" in texts[2] and "only the failures" in texts[1]


def test_failure_text_is_not_treated_as_a_placeholder() -> None:
    text = render_continuation(TEMPLATE, [Failure("ci", "build", "saw {iteration} {failures}")],
                               2, 3)
    assert "saw {iteration} {failures}" in text


def test_continuation_needs_failures_and_a_complete_template() -> None:
    with pytest.raises(ValueError):
        render_continuation(TEMPLATE, [], 2, 3)
    with pytest.raises(TemplateError, match="last"):
        render_continuation(TEMPLATE.split("=== stage: last ===")[0], [Failure("g", "x", "y")],
                            2, 3)


def test_failed_gates_become_failures_without_secret_details() -> None:
    from gates import GateResult
    results = [GateResult("lint", False, "exit 0", "exit 1", "ruff failed", details="E501"),
               GateResult("secrets", False, "none", "1 found", "a.py:1: AWS", details="a.py:1"),
               GateResult("tests", True, "exit 0", "exit 0", "ok")]
    failures = failures_from_gates(results)
    assert [f.name for f in failures] == ["lint", "secrets"]
    assert failures[0].details == "E501" and failures[1].details == ""
