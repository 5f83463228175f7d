"""The independent AI reviewer: a separate model call that never sees the agent's conversation.

Input: the issue, the diff and the gate results. Output: a verdict, a confidence and findings
anchored to lines, validated (the model is asked again once when its reply is not valid).
A review approves only when the model says approve *and* its confidence reaches the
threshold. The pure helpers at the end turn a review into PR review line comments, a commit
status and the agent's next instruction; the review step (``runner/run/reviewing.py``)
posts them.

The model is called through ``runner.provider``, as the agent calls it: a kill closes the
request in flight (``Interrupted``), and an outage of the provider is waited out for the
endpoint's bound, each wait reported to ``on_wait`` (``Unavailable`` after it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner.continuation import Failure, GateLike, failures_from_gates, render_continuation
from runner.paths import CONFIG_DIR

if TYPE_CHECKING:  # the SDK is imported when a review is asked for: the helpers need none
    from runner.provider import Cancel, Endpoint, OutageWait

PROMPTS_DIR = CONFIG_DIR / "prompts"
STATUS_CONTEXT = "orchestrator/ai-review"
DEFAULT_THRESHOLD = 0.9
MAX_DIFF_CHARS = 200_000  # about 50k tokens; a bigger diff is cut and the reviewer told so
REVIEWER_MARKER = "independent code reviewer"  # in reviewer.md; the LLM emulator routes on it
Severity = Literal["blocker", "major", "minor", "nit"]


class ReviewError(Exception):
    """The reviewer could not produce a valid review (bad replies, API failure)."""


class Interrupted(ReviewError):
    """The run's cancel event was set: the reviewer's model call was abandoned (its
    connection closed). Nothing was reviewed; catch it before ``ReviewError``."""


class Unavailable(ReviewError):
    """The model provider kept failing (429/529/5xx, unreachable) for the whole outage
    bound; the message says what it answered and for how long."""


def load_prompt(name: str, directory: str | Path | None = None) -> str:
    """The text of ``config/prompts/<name>.md`` (``reviewer``, ``continuation``)."""
    path = Path(directory or PROMPTS_DIR) / f"{name}.md"
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReviewError(f"cannot read the prompt {path}: {exc.strerror or exc} (it ships "
                          "in config/prompts/ of the orchestrator)") from None


# ---------------------------------------------------------------- the model's answer


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Finding(_Strict):
    """One problem the reviewer found, anchored to a line of the new file when it can be."""

    path: str | None = None
    line: int | None = Field(default=None, ge=1)
    severity: Severity = "major"
    message: str = Field(min_length=1)


class ReviewOutput(_Strict):
    """The JSON the reviewer must answer with."""

    verdict: Literal["approve", "request_changes"]
    confidence: float = Field(ge=0, le=1)
    summary: str = ""
    findings: list[Finding] = Field(default_factory=list)


_FENCE = re.compile(r"^```(?:json)?\s*\n(.*?)\n```\s*$", re.DOTALL)


def parse_output(text: str) -> ReviewOutput:
    """Validate the reviewer's reply; ValueError says what is wrong, for the retry prompt."""
    raw = text.strip()
    fenced = _FENCE.match(raw)
    if fenced:  # tolerated: models wrap JSON in a fence even when told not to
        raw = fenced.group(1).strip()
    if not raw.startswith("{"):
        start, end = raw.find("{"), raw.rfind("}")
        if start == -1 or end <= start:
            raise ValueError("the reply holds no JSON object")
        raw = raw[start:end + 1]
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the reply is not valid JSON ({exc.msg} at line {exc.lineno} "
                         f"column {exc.colno})") from None
    try:
        return ReviewOutput.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'top level'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise ValueError(f"the JSON does not match the schema: {problems}") from None


# ---------------------------------------------------------------- input and result


@dataclass(frozen=True)
class ReviewInput:
    """What the reviewer sees, and nothing else (never the agent's conversation)."""

    issue_title: str
    issue_body: str  # as the authorised user triggered it, hidden text stripped
    diff: str  # unified diff of the PR against its base
    gate_results: tuple[Any, ...] = ()  # gates.GateResult, or CI context summaries alike
    repo: str = ""
    issue_number: int | None = None


@dataclass(frozen=True)
class Review:
    """A validated review and what it means for the run."""

    output: ReviewOutput
    threshold: float
    model: str = ""
    attempts: int = 1
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def approved(self) -> bool:
        """Approve only when the model says so at or above the confidence threshold."""
        return self.output.verdict == "approve" and self.output.confidence >= self.threshold

    @property
    def verdict(self) -> str:
        """The effective verdict: a low-confidence approval counts as request_changes."""
        return "approve" if self.approved else "request_changes"

    @property
    def findings(self) -> list[Finding]:
        return list(self.output.findings)


def make_client(*, api_key: str, base_url: str | None = None, timeout: float = 300.0,
                outage_timeout: float = 900.0, backoff_base: float = 1.0,
                backoff_cap: float = 60.0) -> Endpoint:
    """The reviewer's model endpoint (the key stays in the runner process): requests time
    out after ``timeout`` s; an outage is waited out for ``outage_timeout`` s, backing off
    from ``backoff_base`` to ``backoff_cap`` seconds between attempts."""
    from runner.provider import Backoff, Endpoint

    return Endpoint(api_key, base_url, timeout,
                    Backoff(outage_timeout, backoff_base, backoff_cap))


def _gates_text(results: Iterable[Any]) -> str:
    lines = []
    for r in results:
        verdict = "PASS" if r.passed else "FAIL"
        lines.append(f"- {r.gate}: {verdict} (expected {r.expected}, got {r.actual}) "
                     f"{r.message}")
    return "\n".join(lines) or "(no gate results were given)"


def build_user_message(inp: ReviewInput, max_diff_chars: int = MAX_DIFF_CHARS) -> str:
    """The reviewer's one user message: issue, gate results and diff, each fenced by markers."""
    diff = inp.diff
    note = ""
    if len(diff) > max_diff_chars:
        diff = diff[:max_diff_chars]
        note = (f"\n(The diff was cut after {max_diff_chars:,} of {len(inp.diff):,} "
                "characters; you have not seen all of it: lower your confidence accordingly.)")
    ref = f"{inp.repo}#{inp.issue_number}" if inp.repo and inp.issue_number else \
        (f"#{inp.issue_number}" if inp.issue_number else "the issue")
    return (
        f"Review the pull request for {ref}.\n\n"
        f"<<<ISSUE\n# {inp.issue_title}\n\n{inp.issue_body}\nISSUE>>>\n\n"
        f"<<<GATE_RESULTS\n{_gates_text(inp.gate_results)}\nGATE_RESULTS>>>\n\n"
        f"<<<DIFF\n{diff}\nDIFF>>>{note}\n\n"
        "Answer with the JSON object only."
    )


def _text(response: Any) -> str:
    return "".join(getattr(b, "text", "") for b in getattr(response, "content", [])
                   if getattr(b, "type", "") == "text")


def _add_usage(total: dict[str, int], response: Any) -> None:
    usage = getattr(response, "usage", None)
    for name in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                 "cache_creation_input_tokens"):
        value = getattr(usage, name, None) if usage is not None else None
        if isinstance(value, int):
            total[name] = total.get(name, 0) + value


def review(inp: ReviewInput, *, client: Endpoint, model: str,
           threshold: float = DEFAULT_THRESHOLD, system_prompt: str | None = None,
           max_tokens: int = 4096, max_diff_chars: int = MAX_DIFF_CHARS,
           cancel: Cancel | None = None,
           on_wait: Callable[[OutageWait], None] | None = None) -> Review:
    """Ask the reviewer model for a review; retry once with the reason if the reply is invalid.

    ``client`` is the endpoint ``make_client`` gives. ``cancel`` (the run's cancel event)
    abandons the call within a fraction of a second: ``Interrupted``. ``on_wait`` hears of
    each wait while the provider is out (for a ``model_unavailable`` audit event);
    ``Unavailable`` once the outage outlasts the endpoint's bound. ReviewError when the API
    refuses the request or both replies are invalid.
    """
    import anthropic

    from runner import provider

    system = system_prompt if system_prompt is not None else load_prompt("reviewer")
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": build_user_message(inp, max_diff_chars)}]
    usage: dict[str, int] = {}
    problem = ""
    with provider.Session(client, cancel=cancel, on_wait=on_wait) as session:
        for attempt in (1, 2):
            try:
                response = session.create({"model": model, "max_tokens": max_tokens,
                                           "system": system, "messages": messages},
                                          stream=False)
            except provider.Cancelled as exc:
                raise Interrupted(f"the review was stopped: {exc}") from None
            except provider.Unavailable as exc:
                raise Unavailable(f"the AI review could not be made: {exc}") from exc
            except anthropic.APIError as exc:
                raise ReviewError(f"the reviewer model call failed: {type(exc).__name__}: "
                                  f"{str(exc)[:300]}") from exc
            _add_usage(usage, response)
            text = _text(response)
            try:
                output = parse_output(text)
            except ValueError as exc:
                problem = str(exc)
                messages += [
                    {"role": "assistant", "content": text or "(empty reply)"},
                    {"role": "user", "content": f"That reply is not valid: {problem}. Answer again "
                     "with only the JSON object described in your instructions."},
                ]
                continue
            return Review(output=output, threshold=threshold, model=model, attempts=attempt,
                          usage=usage)
    raise ReviewError(f"the reviewer gave no valid review in 2 attempts: {problem}")


# ---------------------------------------------------------------- pure renderings


def commentable_lines(diff: Any) -> dict[str, set[int]]:
    """Lines a review comment can anchor to: the lines a ``gates.Diff`` adds, per file."""
    return {f.path: {number for number, _ in f.added} for f in diff.files}


@dataclass(frozen=True)
class ReviewComments:
    """A PR review: its body and its line comments (GitHub/Forgejo review comment shape)."""

    body: str
    comments: list[dict[str, Any]]
    event: str = "COMMENT"


def _badge(severity: str) -> str:
    return {"blocker": "🛑 blocker", "major": "⚠️ major", "minor": "minor", "nit": "nit"}.get(
        severity, severity)


def render_review(rv: Review, commentable: Mapping[str, set[int]] | None = None,
                  marker: str = "") -> ReviewComments:
    """The PR review: a summary body, and one line comment per finding that has a line.

    With ``commentable`` (see commentable_lines), a finding on a line outside the diff goes
    into the body instead: the forges refuse comments on lines a PR does not show.
    ``marker`` (e.g. the hidden marker the run steps upsert by) is appended to the body.
    """
    comments: list[dict[str, Any]] = []
    loose: list[Finding] = []
    for f in rv.output.findings:
        anchored = f.path is not None and f.line is not None and (
            commentable is None or f.line in commentable.get(f.path, set()))
        if anchored:
            comments.append({"path": f.path, "line": f.line, "side": "RIGHT",
                             "body": f"**{_badge(f.severity)}**: {f.message}"})
        else:
            loose.append(f)
    out = rv.output
    verdict = "approves" if rv.approved else "requests changes"
    lines = [f"**AI review: {verdict}** (confidence {out.confidence:.2f}, threshold "
             f"{rv.threshold:.2f}).", ""]
    if out.verdict == "approve" and not rv.approved:
        lines += ["The reviewer leaned towards approving but was not confident enough, so "
                  "this counts as a request for changes.", ""]
    if out.summary:
        lines += [out.summary, ""]
    if loose:
        lines.append("Findings not tied to a line of the diff:")
        for f in loose:
            where = f"`{f.path}:{f.line}`" if f.path and f.line else (
                f"`{f.path}`" if f.path else "the change")
            lines.append(f"- **{_badge(f.severity)}** {where}: {f.message}")
        lines.append("")
    if comments:
        lines.append(f"{len(comments)} line comment(s) below.")
    if marker:
        lines += ["", marker]
    return ReviewComments(body="\n".join(lines).strip() + "\n", comments=comments)


def status_for(rv: Review) -> dict[str, str]:
    """The commit status ``orchestrator/ai-review`` for a review: state and description."""
    out = rv.output
    if rv.approved:
        description = f"approved, confidence {out.confidence:.2f}"
    else:
        blocking = sum(1 for f in out.findings if f.severity in ("blocker", "major"))
        description = (f"changes requested: {len(out.findings)} finding(s), {blocking} "
                       f"blocking, confidence {out.confidence:.2f}")
    return {"context": STATUS_CONTEXT, "state": "success" if rv.approved else "failure",
            "description": description[:140]}


def review_failures(rv: Review) -> list[Failure]:
    """The review as failures for the continuation prompt (empty when it approves)."""
    if rv.approved:
        return []
    failures = [Failure("review", f.severity, f.message, path=f.path, line=f.line)
                for f in rv.output.findings]
    if not failures:
        reason = (f"the reviewer's confidence {rv.output.confidence:.2f} is below the "
                  f"threshold {rv.threshold:.2f}") if rv.output.verdict == "approve" else \
            "the reviewer requested changes"
        summary = f": {rv.output.summary}" if rv.output.summary else ""
        failures.append(Failure("review", "verdict", f"{reason}{summary}. Make the change "
                                "clearly correct and complete, with tests that show it."))
    return failures


def next_instruction(template: str, iteration: int, max_iterations: int,
                     gate_results: Iterable[GateLike] = (), rv: Review | None = None,
                     ci_failures: Iterable[Failure] = ()) -> str:
    """The agent's next instruction from everything that failed: gates, CI and the review."""
    failures = [*failures_from_gates(gate_results), *ci_failures]
    if rv is not None:
        failures += review_failures(rv)
    return render_continuation(template, failures, iteration, max_iterations)
