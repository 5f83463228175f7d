"""Mirrors and worktrees on real git: lifecycle, resume, conflicts, push, cleanup, locking."""

from __future__ import annotations

import base64
import multiprocessing
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from runner.process import Cancel
from runner.workspace import Identity, WorkspaceError, Workspaces
from tests.integration.workspace.gitrepo import Upstream, git

REPO = "acme/widgets"


def test_lifecycle_worktree_commit_push_cleanup(workspaces: Workspaces, upstream: Upstream):
    wt = workspaces.prepare("r-000001", REPO, 12, upstream.url)

    assert wt.branch == "orchestrator/issue-12"
    assert not wt.resumed
    assert (wt.path / "src/app.py").read_text() == "def answer():\n    return 41\n"
    assert wt.path == workspaces.root / "worktrees" / "r-000001"
    assert workspaces.mirror_path(REPO).is_dir()

    (wt.path / "src/app.py").write_text("def answer():\n    return 42\n")
    (wt.path / "NOTES.md").write_text("new file\n")
    (wt.path / "README.md").unlink()
    sha = workspaces.commit(wt, "Fix the answer")
    assert sha and len(sha) == 40
    assert workspaces.commit(wt) is None  # nothing left to commit

    assert sorted(workspaces.changed_files(wt)) == ["NOTES.md", "README.md", "src/app.py"]
    assert "+    return 42" in workspaces.diff(wt)

    assert workspaces.push(wt, upstream.url) == sha
    assert "orchestrator/issue-12" in upstream.branches()
    author, subject, body = upstream.log("orchestrator/issue-12")[0].split("|")
    assert author == f"{Identity().name} <{Identity().email}>"
    assert subject == "Fix the answer"
    assert "#12" in body
    assert upstream.show("orchestrator/issue-12", "src/app.py").endswith("return 42\n")

    workspaces.remove(wt)
    workspaces.remove(wt)  # safe twice
    assert not wt.path.exists()
    assert workspaces.list_worktrees() == []
    local = git(workspaces.mirror_path(REPO), "branch", "--list", "orchestrator/*")
    assert local.strip() == ""


def test_prepare_twice_returns_the_same_worktree(workspaces: Workspaces, upstream: Upstream):
    first = workspaces.prepare("r-000002", REPO, 3, upstream.url)
    (first.path / "work.txt").write_text("in progress\n")
    again = workspaces.prepare("r-000002", REPO, 3, upstream.url)
    assert again.path == first.path and again.git_dir == first.git_dir
    assert (again.path / "work.txt").read_text() == "in progress\n"
    assert workspaces.open("r-000002", REPO, 3) is not None
    assert workspaces.open("r-000999", REPO, 3) is None


def test_resumed_run_starts_from_the_remote_branch(workspaces: Workspaces, upstream: Upstream):
    wt = workspaces.prepare("r-000003", REPO, 5, upstream.url)
    (wt.path / "step1.txt").write_text("done\n")
    workspaces.commit(wt, "step 1")
    workspaces.push(wt, upstream.url)
    workspaces.remove(wt)  # the worker crashed; its workspace is gone

    other = Workspaces(workspaces.root)  # a new owner of the run
    resumed = other.prepare("r-000004", REPO, 5, upstream.url)
    assert resumed.resumed
    assert (resumed.path / "step1.txt").read_text() == "done\n"
    (resumed.path / "step2.txt").write_text("done\n")
    other.commit(resumed, "step 2")
    other.push(resumed, upstream.url)  # a fast-forward of the earlier push
    assert [e.split("|")[1] for e in upstream.log("orchestrator/issue-5")][:2] == [
        "step 2", "step 1"]


def test_fetch_prunes_deleted_branches_and_sees_new_base(workspaces: Workspaces,
                                                         upstream: Upstream):
    upstream.write({"x.txt": "x\n"}, "feature", branch="feature")
    mirror = workspaces.sync_mirror(REPO, upstream.url)
    assert "origin/feature" in git(mirror, "branch", "-r")
    git(upstream.bare, "branch", "-D", "feature")
    new_main = upstream.write({"later.txt": "later\n"}, "later", branch="main")
    workspaces.sync_mirror(REPO, upstream.url)
    assert "origin/feature" not in git(mirror, "branch", "-r")
    wt = workspaces.prepare("r-000005", REPO, 9, upstream.url)
    assert git(wt.path, "rev-parse", "HEAD").strip() == new_main


def test_real_conflict_names_the_conflicting_paths(workspaces: Workspaces, upstream: Upstream):
    upstream.write({"a.txt": "one\n", "b.txt": "one\n", "c.txt": "one\n"}, "files")
    wt = workspaces.prepare("r-000006", REPO, 8, upstream.url)
    (wt.path / "a.txt").write_text("agent\n")
    (wt.path / "c.txt").write_text("agent\n")
    (wt.path / "d.txt").write_text("agent only\n")
    workspaces.commit(wt, "agent edits")
    assert workspaces.conflicts(wt, url=upstream.url) == []  # base has not moved

    upstream.write({"a.txt": "maintainer\n", "b.txt": "maintainer\n"}, "meanwhile on main")
    assert workspaces.conflicts(wt) == []  # not fetched yet: the old base still merges
    assert workspaces.conflicts(wt, url=upstream.url) == ["a.txt"]

    upstream.write({"c.txt": "maintainer\n"}, "more on main")
    assert workspaces.conflicts(wt, url=upstream.url) == ["a.txt", "c.txt"]


def test_missing_base_branch_says_what_to_set(workspaces: Workspaces, upstream: Upstream):
    with pytest.raises(WorkspaceError, match="base_branch"):
        workspaces.prepare("r-000007", REPO, 1, upstream.url, base_branch="develop")


def test_branch_held_by_a_stale_run_is_reported(workspaces: Workspaces, upstream: Upstream):
    workspaces.prepare("r-000008", REPO, 2, upstream.url)
    with pytest.raises(WorkspaceError, match="remove_orphans"):
        workspaces.prepare("r-000009", REPO, 2, upstream.url)
    assert workspaces.remove_orphans(["r-000009"]) == ["r-000008"]
    assert workspaces.prepare("r-000009", REPO, 2, upstream.url).path.is_dir()


def test_orphans_are_removed_and_live_runs_kept(workspaces: Workspaces, upstream: Upstream):
    live = workspaces.prepare("r-00000a", REPO, 1, upstream.url)
    workspaces.prepare("r-00000b", REPO, 2, upstream.url)
    gone = workspaces.prepare("r-00000c", REPO, 3, upstream.url)
    # A crash mid-add can leave a directory no mirror knows about.
    stray = workspaces.worktrees / "r-00000d"
    stray.mkdir()
    (stray / "junk").write_text("x")
    # The agent may have deleted its worktree's .git entry: cleanup must not depend on it.
    (gone.path / ".git").unlink()

    ids = [info.run_id for info in workspaces.list_worktrees()]
    assert ids == ["r-00000a", "r-00000b", "r-00000c", "r-00000d"]
    assert sorted(workspaces.remove_orphans([live.run_id])) == ["r-00000b", "r-00000c",
                                                                 "r-00000d"]
    assert [info.run_id for info in workspaces.list_worktrees()] == ["r-00000a"]
    assert workspaces.remove_orphans([live.run_id]) == []
    assert live.path.is_dir()
    branches = git(workspaces.mirror_path(REPO), "branch", "--list", "orchestrator/*").split()
    assert branches == ["+", "orchestrator/issue-1"]  # '+': checked out in a worktree


def test_nested_repository_made_by_the_agent_is_not_committed(workspaces: Workspaces,
                                                              upstream: Upstream):
    wt = workspaces.prepare("r-00000e", REPO, 4, upstream.url)
    nested = wt.path / "vendor" / "lib"
    nested.mkdir(parents=True)
    git(nested, "init", "--quiet")
    (nested / "lib.py").write_text("x = 1\n")
    git(nested, "add", ".")
    git(nested, "commit", "--quiet", "-m", "nested")
    (wt.path / "real.txt").write_text("real change\n")
    workspaces.commit(wt, "with a nested repo")
    tree = git(workspaces.mirror_path(REPO), "ls-tree", "-r", "--name-only", wt.branch)
    assert "real.txt" in tree.split()
    assert "vendor/lib" not in tree


def _prepare_in_process(args: tuple[str, str, int, str]) -> str:
    root, run_id, issue, url = args
    wt = Workspaces(root).prepare(run_id, REPO, issue, url)
    (wt.path / f"{run_id}.txt").write_text(run_id)
    Workspaces(root).commit(wt, f"work of {run_id}")
    return str(wt.path)


def test_concurrent_runs_from_several_processes_share_one_mirror(workspaces: Workspaces,
                                                                 upstream: Upstream):
    jobs = [(str(workspaces.root), f"r-1000{i:02d}", 100 + i, upstream.url) for i in range(8)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        paths = pool.map(_prepare_in_process, jobs, chunksize=1)
    assert len(set(paths)) == 8
    mirror = workspaces.mirror_path(REPO)
    subprocess.run(["git", "fsck", "--no-progress"], cwd=mirror, check=True,
                   capture_output=True)
    branches = git(mirror, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split()
    assert sorted(branches) == sorted(f"orchestrator/issue-{100 + i}" for i in range(8))
    assert len(workspaces.list_worktrees()) == 8


class _AuthRecorder(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # git's first request of a push: the ref advertisement
        _AuthRecorder.seen.append(self.headers.get("Authorization", ""))
        self.send_response(403)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_token_goes_in_a_header_and_nowhere_else(workspaces: Workspaces, upstream: Upstream):
    token = "ghp_SECRETtoken1234567890"
    wt = workspaces.prepare("r-00000f", REPO, 6, upstream.url)
    (wt.path / "f.txt").write_text("x\n")
    workspaces.commit(wt, "change")

    server = HTTPServer(("127.0.0.1", 0), _AuthRecorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/acme/widgets.git"
    try:
        with pytest.raises(WorkspaceError) as failure:
            workspaces.push(wt, url, token=token)
    finally:
        server.shutdown()
    expected = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    assert f"Basic {expected}" in _AuthRecorder.seen
    assert token not in str(failure.value) and expected not in str(failure.value)
    for path in workspaces.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert token.encode() not in data and expected.encode() not in data, path

    with pytest.raises(WorkspaceError, match="without them"):
        workspaces.push(wt, f"https://bot:{token}@forge.example/acme/widgets.git")


def test_bad_repository_name_is_refused(workspaces: Workspaces):
    with pytest.raises(WorkspaceError, match="owner/name"):
        workspaces.mirror_path("../../etc")


def test_missing_worktree_directory_is_cleaned_up_by_prepare(workspaces: Workspaces,
                                                             upstream: Upstream):
    wt = workspaces.prepare("r-000010", REPO, 7, upstream.url)
    import shutil

    shutil.rmtree(wt.path)  # someone deleted it by hand
    again = workspaces.prepare("r-000010", REPO, 7, upstream.url)
    assert (again.path / "README.md").exists()
    assert Path(again.git_dir).is_dir()


def test_reset_to_takes_back_a_commit_and_keeps_the_files(workspaces: Workspaces,
                                                          upstream: Upstream):
    wt = workspaces.prepare("r-000011", REPO, 10, upstream.url)
    before = workspaces.head(wt)
    (wt.path / "secret.txt").write_text("AKIA...\n")
    assert workspaces.commit(wt, "oops") != before
    workspaces.reset_to(wt, before)
    assert workspaces.head(wt) == before
    assert (wt.path / "secret.txt").read_text() == "AKIA...\n"
    assert workspaces.commit(wt, "again") not in (None, before)


def test_a_spare_worktree_becomes_the_next_runs_checkout(workspaces: Workspaces,
                                                        upstream: Upstream):
    first = workspaces.prepare("r-000101", REPO, 1, upstream.url)
    assert workspaces.fill_spare(REPO, "main")
    spare = workspaces.spare_path(REPO)
    assert (spare / "src/app.py").is_file()
    assert workspaces.list_worktrees() == [w for w in workspaces.list_worktrees()
                                           if w.run_id == "r-000101"]  # no run's
    # the base moves on after the spare was checked out
    upstream.write({"src/new.py": "NEW = 1\n"}, "add new.py")
    second = workspaces.prepare("r-000102", REPO, 2, upstream.url)
    assert not spare.exists()  # it was taken
    assert (second.path / "src/new.py").read_text() == "NEW = 1\n"
    assert workspaces.head(second) == upstream.log("main", "%H")[0]
    (second.path / "src/app.py").write_text("def answer():\n    return 42\n")
    sha = workspaces.commit(second, "fix")
    assert sha is not None and workspaces.push(second, upstream.url) == sha
    assert upstream.show("orchestrator/issue-2", "src/app.py").endswith("return 42\n")
    # a spare is never shared: the next run without one checks out afresh
    third = workspaces.prepare("r-000103", REPO, 3, upstream.url)
    assert (third.path / "src/new.py").is_file()
    for wt in (first, second, third):
        workspaces.remove(wt)
    assert workspaces.remove_orphans([]) == []


class CountingWorkspaces(Workspaces):
    """Workspaces that count the fetches their mirrors make (the behaviour is untouched)."""

    fetches = 0

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        fetch = self.mirror_store.fetch

        def counted(mirror: Path, url: str, token: str | None,
                    cancel: Cancel | None = None) -> None:
            type(self).fetches += 1
            fetch(mirror, url, token, cancel)

        self.mirror_store.fetch = counted  # type: ignore[method-assign]


def test_runs_asked_for_together_share_one_fetch_and_see_earlier_pushes(
        tmp_path: Path, upstream: Upstream):
    workspaces = CountingWorkspaces(tmp_path / "data")
    workspaces.prepare("r-warm00", REPO, 1, upstream.url)  # the mirror exists
    pushed = upstream.write({"src/app.py": "def answer():\n    return 42\n"}, "before the label")
    asked = time.time()
    CountingWorkspaces.fetches = 0
    made: dict[int, Path] = {}

    def prepare(n: int) -> None:
        made[n] = workspaces.prepare(f"r-burst{n}", REPO, 10 + n, upstream.url,
                                     fresh_after=asked).path

    threads = [threading.Thread(target=prepare, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(made) == list(range(6))
    assert CountingWorkspaces.fetches == 1
    for path in made.values():  # every run starts from what was pushed before it was asked
        assert (path / "src/app.py").read_text().endswith("return 42\n")
        assert git(path, "-c", "safe.directory=*", "rev-parse", "HEAD").strip() == pushed
    # A run asked for later fetches again.
    workspaces.prepare("r-later0", REPO, 30, upstream.url)
    assert CountingWorkspaces.fetches == 2


def test_a_warm_sandbox_directory_is_filled_in_place(workspaces: Workspaces,
                                                      upstream: Upstream):
    path = workspaces.worktree_path("r-inplace")
    path.mkdir(parents=True)
    inode = path.stat().st_ino
    wt = workspaces.prepare("r-inplace", REPO, 5, upstream.url)
    assert wt.path == path and path.stat().st_ino == inode  # same directory: mounts see it
    assert (path / "README.md").is_file()
    # A crash left files but no worktree: they go, the directory stays.
    workspaces.remove(wt)
    path.mkdir()
    inode = path.stat().st_ino
    (path / "half-written.txt").write_text("x")
    wt = workspaces.prepare("r-inplace", REPO, 5, upstream.url)
    assert path.stat().st_ino == inode and not (path / "half-written.txt").exists()
    assert (path / "README.md").is_file()
