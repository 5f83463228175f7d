"""scripts/bench kill [N]: /kill comment webhook -> container gone and run cancelled, over N
runs (default 20), with the emulators, real Docker and SQLite."""

from __future__ import annotations

import sys

from tests.bench.common import report, spread
from tests.bench.lifecycle import measure


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 20
    samples = measure(n, kill=True).kill_s
    report("kill", n, {**spread(samples), "target_p50_s": 1.0},
           title=f"/kill webhook -> container gone and run cancelled (n={n})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
