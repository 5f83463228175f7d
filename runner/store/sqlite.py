"""The embedded store: one SQLite file in WAL mode, shared by the processes of one machine.

Writes that must be atomic (create, transition, claim) run in ``BEGIN IMMEDIATE`` transactions;
the cross-process bus is a table that subscribers poll every few tens of milliseconds.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from runner.clock import SYSTEM_CLOCK, Clock
from runner.model import (
    MUTABLE_FIELDS,
    PRIORITY_DEFAULT,
    Event,
    KillRequest,
    Lease,
    Run,
    RunState,
)
from runner.store.base import (
    MARK_TTL,
    BusMessage,
    LeaseLost,
    RunFinished,
    RunNotFound,
    StaleState,
    StoreUnavailable,
    new_run_id,
)
from runner.store.sqlite_schema import ACTIVE_SQL as _ACTIVE_SQL
from runner.store.sqlite_schema import SCHEMA as _SCHEMA

_BUS_KEEP_S = 600.0
_POLL_S = 0.05


class SqliteStore:
    """Store on one SQLite file; safe across threads and processes of one machine."""

    def __init__(self, path: str | Path, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = Path(path)
        self.clock = clock  # leases, wake times and audit times go by it
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create {self.path.parent}: {exc.strerror} "
                                   "(set store.sqlite to a writable path)") from None
        self._local = threading.local()
        # Writers of this process take turns here: waiting in SQLite's busy handler instead
        # sleeps in growing steps (up to 100 ms) and added seconds under a burst of runs.
        self._write_lock = threading.Lock()
        self._publishes = 0
        try:
            self._db().executescript(_SCHEMA)  # executescript commits by itself
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot use {self.path}: {exc} "
                                   "(set store.sqlite to a writable path)") from None

    # ------------------------------------------------------------ plumbing

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                     check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA busy_timeout=30000")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open {self.path}: {exc} "
                                       "(set store.sqlite to a writable path)") from None
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @staticmethod
    def _row_to_run(row: tuple[str, str]) -> Run:
        state, data = row
        raw = json.loads(data)
        raw["state"] = state
        return Run.from_dict(raw)

    def _load(self, db: sqlite3.Connection, run_id: str) -> Run:
        row = db.execute("SELECT state, data FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return self._row_to_run(row)

    @staticmethod
    def _save(db: sqlite3.Connection, run: Run) -> None:
        db.execute("UPDATE runs SET state=?, data=? WHERE id=?",
                   (str(run.state), json.dumps(run.to_dict()), run.id))

    def _check_fence(self, db: sqlite3.Connection, run_id: str, token: int) -> None:
        row = db.execute("SELECT token, expires_at FROM leases WHERE run_id=?",
                         (run_id,)).fetchone()
        if row is None or row[0] != token or row[1] <= self.clock.now():
            raise LeaseLost(run_id, token)

    def _append(self, db: sqlite3.Connection, event: Event) -> Event:
        (last,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id=?",
                             (event.run_id,)).fetchone()
        event = Event(run_id=event.run_id, kind=event.kind, at=event.at, actor=event.actor,
                      data=event.data, seq=last + 1)
        db.execute("INSERT INTO events VALUES (?,?,?,?,?,?)",
                   (event.run_id, event.seq, event.kind, event.at, event.actor,
                    json.dumps(event.data)))
        self._publish(db, {"kind": "event", "run": event.run_id, "event": event.to_dict()})
        return event

    def _publish(self, db: sqlite3.Connection, message: BusMessage) -> None:
        now = self.clock.now()
        db.execute("INSERT INTO bus (at, message) VALUES (?, ?)", (now, json.dumps(message)))
        self._publishes += 1
        if self._publishes % 200 == 0:
            db.execute("DELETE FROM bus WHERE at < ?", (now - _BUS_KEEP_S,))

    # ------------------------------------------------------------ runs

    def create_run(self, repo: str, issue: int, **fields: Any) -> tuple[Run, bool]:
        with self._tx() as db:
            # a constant list of states; values are bound parameters
            row = db.execute(f"SELECT state, data FROM runs WHERE repo=? AND issue=? "  # noqa: S608
                             f"AND state IN {_ACTIVE_SQL}", (repo, issue)).fetchone()
            if row is not None:
                return self._row_to_run(row), False
            now = self.clock.now()
            run = Run(id=new_run_id(), repo=repo, issue=issue, created_at=now, updated_at=now,
                      **fields)
            db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?)",
                       (run.id, repo, issue, str(run.state), now, json.dumps(run.to_dict())))
            self._append(db, Event(run_id=run.id, kind="created", at=now,
                                   actor=run.trigger_actor or "runner",
                                   data={"repo": repo, "issue": issue}))
            self._publish(db, {"kind": "wake", "run": run.id})
            return run, True

    def get_run(self, run_id: str) -> Run:
        return self._load(self._db(), run_id)

    def active_run(self, repo: str, issue: int) -> Run | None:
        # a constant list of states; values are bound parameters
        row = self._db().execute(f"SELECT state, data FROM runs WHERE repo=? AND issue=? "  # noqa: S608
                                 f"AND state IN {_ACTIVE_SQL}", (repo, issue)).fetchone()
        return self._row_to_run(row) if row else None

    def latest_run(self, repo: str, issue: int) -> Run | None:
        row = self._db().execute("SELECT state, data FROM runs WHERE repo=? AND issue=? "
                                 "ORDER BY created_at DESC LIMIT 1", (repo, issue)).fetchone()
        return self._row_to_run(row) if row else None

    def list_runs(self, *, states: Iterable[RunState] | None = None, repo: str | None = None,
                  limit: int = 100) -> list[Run]:
        sql, args = "SELECT state, data FROM runs WHERE 1=1", list[Any]()
        if states is not None:
            wanted = [str(s) for s in states]
            sql += f" AND state IN ({','.join('?' * len(wanted))})"
            args += wanted
        if repo is not None:
            sql += " AND repo=?"
            args.append(repo)
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        return [self._row_to_run(r) for r in self._db().execute(sql, args)]

    def count_by_state(self) -> dict[RunState, int]:
        rows = self._db().execute("SELECT state, COUNT(*) FROM runs GROUP BY state").fetchall()
        return {state: 0 for state in RunState} | {RunState(s): int(n) for s, n in rows}

    def spend_by_repo(self, since: float) -> dict[str, float]:
        rows = self._db().execute(
            "SELECT repo, SUM(json_extract(data, '$.cost_usd')) FROM runs "
            "WHERE created_at >= ? GROUP BY repo", (since,)).fetchall()
        return {repo: float(total or 0.0) for repo, total in rows}

    def mark_once(self, key: str) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM meta WHERE key LIKE 'once:%' AND CAST(value AS REAL) < ?",
                       (self.clock.now() - MARK_TTL,))
            added = db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                               ("once:" + key, str(self.clock.now())))
            return added.rowcount == 1

    def transition(self, run_id: str, expected: RunState, target: RunState, *, actor: str,
                   reason: str = "", fence: int | None = None) -> Run:
        with self._tx() as db:
            run = self._load(db, run_id)
            if run.state != expected:
                raise StaleState(run_id, expected, run.state)
            if fence is not None:
                self._check_fence(db, run_id, fence)
            run, event = run.transition(target, actor=actor, reason=reason, at=self.clock.now())
            self._save(db, run)
            self._append(db, event)
            if target.terminal:
                db.execute("DELETE FROM leases WHERE run_id=?", (run_id,))
            return run

    def update_run(self, run_id: str, *, fence: int | None = None, **fields: Any) -> Run:
        unknown = set(fields) - MUTABLE_FIELDS
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)} outside a transition")
        with self._tx() as db:
            run = self._load(db, run_id)
            if fence is not None:
                self._check_fence(db, run_id, fence)
            raw = run.to_dict() | fields | {"updated_at": self.clock.now()}
            run = Run.from_dict(raw)
            self._save(db, run)
            return run

    # ------------------------------------------------------------ audit

    def append_event(self, run_id: str, kind: str, data: dict[str, Any] | None = None, *,
                     actor: str = "runner") -> Event:
        with self._tx() as db:
            return self._append(db, Event(run_id=run_id, kind=kind, at=self.clock.now(),
                                          actor=actor, data=data or {}))

    def events(self, run_id: str, *, after: int = 0, limit: int = 100) -> list[Event]:
        rows = self._db().execute(
            "SELECT run_id, kind, at, actor, data, seq FROM events WHERE run_id=? AND seq>? "
            "ORDER BY seq LIMIT ?", (run_id, after, limit))
        return [Event(run_id=r[0], kind=r[1], at=r[2], actor=r[3], data=json.loads(r[4]),
                      seq=r[5]) for r in rows]

    # ------------------------------------------------------------ leases

    def _grant(self, db: sqlite3.Connection, run_id: str, worker: str, ttl: float) -> Lease:
        db.execute("INSERT INTO fences VALUES (?, 1) ON CONFLICT(run_id) "
                   "DO UPDATE SET token=token+1", (run_id,))
        (token,) = db.execute("SELECT token FROM fences WHERE run_id=?", (run_id,)).fetchone()
        lease = Lease(run_id=run_id, worker=worker, token=token,
                      expires_at=self.clock.now() + ttl)
        db.execute("INSERT OR REPLACE INTO leases VALUES (?,?,?,?)",
                   (run_id, worker, token, lease.expires_at))
        return lease

    def claim(self, worker: str, ttl: float, *, repo_limit: int | None = None) -> Lease | None:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM meta WHERE key='paused'").fetchone():
                return None
            now = self.clock.now()
            rows = db.execute(
                # constant SQL fragments; values are bound parameters
                f"SELECT r.id, r.repo FROM runs r LEFT JOIN leases l "  # noqa: S608
                f"ON l.run_id = r.id AND l.expires_at > ? "
                f"WHERE r.state IN {_ACTIVE_SQL} AND l.run_id IS NULL "
                f"AND COALESCE(json_extract(r.data, '$.wake_at'), 0) <= ? "
                f"ORDER BY COALESCE(json_extract(r.data, '$.priority'), {PRIORITY_DEFAULT}) DESC, "
                f"r.created_at", (now, now)).fetchall()
            for run_id, repo in rows:
                if repo_limit is not None:
                    (held,) = db.execute(
                        "SELECT COUNT(*) FROM leases l JOIN runs r ON r.id = l.run_id "
                        "WHERE r.repo=? AND l.expires_at > ?", (repo, now)).fetchone()
                    if held >= repo_limit:
                        continue
                lease = self._grant(db, run_id, worker, ttl)
                run = self._load(db, run_id)
                if run.wake_at:  # claimed: it works now, whatever it waited for
                    self._save(db, replace(run, wake_at=0.0))
                return lease
            return None

    def park(self, run_id: str, until: float, *, fence: int, wakes: int) -> bool:
        with self._tx() as db:
            run = self._load(db, run_id)
            self._check_fence(db, run_id, fence)
            woken = run.wakes != wakes
            self._save(db, replace(run, wake_at=self.clock.now() if woken else until,
                                   updated_at=self.clock.now()))
            db.execute("DELETE FROM leases WHERE run_id=? AND token=?", (run_id, fence))
            if woken:
                self._publish(db, {"kind": "wake", "run": run_id})
            return not woken

    def wake(self, run_id: str) -> Run:
        with self._tx() as db:
            run = self._load(db, run_id)
            if run.terminal:
                return run
            run = replace(run, wake_at=0.0 if run.wake_at else run.wake_at, wakes=run.wakes + 1)
            self._save(db, run)
            self._publish(db, {"kind": "wake", "run": run_id})
            return run

    def claim_run(self, run_id: str, worker: str, ttl: float) -> Lease | None:
        with self._tx() as db:
            run = self._load(db, run_id)
            held = db.execute("SELECT 1 FROM leases WHERE run_id=? AND expires_at > ?",
                              (run_id, self.clock.now())).fetchone()
            if run.terminal or held:
                return None
            if run.wake_at:  # claimed: it works now, whatever it waited for
                self._save(db, replace(run, wake_at=0.0))
            return self._grant(db, run_id, worker, ttl)

    def renew(self, lease: Lease, ttl: float) -> Lease:
        with self._tx() as db:
            self._check_fence(db, lease.run_id, lease.token)
            renewed = Lease(lease.run_id, lease.worker, lease.token, self.clock.now() + ttl)
            db.execute("UPDATE leases SET expires_at=? WHERE run_id=?",
                       (renewed.expires_at, lease.run_id))
            return renewed

    def release(self, lease: Lease) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM leases WHERE run_id=? AND token=?", (lease.run_id, lease.token))

    def check_fence(self, run_id: str, token: int) -> None:
        self._check_fence(self._db(), run_id, token)

    def current_lease(self, run_id: str) -> Lease | None:
        row = self._db().execute("SELECT run_id, worker, token, expires_at FROM leases "
                                 "WHERE run_id=? AND expires_at > ?",
                                 (run_id, self.clock.now())).fetchone()
        return Lease(*row) if row else None

    def recover_expired(self) -> list[str]:
        with self._tx() as db:
            # a constant list of states; values are bound parameters
            rows = db.execute(f"SELECT l.run_id FROM leases l JOIN runs r ON r.id = l.run_id "  # noqa: S608
                              f"WHERE l.expires_at <= ? AND r.state IN {_ACTIVE_SQL}",
                              (self.clock.now(),)).fetchall()
            expired = [r[0] for r in rows]
            for run_id in expired:
                db.execute("DELETE FROM leases WHERE run_id=?", (run_id,))
                self._append(db, Event(run_id=run_id, kind="lease_expired", at=self.clock.now(),
                                       data={"note": "claimable again; the next owner resumes"}))
            return expired

    # ------------------------------------------------------------ kills and dispatch

    def request_kill(self, run_id: str, *, actor: str, reason: str) -> KillRequest:
        with self._tx() as db:
            run = self._load(db, run_id)
            if run.terminal:
                raise RunFinished(run)
            kill = KillRequest(run_id=run_id, actor=actor, reason=reason, at=self.clock.now())
            db.execute("INSERT OR IGNORE INTO kills VALUES (?,?,?,?)",
                       (run_id, actor, reason, kill.at))
            self._append(db, Event(run_id=run_id, kind="kill_requested", at=kill.at, actor=actor,
                                   data={"reason": reason, "state": str(run.state)}))
            self._publish(db, {"kind": "kill", "run": run_id, "actor": actor, "reason": reason})
            return kill

    def kill_request(self, run_id: str) -> KillRequest | None:
        row = self._db().execute("SELECT run_id, actor, reason, at FROM kills WHERE run_id=?",
                                 (run_id,)).fetchone()
        return KillRequest(*row) if row else None

    def pause(self, *, actor: str, reason: str) -> None:
        with self._tx() as db:
            value = json.dumps({"actor": actor, "reason": reason, "at": self.clock.now()})
            db.execute("INSERT OR REPLACE INTO meta VALUES ('paused', ?)", (value,))
            self._publish(db, {"kind": "pause", "actor": actor, "reason": reason})

    def resume(self, *, actor: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM meta WHERE key='paused'")
            self._publish(db, {"kind": "resume", "actor": actor})

    def paused(self) -> dict[str, Any] | None:
        row = self._db().execute("SELECT value FROM meta WHERE key='paused'").fetchone()
        return json.loads(row[0]) if row else None

    # ------------------------------------------------------------ bus

    def publish(self, message: BusMessage) -> None:
        with self._tx() as db:
            self._publish(db, message)

    def subscribe(self) -> _SqliteSubscription:
        (last,) = self._db().execute("SELECT COALESCE(MAX(id), 0) FROM bus").fetchone()
        return _SqliteSubscription(self, last)

    def ping(self) -> None:
        try:
            self._db().execute("SELECT 1 FROM runs LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.path}: {exc}") from None

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class _SqliteSubscription:
    def __init__(self, store: SqliteStore, last: int) -> None:
        self._store, self._last = store, last
        self._pending: list[BusMessage] = []

    def get(self, timeout: float) -> BusMessage | None:
        deadline = time.monotonic() + timeout
        while not self._pending:
            rows = self._store._db().execute(
                "SELECT id, message FROM bus WHERE id > ? ORDER BY id LIMIT 500",
                (self._last,)).fetchall()
            for row_id, message in rows:
                self._last = row_id
                self._pending.append(json.loads(message))
            if self._pending:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(_POLL_S, remaining))
        return self._pending.pop(0)

    def close(self) -> None:
        self._pending.clear()
