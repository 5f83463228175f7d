"""bench sandbox: container start to the first output of an exec, with the sandbox image.

Each sample creates the run's locked-down container (DockerBackend.start, as a run does),
executes ``echo ready`` and stops the clock at its first output chunk; the container is removed
untimed. A second exec in the running container is timed too (what each agent command pays). With
``--runtime runsc`` the same is measured under gVisor, interleaved with the engine's default,
and reported side by side. Usage: ``scripts/bench sandbox [--samples N] [--image IMAGE]
[--runtime runsc]``.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from runner.sandbox.base import SandboxSpec
from runner.sandbox.docker import DockerBackend
from runner.workspace import Workspaces
from tests.bench.common import median, percentile, report


def small_repo(root: Path) -> str:
    """A bare repository with one commit, to cut the run's worktree from."""
    src = root / "src"
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(src)], check=True)
    (src / "README.md").write_text("bench\n")
    ident = ["-c", "user.name=Bench", "-c", "user.email=bench@example.com"]
    subprocess.run(["git", *ident, "-C", str(src), "add", "."], check=True)
    subprocess.run(["git", *ident, "-C", str(src), "commit", "--quiet", "-m", "init"],
                   check=True)
    return str(src)


def sample(backend: DockerBackend, worktree: Path, image: str, runtime: str | None
           ) -> tuple[float, float]:
    """One container: seconds from start to the first output of ``echo ready``, and of a
    second exec in the running container (what each agent command pays)."""
    run_id = f"r-be{uuid.uuid4().hex[:8]}"
    spec = SandboxSpec(run_id=run_id, repo="bench/sandbox", issue=1, worktree=worktree,
                       image=image, runtime=runtime)
    first: list[float] = []
    t0 = time.perf_counter()
    sandbox = backend.start(spec)
    try:
        result = sandbox.exec(
            "echo ready",
            on_output=lambda _text, seen=first: seen or seen.append(time.perf_counter()))
        if not result.ok or not first:
            raise SystemExit(f"the sandbox did not answer: {result}")
        t1 = time.perf_counter()
        again = sandbox.exec(["true"])
        if not again.ok:
            raise SystemExit(f"the sandbox did not run a second command: {again}")
        return first[0] - t0, time.perf_counter() - t1
    finally:
        sandbox.remove()


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench sandbox")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--image", default="orchestrator-sandbox:latest")
    parser.add_argument("--runtime", action="append", default=[],
                        help="also measure this runtime (e.g. runsc), side by side with the "
                             "engine's default")
    args = parser.parse_args()
    runtimes: list[str | None] = [None, *args.runtime]

    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        root = Path(tmp)
        spaces = Workspaces(root / "data")
        wt = spaces.prepare("r-bench0", "bench/sandbox", 1, small_repo(root))
        backend = DockerBackend(state_dir=root / "state", image=args.image)
        backend.ping()
        starts: dict[str, list[float]] = {name(r): [] for r in runtimes}
        execs: dict[str, list[float]] = {name(r): [] for r in runtimes}
        for i in range(args.samples):
            for runtime in runtimes:  # interleaved, so a busy moment hits both alike
                start_s, exec_s = sample(backend, wt.path, args.image, runtime)
                starts[name(runtime)].append(start_s)
                execs[name(runtime)].append(exec_s)
                print(f"  {name(runtime)} {i + 1}/{args.samples}: start {start_s:.3f}s, "
                      f"exec {exec_s:.3f}s")
        spaces.remove(wt)

    default = starts[name(None)]
    figures: dict[str, object] = {
        "image": args.image,
        "p50_s": round(median(default), 4),
        "p95_s": round(percentile(default, 95), 4),
        "min_s": round(min(default), 4),
        "max_s": round(max(default), 4),
        "exec_p50_s": round(median(execs[name(None)]), 4),
    }
    if len(runtimes) > 1:
        figures["by_runtime"] = {
            key: {"start_p50_s": round(median(starts[key]), 4),
                  "start_p95_s": round(percentile(starts[key], 95), 4),
                  "exec_p50_s": round(median(execs[key]), 4),
                  "exec_p95_s": round(percentile(execs[key], 95), 4)}
            for key in starts}
        for runtime in args.runtime:
            figures[f"{runtime}_start_ratio"] = round(
                median(starts[runtime]) / median(default), 2)
            figures[f"{runtime}_exec_ratio"] = round(
                median(execs[runtime]) / median(execs[name(None)]), 2)
    report("sandbox", len(default), figures,
           title="bench sandbox: container start to first exec output")


def name(runtime: str | None) -> str:
    """A runtime's name in the figures: the engine's default is runc."""
    return runtime or "runc"


if __name__ == "__main__":
    main()
