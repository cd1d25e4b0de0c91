"""A bounded, durable store of teacher groups for the trainer (SQLite, WAL, synchronous=FULL).

The trainer commits its Kafka offsets only after :meth:`GroupBuffer.add` returns, so a
group that was committed is on disk. Inserts are idempotent by ``sample_id`` (a group
re-emitted after a monitor restart is stored once). When the buffer is full the oldest
groups are evicted. Groups with fewer than ``min_answers`` answers (a stray or late answer
that timed out alone) and groups cut to fit a Kafka record (``truncated``) are never
stored, so they reach neither training nor the probe. A fixed fraction of samples, chosen
by a hash of ``sample_id``, is the held-out probe set of the evaluation gate;
:meth:`GroupBuffer.new_since` and :meth:`GroupBuffer.replay` never return a probe group, so
probe groups are never trained on.

>>> from distill.groups import Consensus, TeacherAnswer, TeacherGroup
>>> def group(i):
...     return TeacherGroup(f"s{i}", "p", "complete", [TeacherAnswer("a", f"e{i}", "o", "y"),
...                         TeacherAnswer("b", f"f{i}", "o", "n")], Consensus("n", 1, True), {})
>>> buf = GroupBuffer(":memory:", max_groups=100, probe_fraction=0.2)
>>> buf.add([group(i) for i in range(50)]), buf.add([group(3)])
(50, 0)
>>> c = buf.counts()
>>> c.train + c.probe, c.probe
(50, 6)
>>> sel = buf.select(watermark=0, max_new=10, replay_fraction=0.0, seed=0)
>>> len(sel.new), any(is_probe(g.sample_id, 0.2) for g in sel.groups)
(10, False)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from distill.config import TrainConfig
from distill.groups import TeacherGroup
from stream.archive import list_segments

MIN_GROUP_ANSWERS = TrainConfig.model_fields["min_group_answers"].default

_SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sample_id TEXT NOT NULL UNIQUE,
    ts REAL NOT NULL,
    probe INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS groups_probe_seq ON groups (probe, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def is_probe(sample_id: str, fraction: float) -> bool:
    """Deterministic held-out split: the same sample is a probe on every machine and run."""
    digest = hashlib.sha256(sample_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def group_time(group: TeacherGroup, default: float) -> float:
    """``completed_at`` as epoch seconds; ``default`` when absent or unparseable."""
    if not group.completed_at:
        return default
    try:
        return parse_time(group.completed_at)
    except ValueError:
        return default


def parse_time(text: str) -> float:
    """RFC 3339 / ISO 8601 to epoch seconds; a naive time is taken as UTC."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        from datetime import UTC
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass(frozen=True, slots=True)
class BufferCounts:
    train: int
    probe: int
    evicted: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class Selection:
    """The groups of one round: new ones (after ``watermark``) plus replayed older ones."""

    new: list[TeacherGroup]
    replay: list[TeacherGroup]
    upto_seq: int  # the watermark once this round has trained

    @property
    def groups(self) -> list[TeacherGroup]:
        return self.new + self.replay


class GroupBuffer:
    """SQLite-backed group store; ``path=":memory:"`` for tests and doctests."""

    def __init__(self, path: str | Path, max_groups: int = 50_000,
                 probe_fraction: float = 0.1, min_answers: int = MIN_GROUP_ANSWERS) -> None:
        if max_groups <= 0:
            raise ValueError("max_groups must be positive")
        if not 0.0 <= probe_fraction < 1.0:
            raise ValueError("probe_fraction must be in [0, 1)")
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self.max_groups = max_groups
        self.min_answers = min_answers
        # The split is fixed when the buffer is created, so a later flag cannot move a
        # sample that was already evaluated on into training.
        self.probe_fraction = float(self._meta("probe_fraction", str(probe_fraction)))

    # -- writing ---------------------------------------------------------------------

    def add(self, groups: Iterable[TeacherGroup]) -> int:
        """Insert in one durable transaction; returns how many were new. Evicts the oldest.
        Groups too small or truncated are skipped and counted (``skipped`` in meta)."""
        now = time.time()
        groups = list(groups)
        kept = [g for g in groups if self.trainable(g)]
        rows = [(g.sample_id, group_time(g, now), int(is_probe(g.sample_id, self.probe_fraction)),
                 json.dumps(g.to_dict(), ensure_ascii=False, separators=(",", ":")))
                for g in kept]
        with self._tx():
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO groups (sample_id, ts, probe, body) VALUES (?, ?, ?, ?)",
                rows)
            inserted = self._db.total_changes - before
            self._evict()
            if len(kept) < len(groups):
                skipped = int(self._meta("skipped", "0")) + len(groups) - len(kept)
                self._set_meta("skipped", str(skipped))
        return inserted

    def trainable(self, group: TeacherGroup) -> bool:
        """Enough answers to have negatives, and every text whole."""
        return len(group.answers) >= self.min_answers and group.truncated is None

    def _evict(self) -> None:
        (count,) = self._db.execute("SELECT COUNT(*) FROM groups").fetchone()
        excess = count - self.max_groups
        if excess <= 0:
            return
        self._db.execute(
            "DELETE FROM groups WHERE seq IN (SELECT seq FROM groups ORDER BY seq LIMIT ?)",
            (excess,))
        evicted = int(self._meta("evicted", "0")) + excess
        self._set_meta("evicted", str(evicted))

    def import_archive(self, directory: Path) -> int:
        """Add every group of a serve archive: its compressed segments and the open one,
        anywhere under ``directory`` (as :func:`stream.archive.list_segments` lists them),
        one TeacherGroup JSON per line.

        Compressed segments never change, so one read to its end is remembered by name and
        size and skipped next time; the open segment is read as far as it goes. Lines that
        are not groups are skipped. Idempotent: inserts are by ``sample_id``.
        """
        added = 0
        for segment in list_segments(directory, recursive=True):
            key = f"archive:{segment.relative_to(directory)}"
            size = str(segment.stat().st_size)
            gz = segment.name.endswith(".gz")
            if gz and self._meta(key, "") == size:
                continue
            groups, complete = _read_segment(segment)
            added += self.add(groups)
            if gz and complete:
                self.set_meta(key, size)
        return added

    # -- reading ---------------------------------------------------------------------

    def counts(self) -> BufferCounts:
        rows = dict(self._db.execute("SELECT probe, COUNT(*) FROM groups GROUP BY probe"))
        (last,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM groups").fetchone()
        return BufferCounts(train=rows.get(0, 0), probe=rows.get(1, 0),
                            evicted=int(self._meta("evicted", "0")), last_seq=last)

    def count_new(self, watermark: int) -> int:
        """How many training groups arrived after ``watermark`` (the trigger's K)."""
        (n,) = self._db.execute("SELECT COUNT(*) FROM groups WHERE probe = 0 AND seq > ?",
                                (watermark,)).fetchone()
        return int(n)

    def new_since(self, watermark: int, limit: int | None = None,
                  since_ts: float | None = None) -> list[tuple[int, TeacherGroup]]:
        """Training groups with ``seq > watermark`` (and ``ts >= since_ts``), oldest first."""
        sql = "SELECT seq, body FROM groups WHERE probe = 0 AND seq > ?"
        args: list[object] = [watermark]
        if since_ts is not None:
            sql += " AND ts >= ?"
            args.append(since_ts)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [(seq, TeacherGroup.from_json(body)) for seq, body in self._db.execute(sql, args)]

    def replay(self, before_seq: int, k: int, seed: int) -> list[TeacherGroup]:
        """A seeded uniform sample of ``k`` older training groups (``seq <= before_seq``)."""
        if k <= 0:
            return []
        seqs = [s for (s,) in self._db.execute(
            "SELECT seq FROM groups WHERE probe = 0 AND seq <= ? ORDER BY seq", (before_seq,))]
        chosen = sorted(random.Random(seed).sample(seqs, min(k, len(seqs))))
        return [self._get(s) for s in chosen]

    def probe(self, limit: int = 64) -> list[TeacherGroup]:
        """The ``limit`` most recent probe groups, oldest first (the evaluation gate's set)."""
        rows = self._db.execute(
            "SELECT body FROM groups WHERE probe = 1 ORDER BY seq DESC LIMIT ?", (limit,))
        return [TeacherGroup.from_json(b) for (b,) in reversed(list(rows))]

    def select(self, watermark: int, max_new: int, replay_fraction: float, seed: int,
               since_ts: float | None = None) -> Selection:
        """One round's groups: up to ``max_new`` new ones plus ``replay_fraction`` as many old.

        With ``since_ts`` (``distill retrain --since``) the new groups are those completed
        at or after that time, whatever the watermark.
        """
        base = 0 if since_ts is not None else watermark
        rows = self.new_since(base, limit=max_new, since_ts=since_ts)
        new = [g for _, g in rows]
        upto = max([watermark, *(s for s, _ in rows)])
        first_new = rows[0][0] if rows else upto + 1
        k = round(len(new) * replay_fraction)
        replay = self.replay(min(first_new - 1, watermark), k, seed) if k else []
        return Selection(new=new, replay=replay, upto_seq=upto)

    def _get(self, seq: int) -> TeacherGroup:
        (body,) = self._db.execute("SELECT body FROM groups WHERE seq = ?", (seq,)).fetchone()
        return TeacherGroup.from_json(body)

    # -- meta and lifecycle ------------------------------------------------------------

    def _meta(self, key: str, default: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            with self._tx():
                self._set_meta(key, default)
            return default
        return str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._tx():
            self._set_meta(key, value)

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> GroupBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, so concurrent writers (train and retrain) serialise."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            self._owner = True
        else:
            self._owner = False

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self._owner:
            return
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _read_segment(path: Path) -> tuple[list[TeacherGroup], bool]:
    out: list[TeacherGroup] = []
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            for line in _lines(f):
                try:
                    out.append(TeacherGroup.from_json(line))
                except (ValueError, KeyError, TypeError):
                    continue
    except (EOFError, OSError):
        return out, False
    return out, True


def _lines(f: Iterable[str]) -> Iterator[str]:
    for line in f:
        if line.strip():
            yield line
