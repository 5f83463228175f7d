"""bench cache: the share of input tokens read from the prompt cache over a 20-turn agent run.

The built-in agent (real anthropic SDK, real HTTP) works through a scripted 20-turn session
against the LLM emulator, in a local sandbox on a generated repository: 19 tool calls (reading
files, grepping, running tests, editing) and a finish. Each run starts with a cold cache.

    cache_read_share = cache-read input tokens / all input tokens (read + written + uncached)

Usage: scripts/bench cache [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from runner.agent.base import Task
from runner.agent.claude import ClaudeAgent
from runner.config import AgentConfig
from runner.model import Budget
from runner.sandbox.base import SandboxSpec
from runner.sandbox.local import LocalSandbox
from runner.testing.llm import LLMEmulator, Reply, Script
from tests.bench.common import report

TURNS = 20
KEY_ENV = "BENCH_ANTHROPIC_KEY"


def make_repo(root: Path, modules: int = 6) -> None:
    """A small Python project: a few modules of plausible size and a test file each."""
    for i in range(modules):
        funcs = "\n\n".join(
            f"def f{i}_{j}(x: int, y: int) -> int:\n"
            f"    \"\"\"Combine x and y, variant {j} of module {i}.\"\"\"\n"
            f"    total = x * {j + 1} + y\n"
            f"    if total > {100 * (j + 1)}:\n        return total - {j}\n    return total\n"
            for j in range(12))
        (root / f"mod{i}.py").write_text(f'"""Module {i}."""\n\n\n{funcs}\n')
        tests = "\n".join(f"    def test_{j}(self):\n        self.assertEqual(mod{i}.f{i}_{j}"
                          f"(1, 2), {1 * (j + 1) + 2})\n" for j in range(12))
        (root / f"test_mod{i}.py").write_text(
            f"import unittest\n\nimport mod{i}\n\n\nclass T(unittest.TestCase):\n{tests}")


def script() -> Script:
    """19 tool calls an agent might make while finding its way, then finish."""
    steps: list[Reply] = [
        Reply.edit("view", ".", "Let me see the layout."),
        Reply.bash("python3 -m unittest -q 2>&1 | tail -5", "Running the tests."),
    ]
    for i in range(6):
        steps.append(Reply.edit("view", f"mod{i}.py", f"Reading module {i}."))
        steps.append(Reply.bash(f"grep -n 'return' mod{i}.py | head -20"))
    steps.append(Reply.edit("str_replace", "mod0.py", "Adjusting the first function.",
                            old_str="variant 0 of module 0", new_str="variant zero"))
    steps.append(Reply.bash("python3 -m unittest -q test_mod0 2>&1 | tail -3"))
    steps.append(Reply.bash("git status 2>&1 | head -5; ls -la"))
    steps.append(Reply.bash("python3 -m unittest -q 2>&1 | tail -3", "Full test run."))
    steps.append(Reply.edit("view", "mod0.py", view_range=[1, 12]))
    steps.append(Reply.finish("Renamed a docstring; all tests pass."))
    assert len(steps) == TURNS, len(steps)
    return Script(steps)


def one_run(workdir: Path) -> dict[str, Any]:
    repo = workdir / "repo"
    repo.mkdir()
    make_repo(repo)
    sandbox = LocalSandbox(SandboxSpec(run_id="bench-cache", repo="bench/cache", issue=1,
                                       worktree=repo))
    with LLMEmulator(policy=script()) as llm:
        agent = ClaudeAgent(AgentConfig(base_url=llm.base_url, api_key_env=KEY_ENV),
                            environ={KEY_ENV: llm.api_key})
        started = time.monotonic()
        outcome = agent.run(Task(title="Tidy module 0", body="Rename a docstring."),
                            sandbox, Budget(max_turns=50, max_tokens=10_000_000,
                                            max_cost_usd=100.0),
                            threading.Event(), lambda kind, data: None)
        seconds = time.monotonic() - started
    if outcome.stop_reason != "done" or outcome.turns != TURNS:
        raise SystemExit(f"the scripted run did not complete: {outcome}")
    usage = outcome.usage
    all_input = usage.tokens_in + usage.cache_read + usage.cache_write
    price = agent.price
    uncached_cost = (all_input * price.input + usage.tokens_out * price.output) / 1e6
    return {"share": usage.cache_read / all_input, "input": all_input,
            "read": usage.cache_read, "write": usage.cache_write, "uncached": usage.tokens_in,
            "cost": usage.cost_usd, "cost_no_cache": uncached_cost, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="independent 20-turn runs")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)  # the SDK warns about model names
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
            runs.append(one_run(Path(tmp)))
    total_input = sum(r["input"] for r in runs)
    share = sum(r["read"] for r in runs) / total_input
    report("cache", len(runs), {
        "cache_read_share": round(share, 4),
        "turns_per_run": TURNS,
        "input_tokens_per_run": round(statistics.median(r["input"] for r in runs)),
        "cache_read_tokens_per_run": round(statistics.median(r["read"] for r in runs)),
        "cache_write_tokens_per_run": round(statistics.median(r["write"] for r in runs)),
        "uncached_input_tokens_per_run": round(statistics.median(r["uncached"] for r in runs)),
        "cost_usd_per_run": round(statistics.median(r["cost"] for r in runs), 5),
        "cost_without_cache_usd_per_run": round(statistics.median(r["cost_no_cache"]
                                                                  for r in runs), 5),
        "run_p50_s": round(statistics.median(r["seconds"] for r in runs), 3),
    }, title=f"bench cache: {TURNS}-turn scripted agent run, cold cache each (n={len(runs)})")
    if share < 0.8:
        raise SystemExit(f"cache_read_share {share:.3f} is below 0.8")


if __name__ == "__main__":
    main()
