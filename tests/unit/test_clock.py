"""The clock seam: a FakeClock's waits end when it is moved forward, and the work queue's
delayed looks (the controller's backoff after a failed look) go by the clock they are given."""

from __future__ import annotations

import threading

from runner.clock import SYSTEM_CLOCK, FakeClock, call_later
from runner.workqueue import WorkQueue


def test_a_fake_clocks_sleep_ends_when_the_clock_is_moved_past_it() -> None:
    clock = FakeClock()
    done = threading.Event()
    sleeper = threading.Thread(target=lambda: (clock.sleep(3600), done.set()), daemon=True)
    sleeper.start()
    assert not done.wait(0.1)  # an hour has not passed
    before = clock.now()
    clock.advance(3600)
    assert done.wait(5)
    assert clock.now() - before >= 3600


def test_a_wait_on_a_fake_clock_ends_at_once_when_its_event_is_set() -> None:
    clock, event = FakeClock(), threading.Event()
    threading.Timer(0.05, event.set).start()
    assert clock.wait(event, 3600) is True


def test_a_delayed_look_comes_back_when_the_clock_reaches_it_not_before() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock)
    queue.add_after("acme/app#1", 300)  # the controller's backoff after a failed look
    assert queue.get(timeout=0.1) is None
    clock.advance(299)
    assert queue.get(timeout=0.1) is None
    clock.advance(1)
    assert queue.get(timeout=5) == "acme/app#1"


def test_a_cancelled_timer_never_fires() -> None:
    clock, fired = FakeClock(), threading.Event()
    cancel = call_later(clock, 10, fired.set)
    cancel.set()
    clock.advance(20)
    assert not fired.wait(0.1)


def test_closing_the_queue_drops_its_delayed_looks() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock)
    queue.add_after("acme/app#2", 60)
    queue.close()
    clock.advance(60)
    assert queue.get(timeout=0.1) is None


def test_the_system_clock_is_the_machines() -> None:
    import time

    assert abs(SYSTEM_CLOCK.now() - time.time()) < 5
    assert SYSTEM_CLOCK.wait(threading.Event(), 0) is False
