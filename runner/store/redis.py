"""The shared store: Redis or Valkey, for many runner processes on many machines.

Runs are JSON strings updated in WATCH/MULTI transactions (compare-and-set); leases are keys
with a TTL taken by a small Lua script, so exactly one of many racing workers wins; the bus
is one pub/sub channel.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, TypeVar

import redis

from runner.model import MUTABLE_FIELDS, Event, KillRequest, Lease, Run, RunState
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

T = TypeVar("T")

# KEYS: lease, fence, leased-set; ARGV: run id, worker, ttl ms, expires_at
_CLAIM = """
if redis.call('SET', KEYS[1], 'pending', 'NX', 'PX', ARGV[3]) then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[2] .. '|' .. token .. '|' .. ARGV[4], 'PX', ARGV[3])
  redis.call('SADD', KEYS[3], ARGV[1])
  return token
end
return false
"""
# KEYS: lease; ARGV: token, ttl ms, worker, expires_at
_RENEW = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local _, _, worker, token = string.find(v, '^(.*)|(%d+)|')
if token ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], worker .. '|' .. token .. '|' .. ARGV[4], 'PX', ARGV[2])
return 1
"""
# KEYS: lease; ARGV: token
_RELEASE = """
local v = redis.call('GET', KEYS[1])
if v then
  local _, _, token = string.find(v, '|(%d+)|')
  if token == ARGV[1] then redis.call('DEL', KEYS[1]) end
end
return 1
"""


_DOWN = (redis.ConnectionError, redis.TimeoutError)


def _translated(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` raising StoreUnavailable where redis-py raises its own connection errors."""

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except _DOWN as exc:
            where = getattr(self, "url", None)
            what = f"Redis at {where}" if where else "the configured Redis"
            raise StoreUnavailable(f"{what} does not answer: {exc}") from None

    return call


def _store_errors(cls: type[T]) -> type[T]:
    """Every public method of ``cls`` says StoreUnavailable when Redis is away.

    Callers (the controller's bus listener, heartbeat and worker slots) handle StoreError and
    carry on; a raw redis.ConnectionError escaping from a method that lacked its own handler
    killed those threads while Redis restarted, and kills stopped arriving.
    """
    for name, value in list(vars(cls).items()):
        if callable(value) and (not name.startswith("_") or name == "__init__"):
            setattr(cls, name, _translated(value))
    return cls


@_store_errors
class RedisStore:
    """Store on a Redis or Valkey server shared by every runner process."""

    def __init__(self, url: str, *, prefix: str = "orchestrator:") -> None:
        self.url = url.replace("valkey://", "redis://", 1)
        self.p = prefix
        # decode_responses=True: every reply is a str, so the client is typed loosely.
        self.r: Any = redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=10,
                                      socket_connect_timeout=5, health_check_interval=15)
        self._claim = self.r.register_script(_CLAIM)
        self._renew = self.r.register_script(_RENEW)
        self._release = self.r.register_script(_RELEASE)

    # ------------------------------------------------------------ plumbing

    def _k(self, *parts: object) -> str:
        return self.p + ":".join(str(p) for p in parts)

    def _issue_key(self, repo: str, issue: int) -> str:
        return self._k("issue", f"{repo}#{issue}")

    def _atomic(self, watch: list[str], body: Callable[[Any], T]) -> T:
        """Run ``body(pipe)`` under WATCH; it reads, then calls ``pipe.multi()`` and writes."""
        try:
            with self.r.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(*watch)
                        result = body(pipe)
                        pipe.execute()
                        return result
                    except redis.WatchError:
                        continue
        except redis.ConnectionError as exc:
            raise StoreUnavailable(f"Redis at {self.url} does not answer: {exc}") from None

    def _load(self, client: Any, run_id: str) -> Run:
        raw = client.get(self._k("run", run_id))
        if raw is None:
            raise RunNotFound(run_id)
        return Run.from_dict(json.loads(raw))

    def _write_run(self, pipe: Any, run: Run) -> None:
        pipe.set(self._k("run", run.id), json.dumps(run.to_dict()))
        if run.terminal:
            pipe.zrem(self._k("active"), run.id)
            pipe.delete(self._issue_key(run.repo, run.issue))
            pipe.delete(self._k("lease", run.id))

    def _push_event(self, pipe: Any, event: Event) -> None:
        # seq is the position in the list; it is filled in when events are read back.
        raw = event.to_dict()
        raw.pop("seq")
        pipe.rpush(self._k("events", event.run_id), json.dumps(raw))
        pipe.publish(self._k("bus"), json.dumps({"kind": "event", "run": event.run_id,
                                                 "event": raw}))

    def _lease_of(self, value: str | None, run_id: str) -> Lease | None:
        if not value or value == "pending":
            return None
        worker, token, expires = value.rsplit("|", 2)
        return Lease(run_id=run_id, worker=worker, token=int(token), expires_at=float(expires))

    def _check_fence(self, client: Any, run_id: str, token: int) -> None:
        lease = self._lease_of(client.get(self._k("lease", run_id)), run_id)
        if lease is None or lease.token != token:
            raise LeaseLost(run_id, token)

    # ------------------------------------------------------------ runs

    def create_run(self, repo: str, issue: int, **fields: Any) -> tuple[Run, bool]:
        issue_key = self._issue_key(repo, issue)

        def body(pipe: Any) -> tuple[Run, bool]:
            existing = pipe.get(issue_key)
            if existing is not None:
                try:
                    run = self._load(pipe, existing)
                    if not run.terminal:
                        pipe.multi()
                        return run, False
                except RunNotFound:
                    pass
            now = time.time()
            run = Run(id=new_run_id(), repo=repo, issue=issue, created_at=now, updated_at=now,
                      **fields)
            pipe.multi()
            pipe.set(issue_key, run.id)
            pipe.set(self._k("latest", f"{repo}#{issue}"), run.id)
            pipe.zadd(self._k("runs"), {run.id: now})
            pipe.zadd(self._k("active"), {run.id: now})
            self._write_run(pipe, run)
            self._push_event(pipe, Event(run_id=run.id, kind="created", at=now,
                                         actor=run.trigger_actor or "runner",
                                         data={"repo": repo, "issue": issue}))
            pipe.publish(self._k("bus"), json.dumps({"kind": "wake", "run": run.id}))
            return run, True

        return self._atomic([issue_key], body)

    def get_run(self, run_id: str) -> Run:
        try:
            return self._load(self.r, run_id)
        except redis.ConnectionError as exc:
            raise StoreUnavailable(f"Redis at {self.url} does not answer: {exc}") from None

    def active_run(self, repo: str, issue: int) -> Run | None:
        run_id = self.r.get(self._issue_key(repo, issue))
        if run_id is None:
            return None
        run = self._load(self.r, run_id)
        return None if run.terminal else run

    def latest_run(self, repo: str, issue: int) -> Run | None:
        run_id = self.r.get(self._k("latest", f"{repo}#{issue}"))
        return self._load(self.r, run_id) if run_id else None

    def list_runs(self, *, states: Iterable[RunState] | None = None, repo: str | None = None,
                  limit: int = 100) -> list[Run]:
        wanted = set(states) if states is not None else None
        out: list[Run] = []
        start, page = 0, 500
        while len(out) < limit:
            ids = self.r.zrevrange(self._k("runs"), start, start + page - 1)
            if not ids:
                break
            raws = self.r.mget([self._k("run", i) for i in ids])
            for raw in raws:
                if raw is None:
                    continue
                run = Run.from_dict(json.loads(raw))
                if (wanted is None or run.state in wanted) and (repo is None or run.repo == repo):
                    out.append(run)
            start += page
        return out[:limit]

    def spend_by_repo(self, since: float) -> dict[str, float]:
        # The runs index is scored by creation time: only the day's runs are read.
        ids = self.r.zrangebyscore(self._k("runs"), since, "+inf")
        totals: dict[str, float] = {}
        for start in range(0, len(ids), 500):
            for raw in self.r.mget([self._k("run", i) for i in ids[start:start + 500]]):
                if raw is not None:
                    data = json.loads(raw)
                    totals[data["repo"]] = totals.get(data["repo"], 0.0) + float(
                        data.get("cost_usd") or 0.0)
        return totals

    def mark_once(self, key: str) -> bool:
        return bool(self.r.set(self._k("once", key), "1", nx=True, ex=int(MARK_TTL)))

    def transition(self, run_id: str, expected: RunState, target: RunState, *, actor: str,
                   reason: str = "", fence: int | None = None) -> Run:
        def body(pipe: Any) -> Run:
            run = self._load(pipe, run_id)
            if run.state != expected:
                raise StaleState(run_id, expected, run.state)
            if fence is not None:
                self._check_fence(pipe, run_id, fence)
            new, event = run.transition(target, actor=actor, reason=reason, at=time.time())
            pipe.multi()
            self._write_run(pipe, new)
            self._push_event(pipe, event)
            return new

        return self._atomic([self._k("run", run_id), self._k("lease", run_id)], body)

    def update_run(self, run_id: str, *, fence: int | None = None, **fields: Any) -> Run:
        unknown = set(fields) - MUTABLE_FIELDS
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)} outside a transition")

        def body(pipe: Any) -> Run:
            run = self._load(pipe, run_id)
            if fence is not None:
                self._check_fence(pipe, run_id, fence)
            new = Run.from_dict(run.to_dict() | fields | {"updated_at": time.time()})
            pipe.multi()
            self._write_run(pipe, new)
            return new

        return self._atomic([self._k("run", run_id), self._k("lease", run_id)], body)

    # ------------------------------------------------------------ audit

    def append_event(self, run_id: str, kind: str, data: dict[str, Any] | None = None, *,
                     actor: str = "runner") -> Event:
        event = Event(run_id=run_id, kind=kind, at=time.time(), actor=actor, data=data or {})
        raw = event.to_dict()
        raw.pop("seq")
        try:
            seq = self.r.rpush(self._k("events", run_id), json.dumps(raw))
            self.r.publish(self._k("bus"), json.dumps({"kind": "event", "run": run_id,
                                                       "event": raw | {"seq": seq}}))
        except redis.ConnectionError as exc:
            raise StoreUnavailable(f"Redis at {self.url} does not answer: {exc}") from None
        return Event.from_dict(raw | {"seq": seq})

    def events(self, run_id: str, *, after: int = 0, limit: int = 100) -> list[Event]:
        raws = self.r.lrange(self._k("events", run_id), after, after + limit - 1)
        return [Event.from_dict(json.loads(raw) | {"seq": after + i + 1})
                for i, raw in enumerate(raws)]

    # ------------------------------------------------------------ leases

    def _try_claim(self, run_id: str, worker: str, ttl: float) -> Lease | None:
        expires = time.time() + ttl
        token = self._claim(keys=[self._k("lease", run_id), self._k("fence", run_id),
                                  self._k("leased")],
                            args=[run_id, worker, max(1, int(ttl * 1000)), repr(expires)])
        if not token:
            return None
        return Lease(run_id=run_id, worker=worker, token=int(token), expires_at=expires)

    def claim(self, worker: str, ttl: float, *, repo_limit: int | None = None) -> Lease | None:
        try:
            if self.r.exists(self._k("paused")):
                return None
            ids = self.r.zrange(self._k("active"), 0, -1)
            if not ids:
                return None
            leases = self.r.mget([self._k("lease", i) for i in ids])
            runs = {i: Run.from_dict(json.loads(raw)) for i, raw in
                    zip(ids, self.r.mget([self._k("run", i) for i in ids]), strict=True) if raw}
            held: dict[str, int] = {}
            for run_id, lease in zip(ids, leases, strict=True):
                if lease and run_id in runs:
                    held[runs[run_id].repo] = held.get(runs[run_id].repo, 0) + 1
            now = time.time()
            ready = sorted((run for run_id, lease in zip(ids, leases, strict=True)
                            if not lease and (run := runs.get(run_id)) is not None
                            and not run.terminal and run.wake_at <= now),
                           key=lambda run: (-run.priority, run.created_at))
            for run in ready:
                if repo_limit is not None and held.get(run.repo, 0) >= repo_limit:
                    continue
                won = self._try_claim(run.id, worker, ttl)
                if won is not None:
                    if run.wake_at:  # claimed: it works now, whatever it waited for
                        self._set_wake(run.id, lambda current: replace(current, wake_at=0.0))
                    return won
            return None
        except redis.ConnectionError as exc:
            raise StoreUnavailable(f"Redis at {self.url} does not answer: {exc}") from None

    def _set_wake(self, run_id: str, change: Callable[[Run], Run],
                  fence: int | None = None) -> Run:
        def body(pipe: Any) -> Run:
            run = self._load(pipe, run_id)
            if fence is not None:
                self._check_fence(pipe, run_id, fence)
            new = change(run)
            pipe.multi()
            if not run.terminal:
                self._write_run(pipe, new)
            if fence is not None:  # parked: nobody holds it, and nobody lost it either
                pipe.delete(self._k("lease", run_id))
                pipe.srem(self._k("leased"), run_id)
            return new

        return self._atomic([self._k("run", run_id), self._k("lease", run_id)], body)

    def park(self, run_id: str, until: float, *, fence: int, wakes: int) -> bool:
        parked = self._set_wake(
            run_id, lambda run: replace(run, updated_at=time.time(), wake_at=(
                until if run.wakes == wakes else time.time())), fence=fence)
        if parked.wakes != wakes:
            self.r.publish(self._k("bus"), json.dumps({"kind": "wake", "run": run_id}))
        return parked.wakes == wakes

    def wake(self, run_id: str) -> Run:
        run = self._set_wake(run_id, lambda run: replace(
            run, wake_at=0.0, wakes=run.wakes + 1))
        self.r.publish(self._k("bus"), json.dumps({"kind": "wake", "run": run_id}))
        return run

    def claim_run(self, run_id: str, worker: str, ttl: float) -> Lease | None:
        run = self._load(self.r, run_id)
        if run.terminal:
            return None
        won = self._try_claim(run_id, worker, ttl)
        if won is not None and run.wake_at:  # claimed: it works now, whatever it waited for
            self._set_wake(run_id, lambda current: replace(current, wake_at=0.0))
        return won

    def renew(self, lease: Lease, ttl: float) -> Lease:
        expires = time.time() + ttl
        ok = self._renew(keys=[self._k("lease", lease.run_id)],
                         args=[lease.token, max(1, int(ttl * 1000)), lease.worker, repr(expires)])
        if not ok:
            raise LeaseLost(lease.run_id, lease.token)
        return Lease(lease.run_id, lease.worker, lease.token, expires)

    def release(self, lease: Lease) -> None:
        self._release(keys=[self._k("lease", lease.run_id)], args=[lease.token])

    def check_fence(self, run_id: str, token: int) -> None:
        self._check_fence(self.r, run_id, token)

    def current_lease(self, run_id: str) -> Lease | None:
        return self._lease_of(self.r.get(self._k("lease", run_id)), run_id)

    def recover_expired(self) -> list[str]:
        expired: list[str] = []
        for run_id in self.r.smembers(self._k("leased")):
            if self.r.exists(self._k("lease", run_id)):
                continue
            if not self.r.srem(self._k("leased"), run_id):
                continue  # another process recovered it first
            try:
                run = self._load(self.r, run_id)
            except RunNotFound:
                continue
            if not run.terminal:
                expired.append(run_id)
                self.append_event(run_id, "lease_expired",
                                  {"note": "claimable again; the next owner resumes"})
        return expired

    # ------------------------------------------------------------ kills and dispatch

    def request_kill(self, run_id: str, *, actor: str, reason: str) -> KillRequest:
        run = self.get_run(run_id)
        if run.terminal:
            raise RunFinished(run)
        kill = KillRequest(run_id=run_id, actor=actor, reason=reason, at=time.time())
        self.r.set(self._k("kill", run_id), json.dumps(kill.__dict__), nx=True)
        self.append_event(run_id, "kill_requested", {"reason": reason, "state": str(run.state)},
                          actor=actor)
        self.publish({"kind": "kill", "run": run_id, "actor": actor, "reason": reason})
        return kill

    def kill_request(self, run_id: str) -> KillRequest | None:
        raw = self.r.get(self._k("kill", run_id))
        return KillRequest(**json.loads(raw)) if raw else None

    def pause(self, *, actor: str, reason: str) -> None:
        self.r.set(self._k("paused"), json.dumps({"actor": actor, "reason": reason,
                                                  "at": time.time()}))
        self.publish({"kind": "pause", "actor": actor, "reason": reason})

    def resume(self, *, actor: str) -> None:
        self.r.delete(self._k("paused"))
        self.publish({"kind": "resume", "actor": actor})

    def paused(self) -> dict[str, Any] | None:
        raw = self.r.get(self._k("paused"))
        return json.loads(raw) if raw else None

    # ------------------------------------------------------------ bus

    def publish(self, message: BusMessage) -> None:
        try:
            self.r.publish(self._k("bus"), json.dumps(message))
        except redis.ConnectionError as exc:
            raise StoreUnavailable(f"Redis at {self.url} does not answer: {exc}") from None

    def subscribe(self) -> _RedisSubscription:
        return _RedisSubscription(self.r, self._k("bus"))

    def ping(self) -> None:
        try:
            self.r.ping()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"Redis at {self.url} does not answer ({exc}); start it, or "
                                   "fix store.redis in the configuration") from None
        except redis.ResponseError as exc:
            raise StoreUnavailable(f"Redis at {self.url} refused: {exc}") from None

    def close(self) -> None:
        self.r.close()


@_store_errors
class _RedisSubscription:
    def __init__(self, client: Any, channel: str) -> None:
        self._pubsub = client.pubsub()
        self._pubsub.subscribe(channel)
        # Wait for the server's confirmation: messages published after we return must arrive.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            reply = self._pubsub.get_message(timeout=0.1)
            if reply and reply.get("type") == "subscribe":
                break

    def get(self, timeout: float) -> BusMessage | None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            message = self._pubsub.get_message(timeout=remaining)
            if message and message.get("type") == "message":
                return dict(json.loads(message["data"]))

    def close(self) -> None:
        self._pubsub.close()
