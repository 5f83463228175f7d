"""scripts/bench dispatch [N]: webhook for a label -> the agent's first tool call running in
its container, over N issues (default 20), with the emulators, real Docker and SQLite."""

from __future__ import annotations

import sys

from tests.bench.common import report, spread
from tests.bench.lifecycle import measure


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 20
    samples = measure(n, kill=False).dispatch_s
    report("dispatch", n, {**spread(samples), "target_p50_s": 0.5, "target_p95_s": 1.0},
           title=f"label webhook -> first tool call in the container (n={n})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
