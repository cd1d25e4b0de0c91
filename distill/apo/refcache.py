"""Reference log-probs kept across rounds, in one SQLite file.

The reference pi_st is frozen, so a candidate's reference log-prob never changes: a group
replayed in a later round (the continual trainer mixes new groups with older ones) needs no
second reference pass. Keys are the reference model's identity (its directory and weight
files' size and mtime) plus the candidate's token ids, so a new reference or a different
tokenisation simply misses. SQLite's journal keeps the file whole if a round is killed.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> cache = ReferenceCache(d / "ref.sqlite", model_key="m1")
>>> cache.put_many({candidate_key([1, 2, 3], 2): -1.5})
>>> cache.get_many([candidate_key([1, 2, 3], 2), candidate_key([1, 2], 1)])
{'...': -1.5}
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from pathlib import Path


def candidate_key(input_ids: Sequence[int], prompt_len: int) -> str:
    """Stable key of one tokenised candidate (prompt + response split included)."""
    raw = f"{prompt_len}:" + ",".join(map(str, input_ids))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def model_identity(model_dir: Path) -> str:
    """The reference directory plus each weight file's name, size and mtime."""
    model_dir = Path(model_dir).resolve()
    parts = [str(model_dir)]
    for f in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


class ReferenceCache:
    """``key -> log-prob`` for one reference model, in a shared SQLite file.

    ``hits`` counts the candidates that skipped the reference pass thanks to the file (the
    caller, :func:`~distill.apo.data.attach_reference`, keeps it).
    """

    def __init__(self, path: Path, model_key: str) -> None:
        self.path = Path(path)
        self.model_key = model_key
        self.hits = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS ref_logps (model TEXT, cand TEXT, "
                       "logp REAL, PRIMARY KEY (model, cand))")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get_many(self, keys: Iterable[str]) -> dict[str, float]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, float] = {}
        with closing(self._connect()) as db:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"SELECT cand, logp FROM ref_logps WHERE model = ? AND "
                                  f"cand IN ({marks})", [self.model_key, *chunk])
                found.update(rows.fetchall())
        return found

    def put_many(self, values: Mapping[str, float]) -> None:
        with closing(self._connect()) as db, db:
            db.executemany("INSERT OR REPLACE INTO ref_logps VALUES (?, ?, ?)",
                           [(self.model_key, k, v) for k, v in values.items()])
