"""The run store: every training run and its metrics in one SQLite file, `$LLMOS_HOME/runs/runs.db`.

WAL mode lets `llmos runs show` read while a run writes. A run's files (checkpoints, TensorBoard
events, profiles) live in its own folder beside the database.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos.errors import NotFoundError
from llmos.library.store import home

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    out_dir TEXT NOT NULL,
    config TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    step INTEGER NOT NULL,
    value REAL NOT NULL,
    time REAL NOT NULL,
    PRIMARY KEY (run_id, key, step)
) WITHOUT ROWID;
"""


def runs_dir() -> Path:
    return home() / "runs"


@dataclass
class Run:
    id: str
    name: str
    kind: str
    status: str
    created: float
    updated: float
    out_dir: Path
    config: dict[str, Any]
    summary: dict[str, Any]


class RunStore:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else runs_dir() / "runs.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process kill
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def create(self, name: str, kind: str, config: dict[str, Any], out_dir: str | Path | None = None) -> Run:
        """A new run; its id is `YYYYmmdd-HHMMSS-name` (sortable, readable, unique)."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"
        base = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"
        run_id, n = base, 1
        while self.db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
            n += 1
            run_id = f"{base}-{n}"
        out = Path(out_dir) if out_dir else runs_dir() / run_id
        now = time.time()
        with self.db:
            self.db.execute("INSERT INTO runs VALUES (?, ?, ?, 'running', ?, ?, ?, ?, '{}')",
                            (run_id, name, kind, now, now, str(out), json.dumps(config)))
        return self.get(run_id)

    def get(self, run: str) -> Run:
        """A run by id, unique id prefix, or name (the latest run of that name)."""
        row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run,)).fetchone()
        if row is None:
            rows = self.db.execute("SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY created DESC",
                                   (run.replace("%", "\\%").replace("_", "\\_") + "%",)).fetchall()
            if len(rows) > 1:
                raise NotFoundError(f"run {run!r} is ambiguous: {', '.join(r[0] for r in rows[:5])}")
            row = rows[0] if rows else None
        if row is None:
            row = self.db.execute("SELECT * FROM runs WHERE name = ? ORDER BY created DESC", (run,)).fetchone()
        if row is None:
            raise NotFoundError(f"no run {run!r} in {self.path}; see `llmos runs list`")
        return Run(row[0], row[1], row[2], row[3], row[4], row[5], Path(row[6]), json.loads(row[7]),
                   json.loads(row[8]))

    def find_by_dir(self, out_dir: str | Path) -> Run | None:
        row = self.db.execute("SELECT id FROM runs WHERE out_dir = ? ORDER BY created DESC",
                              (str(Path(out_dir)),)).fetchone()
        return self.get(row[0]) if row else None

    def list(self) -> list[Run]:
        ids = [r[0] for r in self.db.execute("SELECT id FROM runs ORDER BY created")]
        return [self.get(i) for i in ids]

    def log(self, run_id: str, rows: list[tuple[str, int, float]]) -> None:
        """Record (key, step, value) rows; a step logged again (after a resume) replaces the old value."""
        now = time.time()
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?)",
                                [(run_id, k, int(s), float(v), now) for k, s, v in rows])

    def truncate(self, run_id: str, after_step: int) -> None:
        """Forget metrics a crashed run logged past its last checkpoint: the resumed run redoes them."""
        with self.db:
            self.db.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", (run_id, after_step))

    def metrics(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return list(self.db.execute("SELECT step, value FROM metrics WHERE run_id = ? AND key = ? ORDER BY step",
                                    (run_id, key)))

    def keys(self, run_id: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT key FROM metrics WHERE run_id = ? ORDER BY key",
                                              (run_id,))]

    def update(self, run_id: str, status: str | None = None, **summary: Any) -> None:
        run = self.get(run_id)
        merged = {**run.summary, **summary}
        with self.db:
            self.db.execute("UPDATE runs SET status = ?, updated = ?, summary = ? WHERE id = ?",
                            (status or run.status, time.time(), json.dumps(merged), run_id))
