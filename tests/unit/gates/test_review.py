"""The AI reviewer: validated output, the threshold, renderings, and the model call over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gates import GateResult, parse_unified_diff
from runner.review import (
    REVIEWER_MARKER,
    Review,
    ReviewError,
    ReviewInput,
    ReviewOutput,
    commentable_lines,
    load_prompt,
    make_client,
    next_instruction,
    parse_output,
    render_review,
    review,
    review_failures,
    status_for,
)
from runner.testing.llm import LLMEmulator, Reply, Script, by_system

REQUEST_CHANGES = {"verdict": "request_changes", "confidence": 0.8, "summary": "Off by one.",
                   "findings": [{"path": "src/app.py", "line": 2, "severity": "blocker",
                                 "message": "range stops one short; use n + 1"},
                                {"path": None, "line": None, "severity": "minor",
                                 "message": "add a test for n = 0"}]}
APPROVE = {"verdict": "approve", "confidence": 0.95, "summary": "Correct and tested.",
           "findings": []}
INPUT = ReviewInput(issue_title="Sum to n", issue_body="sum_to(n) must include n",
                    diff="--- a/src/app.py\n+++ b/src/app.py\n@@ -1 +1,2 @@\n+x\n+y\n",
                    gate_results=(GateResult("tests", True, "exit 0", "exit 0", "passed"),),
                    repo="o/r", issue_number=7)


def make(output: dict[str, Any], threshold: float = 0.9) -> Review:
    return Review(ReviewOutput.model_validate(output), threshold=threshold)


def test_parse_output_accepts_fenced_json_and_explains_what_is_wrong() -> None:
    assert parse_output("```json\n" + json.dumps(APPROVE) + "\n```").verdict == "approve"
    with pytest.raises(ValueError, match="no JSON object"):
        parse_output("Looks good to me!")
    with pytest.raises(ValueError, match="confidence"):
        parse_output(json.dumps({**APPROVE, "confidence": 1.5}))
    with pytest.raises(ValueError, match="verdict"):
        parse_output(json.dumps({**APPROVE, "verdict": "lgtm"}))


def test_approval_needs_the_threshold() -> None:
    assert make(APPROVE).approved
    shaky = make({**APPROVE, "confidence": 0.85})
    assert not shaky.approved and shaky.verdict == "request_changes"
    failures = review_failures(shaky)
    assert len(failures) == 1 and "0.85 is below the threshold 0.90" in failures[0].message
    assert status_for(shaky)["state"] == "failure"
    assert status_for(make(APPROVE)) == {"context": "orchestrator/ai-review",
                                         "state": "success",
                                         "description": "approved, confidence 0.95"}


def test_render_review_anchors_findings_on_diff_lines_only() -> None:
    rv = make(REQUEST_CHANGES)
    diff = parse_unified_diff("diff --git a/src/app.py b/src/app.py\n--- a/src/app.py\n"
                              "+++ b/src/app.py\n@@ -1,0 +2,1 @@\n+return n\n")
    rendered = render_review(rv, commentable_lines(diff), marker="<!-- m -->")
    assert rendered.event == "COMMENT"
    assert rendered.comments == [{"path": "src/app.py", "line": 2, "side": "RIGHT",
                                  "body": "**🛑 blocker**: range stops one short; use n + 1"}]
    assert "add a test for n = 0" in rendered.body and "requests changes" in rendered.body
    assert rendered.body.rstrip().endswith("<!-- m -->")
    outside = render_review(rv, {"src/app.py": {40}})
    assert outside.comments == [] and "`src/app.py:2`" in outside.body


def test_findings_become_the_next_instruction() -> None:
    text = next_instruction(load_prompt("continuation"), 2, 3, rv=make(REQUEST_CHANGES),
                            gate_results=[GateResult("lint", False, "exit 0", "exit 1", "E501")])
    assert "[gate: lint] E501" in text
    assert "[review: blocker] src/app.py:2 range stops one short" in text
    assert "[review: minor] add a test for n = 0" in text


def reviewer_policy(*steps: Reply) -> Any:
    return by_system({REVIEWER_MARKER: Script(list(steps))})


def test_review_over_the_messages_api_retries_once_on_invalid_output() -> None:
    policy = reviewer_policy(Reply.text("I think it is fine."), Reply.text(json.dumps(APPROVE)))
    with LLMEmulator(policy=policy) as llm:
        client = make_client(api_key=llm.api_key, base_url=llm.base_url)
        rv = review(INPUT, client=client, model="reviewer-model")
        assert rv.approved and rv.attempts == 2
        assert rv.usage["input_tokens"] > 0 and rv.usage["output_tokens"] > 0
        first, second = llm.exchanges
        # The reviewer sees its own prompt and the issue, diff and gates: nothing else.
        assert REVIEWER_MARKER in first.request.system
        sent = first.request.messages
        assert len(sent) == 1 and "sum_to(n) must include n" in sent[0]["content"]
        assert "<<<DIFF" in sent[0]["content"] and "tests: PASS" in sent[0]["content"]
        assert "not valid: the reply holds no JSON object" in \
            second.request.messages[-1]["content"]
        assert not first.request.tools  # no tools: the reviewer cannot write anything


def test_review_gives_up_after_two_invalid_replies() -> None:
    policy = reviewer_policy(Reply.text("nope"), Reply.text('{"verdict": "maybe"}'))
    with LLMEmulator(policy=policy) as llm:
        client = make_client(api_key=llm.api_key, base_url=llm.base_url)
        with pytest.raises(ReviewError, match="no valid review in 2 attempts"):
            review(INPUT, client=client, model="m")


def test_review_api_failure_is_a_review_error() -> None:
    # A refused request, not an outage (those are waited out: tests/integration/agent).
    with LLMEmulator(policy=reviewer_policy(Reply.text("{}"))) as llm:
        llm.fail(400, message="max_tokens: too large")
        client = make_client(api_key=llm.api_key, base_url=llm.base_url)
        with pytest.raises(ReviewError, match=r"model call failed.*max_tokens: too large"):
            review(INPUT, client=client, model="m")
        assert len(llm.exchanges) == 1


def test_request_changes_then_approve_across_iterations() -> None:
    # Each review is a fresh conversation; the emulator answers by how many reviews it saw.
    replies = iter([json.dumps(REQUEST_CHANGES), json.dumps(APPROVE)])
    with LLMEmulator(policy=by_system({REVIEWER_MARKER: lambda _req: Reply.text(next(replies))})
                     ) as llm:
        client = make_client(api_key=llm.api_key, base_url=llm.base_url)
        first = review(INPUT, client=client, model="m")
        second = review(INPUT, client=client, model="m")
    assert (first.verdict, second.verdict) == ("request_changes", "approve")
    assert review_failures(second) == []
