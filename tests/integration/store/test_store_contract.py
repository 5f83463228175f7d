"""One contract suite, run against SQLite and against a real redis-server."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from runner.model import ACTIVE, IllegalTransition, RunDetails, RunState
from runner.store.base import LeaseLost, RunFinished, RunNotFound, StaleState, Store


def open_spec(spec: str) -> Store:
    """A store from 'sqlite:PATH' or a redis:// URL (picklable, for other processes)."""
    if spec.startswith("sqlite:"):
        from runner.store.sqlite import SqliteStore

        return SqliteStore(spec.removeprefix("sqlite:"))
    from runner.store.redis import RedisStore

    return RedisStore(spec)


@pytest.fixture(params=["sqlite", "redis"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def store(spec: str) -> Iterator[Store]:
    s = open_spec(spec)
    yield s
    s.close()


def advance(store: Store, run_id: str, *states: RunState, fence: int | None = None) -> None:
    for target in states:
        current = store.get_run(run_id).state
        store.transition(run_id, current, target, actor="test", fence=fence)


# ---------------------------------------------------------------- runs


def test_one_active_run_per_issue(store: Store) -> None:
    first, created = store.create_run("acme/w", 1, trigger_actor="alice")
    again, created_again = store.create_run("acme/w", 1)
    assert created and not created_again
    assert again.id == first.id
    other, _ = store.create_run("acme/w", 2)
    assert other.id != first.id
    advance(store, first.id, RunState.CANCELLED)
    fresh, created = store.create_run("acme/w", 1)
    assert created and fresh.id != first.id
    assert store.active_run("acme/w", 1) == fresh
    assert store.latest_run("acme/w", 1) == fresh


def test_a_follow_up_keeps_what_it_follows_and_answers(store: Store) -> None:
    first, _ = store.create_run("acme/w", 3, pr_number=9)
    advance(store, first.id, RunState.FAILED)
    details = RunDetails(follows=first.id, follow_up="@alice requested changes:", answers=(5, 6),
                         threads=(6,), answered_until=12.5, follow_ups=1, spent_before=0.25,
                         follow_up_kind="review")
    follow, created = store.create_run("acme/w", 3, pr_number=9, details=details)
    assert created and store.get_run(follow.id).details == details
    advance(store, follow.id, RunState.CANCELLED)
    # A finished run's record takes what happened to its PR (its state does not change).
    store.update_run(first.id, details=replace(first.details, pull_state="merged"))
    ended = store.get_run(first.id)
    assert ended.details.pull_state == "merged" and ended.state is RunState.FAILED
    assert store.latest_run("acme/w", 3).details.replied == ()  # type: ignore[union-attr]


def test_get_unknown_run(store: Store) -> None:
    with pytest.raises(RunNotFound, match="orchestrator runs"):
        store.get_run("r-ffffffffffff")


def test_list_filters_newest_first(store: Store) -> None:
    a, _ = store.create_run("acme/a", 1)
    b, _ = store.create_run("acme/b", 1)
    c, _ = store.create_run("acme/a", 2)
    advance(store, b.id, RunState.FAILED)
    assert [r.id for r in store.list_runs()] == [c.id, b.id, a.id]
    assert [r.id for r in store.list_runs(repo="acme/a")] == [c.id, a.id]
    assert [r.id for r in store.list_runs(states=[RunState.FAILED])] == [b.id]
    assert [r.id for r in store.list_runs(states=ACTIVE, limit=1)] == [c.id]


def test_transition_is_compare_and_set(store: Store) -> None:
    run, _ = store.create_run("acme/w", 1)
    moved = store.transition(run.id, RunState.QUEUED, RunState.PREPARING, actor="w1")
    assert moved.state is RunState.PREPARING
    with pytest.raises(StaleState):
        store.transition(run.id, RunState.QUEUED, RunState.PREPARING, actor="w2")
    with pytest.raises(IllegalTransition):
        store.transition(run.id, RunState.PREPARING, RunState.SUCCEEDED, actor="w1")
    assert store.get_run(run.id).state is RunState.PREPARING


def test_terminal_runs_never_change(store: Store) -> None:
    run, _ = store.create_run("acme/w", 1)
    advance(store, run.id, RunState.CANCELLED)
    for target in RunState:
        with pytest.raises(IllegalTransition):
            store.transition(run.id, RunState.CANCELLED, target, actor="x")


def test_update_fields_but_not_state(store: Store) -> None:
    run, _ = store.create_run("acme/w", 1)
    updated = store.update_run(run.id, pr_number=12, pr_url="http://x/pull/12", cost_usd=0.5)
    assert (updated.pr_number, store.get_run(run.id).cost_usd) == (12, 0.5)
    with pytest.raises(ValueError, match="state"):
        store.update_run(run.id, state="succeeded")


def test_spend_sums_the_cost_of_the_runs_created_since(store: Store) -> None:
    old, _ = store.create_run("acme/w", 1)
    store.update_run(old.id, cost_usd=0.5)
    time.sleep(0.01)
    since = time.time()
    time.sleep(0.01)
    first, _ = store.create_run("acme/w", 2)
    second, _ = store.create_run("acme/w", 3)
    other, _ = store.create_run("acme/x", 1)
    store.update_run(first.id, cost_usd=0.25)
    store.update_run(second.id, cost_usd=0.125)
    store.update_run(other.id, cost_usd=1.0)
    assert store.spend_by_repo(since) == {"acme/w": 0.375, "acme/x": 1.0}
    assert store.spend_by_repo(0)["acme/w"] == 0.875
    assert store.spend_by_repo(time.time() + 1) == {}


def test_runs_are_counted_by_state(store: Store) -> None:
    assert store.count_by_state() == {state: 0 for state in RunState}
    store.create_run("acme/w", 1)
    working, _ = store.create_run("acme/w", 2)
    done, _ = store.create_run("acme/w", 3)
    advance(store, working.id, RunState.PREPARING, RunState.RUNNING)
    advance(store, done.id, RunState.CANCELLED)
    store.update_run(working.id, cost_usd=0.5)  # a write that is no transition
    counts = store.count_by_state()
    assert counts[RunState.QUEUED] == 1 and counts[RunState.RUNNING] == 1
    assert counts[RunState.CANCELLED] == 1 and counts[RunState.PREPARING] == 0
    assert sum(counts.values()) == 3 and set(counts) == set(RunState)


def test_redis_counts_runs_written_before_its_state_index(redis_url: str) -> None:
    """A store upgraded in place: runs written by an older runner have no state index yet."""
    from runner.store.redis import RedisStore

    store = RedisStore(redis_url)
    old, _ = store.create_run("acme/w", 1)
    advance(store, old.id, RunState.FAILED)
    older, _ = store.create_run("acme/w", 2)
    # What an older runner left: the runs, but neither the state sets nor their marker.
    store.r.delete(*[store._k("state", s.value) for s in RunState], store._k("state-sets"))
    counts = store.count_by_state()
    assert counts[RunState.FAILED] == 1 and counts[RunState.QUEUED] == 1
    assert sum(counts.values()) == 2
    advance(store, older.id, RunState.CANCELLED)
    assert store.count_by_state()[RunState.QUEUED] == 0
    store.close()


def test_a_mark_is_made_once_across_processes(store: Store, spec: str) -> None:
    other = open_spec(spec)
    try:
        assert store.mark_once("warning:2026-12-03")
        assert not other.mark_once("warning:2026-12-03") and not store.mark_once(
            "warning:2026-12-03")
        assert other.mark_once("warning:2026-12-04")
    finally:
        other.close()


# ---------------------------------------------------------------- audit


def test_every_transition_is_an_audit_event(store: Store) -> None:
    run, _ = store.create_run("acme/w", 1, trigger_actor="alice")
    advance(store, run.id, RunState.PREPARING, RunState.RUNNING, RunState.CANCELLED)
    events = store.events(run.id)
    assert [e.kind for e in events] == ["created", "transition", "transition", "transition"]
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert events[-1].data == {"from": "running", "to": "cancelled", "reason": ""}
    assert events[0].actor == "alice"


def test_events_page(store: Store) -> None:
    run, _ = store.create_run("acme/w", 1)
    for i in range(25):
        store.append_event(run.id, "tool_call", {"i": i}, actor="agent")
    page1 = store.events(run.id, limit=10)
    page2 = store.events(run.id, after=page1[-1].seq, limit=10)
    rest = store.events(run.id, after=page2[-1].seq, limit=100)
    seen = [e.data.get("i") for e in page1 + page2 + rest if e.kind == "tool_call"]
    assert seen == list(range(25))
    assert len(rest) == 6  # 26 events in all (created + 25)


# ---------------------------------------------------------------- leases


def test_claim_oldest_first_and_only_once(store: Store) -> None:
    first, _ = store.create_run("acme/w", 1)
    second, _ = store.create_run("acme/w", 2)
    a = store.claim("w1", ttl=30)
    b = store.claim("w2", ttl=30)
    assert a is not None and b is not None
    assert (a.run_id, b.run_id) == (first.id, second.id)
    assert store.claim("w3", ttl=30) is None


def test_higher_priority_is_claimed_first_then_the_oldest(store: Store) -> None:
    store.create_run("acme/w", 1)
    urgent, _ = store.create_run("acme/w", 2, priority=9)
    store.create_run("acme/w", 3, priority=9)
    lease = store.claim("w", ttl=30)
    assert lease is not None and lease.run_id == urgent.id


def test_a_parked_run_is_claimed_only_when_due_or_woken(store: Store) -> None:
    run, _ = store.create_run("acme/w", 1)
    lease = store.claim("w1", ttl=30)
    assert lease is not None
    assert store.park(run.id, time.time() + 60, fence=lease.token, wakes=run.wakes)
    parked = store.get_run(run.id)
    assert parked.waiting and store.current_lease(run.id) is None
    assert store.claim("w2", ttl=30) is None  # waiting: nobody owns it, nobody claims it
    store.wake(run.id)
    again = store.claim("w2", ttl=30)
    assert again is not None and again.run_id == run.id and again.token > lease.token
    assert not store.get_run(run.id).waiting
    # Its time comes without any wake.
    assert store.park(run.id, time.time() + 0.2, fence=again.token,
                      wakes=store.get_run(run.id).wakes)
    assert store.claim("w3", ttl=30) is None
    time.sleep(0.3)
    assert store.claim("w3", ttl=30) is not None


def test_a_wake_while_the_run_works_is_not_lost_when_it_parks(store: Store) -> None:
    run, _ = store.create_run("acme/w", 1)
    lease = store.claim("w1", ttl=30)
    assert lease is not None
    seen = store.get_run(run.id).wakes
    store.wake(run.id)  # a CI event while the owner was still reading CI
    assert not store.park(run.id, time.time() + 600, fence=lease.token, wakes=seen)
    assert store.claim("w2", ttl=30) is not None  # claimable at once, not in ten minutes


def test_a_stale_owner_cannot_park_the_run(store: Store) -> None:
    run, _ = store.create_run("acme/w", 1)
    lease = store.claim("w1", ttl=30)
    assert lease is not None
    store.release(lease)
    newer = store.claim("w2", ttl=30)
    assert newer is not None
    with pytest.raises(LeaseLost):
        store.park(run.id, time.time() + 60, fence=lease.token, wakes=0)
    assert store.current_lease(run.id) is not None  # the new owner keeps it


def test_repo_limit(store: Store) -> None:
    store.create_run("acme/a", 1)
    store.create_run("acme/a", 2)
    b, _ = store.create_run("acme/b", 1)
    assert store.claim("w", ttl=30, repo_limit=1) is not None
    second = store.claim("w", ttl=30, repo_limit=1)
    assert second is not None and second.run_id == b.id


def test_paused_dispatch_claims_nothing(store: Store) -> None:
    store.create_run("acme/w", 1)
    store.pause(actor="bob", reason="incident")
    assert store.paused() is not None and store.paused()["actor"] == "bob"  # type: ignore[index]
    assert store.claim("w", ttl=30) is None
    store.resume(actor="bob")
    assert store.paused() is None
    assert store.claim("w", ttl=30) is not None


def test_expired_lease_is_recovered_and_the_old_owner_fenced(store: Store) -> None:
    run, _ = store.create_run("acme/w", 1)
    old = store.claim("w1", ttl=0.3)
    assert old is not None
    advance(store, run.id, RunState.PREPARING, fence=old.token)
    assert store.claim("w2", ttl=30) is None  # still held
    time.sleep(0.5)
    assert store.recover_expired() == [run.id]
    assert store.recover_expired() == []
    new = store.claim("w2", ttl=30)
    assert new is not None and new.run_id == run.id and new.token > old.token
    with pytest.raises(LeaseLost):
        store.check_fence(run.id, old.token)
    with pytest.raises(LeaseLost):
        store.transition(run.id, RunState.PREPARING, RunState.RUNNING, actor="w1",
                         fence=old.token)
    with pytest.raises(LeaseLost):
        store.update_run(run.id, fence=old.token, head_sha="abc")
    with pytest.raises(LeaseLost):
        store.renew(old, ttl=30)
    store.check_fence(run.id, new.token)
    assert store.transition(run.id, RunState.PREPARING, RunState.RUNNING, actor="w2",
                            fence=new.token).state is RunState.RUNNING
    assert [e.kind for e in store.events(run.id)].count("lease_expired") == 1


def test_renew_and_release(store: Store) -> None:
    run, _ = store.create_run("acme/w", 1)
    lease = store.claim("w1", ttl=0.4)
    assert lease is not None
    time.sleep(0.2)
    lease = store.renew(lease, ttl=30)
    time.sleep(0.3)
    store.check_fence(run.id, lease.token)  # still ours thanks to the renewal
    current = store.current_lease(run.id)
    assert current is not None and current.worker == "w1"
    store.release(lease)
    store.release(lease)  # twice is fine
    assert store.current_lease(run.id) is None
    assert store.claim_run(run.id, "w2", ttl=30) is not None
    assert store.claim_run(run.id, "w3", ttl=30) is None


def test_finished_runs_are_not_claimed(store: Store) -> None:
    run, _ = store.create_run("acme/w", 1)
    advance(store, run.id, RunState.FAILED)
    assert store.claim("w", ttl=30) is None
    assert store.claim_run(run.id, "w", ttl=30) is None


# ---------------------------------------------------------------- kills and bus


def test_kill_is_recorded_and_refused_for_finished_runs(store: Store) -> None:
    run, _ = store.create_run("acme/w", 1)
    advance(store, run.id, RunState.PREPARING, RunState.RUNNING)
    kill = store.request_kill(run.id, actor="alice", reason="wrong approach")
    assert store.kill_request(run.id) == kill
    event = store.events(run.id)[-1]
    assert (event.kind, event.actor) == ("kill_requested", "alice")
    assert event.data == {"reason": "wrong approach", "state": "running"}
    advance(store, run.id, RunState.CANCELLED)
    with pytest.raises(RunFinished, match="already cancelled"):
        store.request_kill(run.id, actor="alice", reason="again")


def test_subscribers_see_events_and_kills(store: Store) -> None:
    run, _ = store.create_run("acme/w", 1)
    sub = store.subscribe()
    store.append_event(run.id, "tool_call", {"cmd": "ls"})
    store.request_kill(run.id, actor="bob", reason="stop")
    kinds = []
    while (message := sub.get(timeout=1.0)) is not None:
        kinds.append(message["kind"])
        if message["kind"] == "kill":
            assert message["run"] == run.id and message["actor"] == "bob"
            break
    sub.close()
    assert kinds[0] == "event" and kinds[-1] == "kill"


# ---------------------------------------------------------------- across processes


def _race_claim(spec: str, worker: str, barrier: Any, results: Any) -> None:
    store = open_spec(spec)
    barrier.wait()
    lease = store.claim(worker, ttl=30)
    results.put((worker, lease.run_id if lease else None))


def test_eight_processes_race_for_one_run_and_exactly_one_wins(store: Store, spec: str) -> None:
    run, _ = store.create_run("acme/w", 1)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_race_claim, args=(spec, f"w{i}", barrier, results))
             for i in range(8)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    winners = [w for w, run_id in outcomes if run_id is not None]
    assert len(winners) == 1, outcomes
    assert all(run_id in (None, run.id) for _, run_id in outcomes)
    lease = store.current_lease(run.id)
    assert lease is not None and lease.worker == winners[0]


def _await_kill(spec: str, ready: Any, results: Any) -> None:
    store = open_spec(spec)
    sub = store.subscribe()
    ready.set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = sub.get(timeout=1.0)
        if message and message["kind"] == "kill":
            results.put((message["run"], time.time()))
            return
    results.put((None, time.time()))


def test_kill_in_one_process_reaches_another_within_a_second(store: Store, spec: str) -> None:
    run, _ = store.create_run("acme/w", 1)
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_await_kill, args=(spec, ready, results))
    proc.start()
    assert ready.wait(60)
    sent = time.time()
    store.request_kill(run.id, actor="alice", reason="stop it")
    received_run, received_at = results.get(timeout=30)
    proc.join(10)
    assert received_run == run.id
    assert received_at - sent < 1.0


def test_a_parked_run_is_not_reported_as_a_lost_owner(store: Store) -> None:
    """A run that waits gave its lease back on purpose: recovery neither audits it as
    ``lease_expired`` ("lost its owner") nor counts it as recovered."""
    run, _ = store.create_run("acme/w", 1)
    lease = store.claim("w1", ttl=30)
    assert lease is not None
    assert store.park(run.id, time.time() + 600, fence=lease.token, wakes=run.wakes)
    assert store.recover_expired() == []
    assert [e.kind for e in store.events(run.id, limit=100)
            if e.kind == "lease_expired"] == []
