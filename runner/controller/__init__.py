"""The controller: the one main loop of ``orchestrator serve`` (``Controller.run``).

Two halves share the store. Reconcile decides; workers do.

    webhook / poll / start-up
          |
          v
    queue(key) -> lock(key) -> observe (forge + store) -> plan -> execute -> requeue or forget
                                                                    |
                            Start: a queued run in the store -------+
                            Cancel: a kill request on the bus ------+
                                                                    v
    worker slots: claim(run) under a lease -> steps.drive(run) -> release, or park it waiting
    CI and PR events: the run they concern (head SHA or branch) -> wake it: claimable now
    bus listener: kill for a run this process owns -> stop its agent and container now

A run that waits (for CI) is owned by nobody: whichever process sees its event or its time
first claims its next step (``runner.run.driver``).

Modules: ``core`` (the Controller: feeders, reconcile, status), ``slots`` (worker slots and
leases), ``bus`` (kills and wakes from any process), ``ci_job`` (``handle-event``).
"""

from runner.controller.core import RECONCILERS, Controller, RunDriver
from runner.workqueue import issue_key, parse_key

__all__ = ["RECONCILERS", "Controller", "RunDriver", "issue_key", "parse_key"]
