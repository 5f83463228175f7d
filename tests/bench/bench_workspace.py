"""bench workspace: a new worktree from a warm mirror vs ``git clone`` of the same repository.

The runner keeps one spare worktree per repository, checked out in the background while a
run works, so the next run's worktree is a rename and a branch switch; the figures without a
spare (git writing every file while the run waits) are reported beside it.

The repository is generated with ``git fast-import`` (default 20,000 commits over 5,000 files)
and cached under ``bench-results/cache/``. The clone goes through ``file://`` so that git uses
its transfer protocol (packing, as from a forge) rather than hard-linking the objects of a
local path. Usage: ``scripts/bench workspace [--commits N] [--files N] [--samples N]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from runner.workspace import Workspaces
from tests.bench.common import RESULTS, median, percentile, report

REPO = "bench/generated"


def generate(path: Path, commits: int, files: int) -> None:
    """A bare repository with ``commits`` commits on main touching ``files`` files."""
    tmp = path.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["git", "init", "--quiet", "--bare", str(tmp)], check=True)
    proc = subprocess.Popen(["git", "fast-import", "--quiet"], cwd=tmp,
                            stdin=subprocess.PIPE)
    assert proc.stdin is not None
    out = proc.stdin
    when = 1_600_000_000

    def data(text: str) -> None:
        raw = text.encode()
        out.write(b"data %d\n%s\n" % (len(raw), raw))

    def header(n: int, message: str) -> None:
        out.write(b"commit refs/heads/main\n")
        out.write(b"committer Bench <bench@example.com> %d +0000\n" % (when + n))
        data(message)

    header(0, "initial tree")
    for i in range(files):
        out.write(f"M 644 inline pkg{i % 50:02d}/mod{i:05d}.py\n".encode())
        data(f'"""module {i}"""\n\nVALUE = {i}\n' + "# padding line\n" * 20)
    for n in range(1, commits):
        i = (n * 7919) % files  # spread the edits over all files
        header(n, f"change {n}")
        out.write(f"M 644 inline pkg{i % 50:02d}/mod{i:05d}.py\n".encode())
        data(f'"""module {i}"""\n\nVALUE = {n}\n' + "# padding line\n" * 20)
    out.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    subprocess.run(["git", "symbolic-ref", "HEAD", "refs/heads/main"], cwd=tmp, check=True)
    subprocess.run(["git", "gc", "--quiet", "--aggressive"], cwd=tmp, check=True)
    tmp.rename(path)


def quiet_disk() -> None:
    """Flush the previous sample's writes and deletions so they are not billed to the next."""
    os.sync()
    time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench workspace")
    parser.add_argument("--commits", type=int, default=20_000)
    parser.add_argument("--files", type=int, default=5_000)
    parser.add_argument("--samples", type=int, default=7)
    args = parser.parse_args()

    cache = (RESULTS / "cache").resolve()
    cache.mkdir(parents=True, exist_ok=True)
    source = cache / f"generated-{args.commits}c-{args.files}f.git"
    if not source.exists():
        print(f"generating {source} ({args.commits} commits, {args.files} files)...")
        t0 = time.monotonic()
        generate(source, args.commits, args.files)
        print(f"  done in {time.monotonic() - t0:.1f}s")
    url = f"file://{source}"

    with tempfile.TemporaryDirectory(prefix="bench-workspace-") as tmp:
        root = Path(tmp)
        spaces = Workspaces(root / "data")
        print("warming the mirror...")
        spaces.sync_mirror(REPO, url)

        worktree_s: list[float] = []
        cold_s: list[float] = []
        prepare_s: list[float] = []
        clone_s: list[float] = []

        def timed_prepare(run_id: str, issue: int, fetch: bool, into: list[float]) -> None:
            quiet_disk()
            t0 = time.perf_counter()
            wt = spaces.prepare(run_id, REPO, issue, url, fetch=fetch)
            into.append(time.perf_counter() - t0)
            spaces.remove(wt)

        for i in range(args.samples):
            # Without a spare: git checks out every file while the run waits.
            timed_prepare(f"r-be{i:04d}c", 30_000 + i, False, cold_s)
            # As the runner does it: a spare was checked out in the background after the
            # previous run started; the new run takes it (a rename and a branch switch).
            spaces.fill_spare(REPO, "main")
            timed_prepare(f"r-be{i:04d}a", 10_000 + i, False, worktree_s)
            spaces.fill_spare(REPO, "main")
            timed_prepare(f"r-be{i:04d}b", 20_000 + i, True, prepare_s)

            target = root / f"clone{i}"
            quiet_disk()
            t0 = time.perf_counter()
            subprocess.run(["git", "clone", "--quiet", "--no-local", url, str(target)],
                           check=True)
            clone_s.append(time.perf_counter() - t0)
            shutil.rmtree(target)
            print(f"  sample {i + 1}/{args.samples}: worktree {worktree_s[-1]:.3f}s "
                  f"(without a spare {cold_s[-1]:.3f}s), "
                  f"fetch+worktree {prepare_s[-1]:.3f}s, clone {clone_s[-1]:.3f}s")

    worktree_p50, clone_p50 = median(worktree_s), median(clone_s)
    report("workspace", args.samples, {
        "commits": args.commits,
        "files": args.files,
        "worktree_p50_s": round(worktree_p50, 4),
        "worktree_p95_s": round(percentile(worktree_s, 95), 4),
        "worktree_without_spare_p50_s": round(median(cold_s), 4),
        "fetch_and_worktree_p50_s": round(median(prepare_s), 4),
        "clone_p50_s": round(clone_p50, 4),
        "clone_p95_s": round(percentile(clone_s, 95), 4),
        "speedup": round(clone_p50 / worktree_p50, 2),
        "speedup_with_fetch": round(clone_p50 / median(prepare_s), 2),
        "speedup_without_spare": round(clone_p50 / median(cold_s), 2),
        # Both sides are mostly file creation and packing: a busy machine narrows the gap.
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }, title=f"bench workspace: worktree from a warm mirror vs git clone "
             f"({args.commits} commits, {args.files} files)")


if __name__ == "__main__":
    main()
