"""The dashboard's templates: agent-written text is escaped, the run page is grouped by
iteration with a timeline, and tool calls read as one line (an editor call names its file)."""

from __future__ import annotations

from runner import dashboard
from runner.model import Event, Run, RunState

HOSTILE = '<script>window.owned = 1</script><img src=x onerror="window.owned=2">'


def three_iteration_run() -> tuple[Run, list[Event]]:
    """A run that went round three times, with hostile text where the agent writes."""
    run = Run(id="r-0123456789ab", repo="acme/app", issue=1, state=RunState.SUCCEEDED,
              created_at=1000.0, issue_title=HOSTILE, iteration=3, pr_number=2,
              pr_url="javascript:alert(1)", cost_usd=0.25, reason="CI green  and approved")
    events: list[Event] = []
    at = 1000.0

    def add(kind: str, data: dict, actor: str = "runner") -> None:  # type: ignore[type-arg]
        nonlocal at
        at += 5
        events.append(Event(run.id, kind, at, actor, data, len(events) + 1))

    add("transition", {"from": "queued", "to": "preparing"})
    for iteration in (1, 2, 3):
        if iteration > 1:
            add("iteration", {"iteration": iteration, "failures": ["review:major"]})
        add("transition", {"from": "preparing", "to": "running"})
        for turn in range(5):
            add("agent.turn", {"turn": turn, "tools": ["bash"], "tokens_in": 10, "tokens_out": 5,
                               "cost_usd": 0.01, "text": HOSTILE})
            add("agent.tool", {"turn": turn, "tool": "bash", "input": {"command": "make test"},
                               "exit_code": 1, "output": HOSTILE + "\n" * 50, "seconds": 0.4})
        add("agent.tool", {"turn": 5, "tool": "editor", "is_error": False, "seconds": 0.0,
                           "input": {"command": "str_replace", "path": "calc.py",
                                     "old_str": "return a - b", "new_str": "return a + b"},
                           "output": "ok"})
        add("transition", {"from": "running", "to": "pushing"})
        add("gates", {"stage": "pre-push", "results": [
            {"gate": "diff", "passed": True, "message": "two  spaces", "expected": "x",
             "actual": "y"}]})
        add("transition", {"from": "pushing", "to": "gating"})
        add("ci", {"sha": "abc", "state": "success", "contexts": {"ci/tests": "success"},
                   "links": {"ci/tests": "http://forge/_emulator/ci/7/log"}})
        add("transition", {"from": "gating", "to": "reviewing"})
        add("review", {"verdict": "approve", "confidence": 0.9, "summary": HOSTILE,
                       "findings": [{"path": "calc.py", "line": 6, "severity": "nit",
                                     "message": "keep  both  spaces"}]})
    add("transition", {"from": "reviewing", "to": "succeeded"})
    return run, events


def test_agent_text_is_escaped_and_unsafe_links_are_dropped() -> None:
    run, events = three_iteration_run()
    page = dashboard.run_page(run, events, owner="", issue_link="http://forge/i/1", paused=False)
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;window.owned = 1&lt;/script&gt;" in page
    assert "javascript:" not in page
    rows = dashboard.runs_rows([dashboard.RunRow(run, "", "javascript:alert(2)")])
    assert "<script>" not in rows and "javascript:" not in rows


def test_the_run_page_groups_events_by_iteration_under_a_timeline() -> None:
    run, events = three_iteration_run()
    page = dashboard.run_page(run, events, owner="", issue_link="", paused=False)
    assert page.count('<details class="iteration"') == 4  # preparing + three iterations
    assert page.count("open>") >= 1 and 'data-iteration="3" open' in page
    timeline = dashboard.timeline(run, events)
    assert [s.state for s in timeline.segments][:3] == ["preparing", "running", "pushing"]
    assert sum(1 for s in timeline.segments if s.state == "running") == 3
    assert [m.kind for m in timeline.marks] == ["iteration", "iteration"]
    assert "edit calc.py (replace 1 line with 1 line)" in page
    assert "- return a - b\n+ return a + b" in page
    assert 'class="keep-space">keep  both  spaces' in page


def test_a_ci_result_links_to_its_log_and_cost_is_not_zero_while_counting() -> None:
    run, events = three_iteration_run()
    page = dashboard.run_page(run, events, owner="", issue_link="", paused=False)
    assert 'href="http://forge/_emulator/ci/7/log"' in page
    working = Run(id="r-0123456789ab", repo="acme/app", issue=1, state=RunState.RUNNING)
    assert dashboard.money(working) == "counting…"
    assert "$0.0000" not in dashboard.runs_rows([dashboard.RunRow(working, "", "")])
