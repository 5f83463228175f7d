"""The tables of the SQLite store (created when missing, so an older file gains new indexes)."""

from __future__ import annotations

from runner.model import ACTIVE

# A run's active states, as SQL: at most one active run per issue.
ACTIVE_SQL = "(" + ",".join(f"'{s}'" for s in sorted(ACTIVE)) + ")"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, repo TEXT NOT NULL, issue INTEGER NOT NULL, state TEXT NOT NULL,
    created_at REAL NOT NULL, data TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_one_active ON runs(repo, issue)
    WHERE state IN {ACTIVE_SQL};
CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at);
CREATE INDEX IF NOT EXISTS runs_state ON runs(state);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, at REAL NOT NULL,
    actor TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS leases (
    run_id TEXT PRIMARY KEY, worker TEXT NOT NULL, token INTEGER NOT NULL, expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fences (run_id TEXT PRIMARY KEY, token INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kills (
    run_id TEXT PRIMARY KEY, actor TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bus (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
    message TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
