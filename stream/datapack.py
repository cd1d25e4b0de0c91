"""Real teacher outputs from a data pack, and drift streams with known change points.

A pack file is gzip JSON lines, one teacher generation per line (``source``, ``task``,
``sample_id``, ``prompt``, ``teacher``, ``teacher_version``, ``output_text``, ``answer``,
``ground_truth``, ``correct``, ``extra``). :func:`read_pack` yields the records,
:func:`record_to_event` turns one into a :class:`~stream.events.TeacherEvent`.

:func:`build_drift_stream` is the construction every benchmark uses (issue 2): the
samples answered by every version of a chain [v1..vk] are shuffled with a seed and cut
into k consecutive segments; the watched teacher (named by v1's ``teacher`` field) emits
vi's output on segment i, so the change points are the starts of segments 2..k, counted
in the watched teacher's own event indices. Up to 4 peers (other versions of the same
file that answer all those samples, not in the chain, picked by a seeded rule) emit their
own outputs throughout and never change. Events carry ``teacher_version`` so that
experiments can check it; detectors must never read it.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stream.events import TeacherEvent

MAX_PEERS = 4
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_NOTE_FILTER = re.compile(r"extra\.(\w+)\s*==\s*'([^']*)'")


@dataclass(frozen=True)
class DriftStream:
    """An ordered multi-teacher stream with the watched teacher's change points."""

    events: list[TeacherEvent]
    change_points: list[int]  # indices into the watched teacher's own events
    watched: str
    peers: list[str]
    chain: list[str]
    n_samples: int

    def watched_events(self) -> list[TeacherEvent]:
        return [e for e in self.events if e.teacher == self.watched]


def read_pack(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the records of one pack file (``.jsonl.gz`` or plain ``.jsonl``)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def record_to_event(
    record: Mapping[str, Any],
    teacher: str | None = None,
    produced_at: datetime | None = None,
    event_id: str | None = None,
) -> TeacherEvent:
    """One pack record as a teacher event; ``teacher`` renames the stream."""
    version = record.get("teacher_version")
    return TeacherEvent(
        event_id=event_id or f"{record['sample_id']}|{version}",
        sample_id=str(record["sample_id"]),
        teacher=teacher or str(record.get("teacher") or version),
        output=record.get("output_text") or "",
        produced_at=produced_at or _EPOCH,
        teacher_version=version,
        prompt=record.get("prompt"),
        answer=record.get("answer"),
        ground_truth=record.get("ground_truth"),
        meta={"task": record.get("task"), "source": record.get("source"),
              "correct": record.get("correct")},
    )


def iter_pack_events(path: str | Path) -> Iterator[TeacherEvent]:
    """Every record of a pack as an event, named by its ``teacher`` field."""
    for record in read_pack(path):
        yield record_to_event(record)


def chain_filter(entry: Mapping[str, Any]) -> dict[str, str]:
    """Record filter of a chain entry: its ``where`` mapping of extra fields, else the
    ``extra.<key> == '<value>'`` clauses its note spells out (as the curated chains do)."""
    where = entry.get("where")
    if isinstance(where, Mapping):
        return {str(k).removeprefix("extra."): str(v) for k, v in where.items()}
    return dict(_NOTE_FILTER.findall(str(entry.get("note") or "")))


def field_value(record: Mapping[str, Any], name: str) -> str | None:
    """A record's value of a top-level field or of ``extra.<name>`` (``extra.`` optional)."""
    key = name.removeprefix("extra.")
    value = record.get(key) if not name.startswith("extra.") else None
    if value is None:
        value = (record.get("extra") or {}).get(key)
    return None if value is None else str(value)


def version_field(records: list[Mapping[str, Any]], entry: Mapping[str, Any]) -> str:
    """The field a chain's versions are values of: its ``field`` entry, else
    ``teacher_version`` when every version is one, else the first field (top level, then
    ``extra``) whose values include every version. ``ValueError`` when none does."""
    if entry.get("field"):
        return str(entry["field"])
    chain = {str(v) for v in entry["chain"]}
    values: dict[str, set[str]] = {}
    for r in records:
        for name, value in [*r.items(), *((f"extra.{k}", v)
                                          for k, v in (r.get("extra") or {}).items())]:
            if isinstance(value, str | int | float) and str(value) in chain:
                values.setdefault(name, set()).add(str(value))
    if values.get("teacher_version") == chain:
        return "teacher_version"
    for name, seen in values.items():
        if seen == chain:
            return name
    found = set().union(*values.values()) if values else set()
    raise ValueError(f"versions not in the pack: {', '.join(sorted(chain - found))}"
                     if chain - found else f"no one field holds all of {sorted(chain)}")


def _index(records: Iterable[Mapping[str, Any]], task: str, where: Mapping[str, str],
           field: str = "teacher_version") -> dict[str, dict[str, Mapping[str, Any]]]:
    """version -> sample_id -> first matching record (file order wins on duplicates)."""
    by_version: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in records:
        if task != "*" and r.get("task") != task:
            continue
        extra = r.get("extra") or {}
        if any(str(extra.get(k)) != v for k, v in where.items()):
            continue
        version = field_value(r, field)
        if version is not None:
            by_version.setdefault(version, {}).setdefault(r["sample_id"], r)
    return by_version


def build_drift_stream(
    pack: str | Path | Iterable[Mapping[str, Any]],
    entry: Mapping[str, Any],
    seed: int = 0,
    max_peers: int = MAX_PEERS,
) -> DriftStream:
    """Build the drift stream of one chain entry (``task``, ``chain``, optional ``field``:
    the record field the versions are values of, see :func:`version_field`) from a pack.

    Raises ``ValueError`` when a chain version is missing or the versions share no sample.
    """
    records = list(read_pack(pack) if isinstance(pack, str | Path) else pack)
    chain = [str(v) for v in entry["chain"]]
    if len(chain) < 2:
        raise ValueError(f"a chain needs at least 2 versions, got {chain}")
    field = version_field(records, entry)
    by_version = _index(records, str(entry.get("task", "*")), chain_filter(entry), field)
    missing = [v for v in chain if v not in by_version]
    if missing:
        raise ValueError(f"versions not in the pack: {', '.join(missing)}")
    shared = set.intersection(*(set(by_version[v]) for v in chain))
    if not shared:
        raise ValueError(f"versions {chain} share no sample")
    rng = random.Random(seed)
    samples = sorted(shared)
    rng.shuffle(samples)
    k, n = len(chain), len(samples)
    bounds = [i * n // k for i in range(k + 1)]
    candidates = sorted(v for v, recs in by_version.items()
                        if v not in chain and shared <= recs.keys())
    peers = sorted(rng.sample(candidates, min(max_peers, len(candidates))))
    watched = str(by_version[chain[0]][samples[0]].get("teacher") or chain[0])
    if watched in peers:
        raise ValueError(f"watched teacher name {watched!r} collides with a peer version")
    events: list[TeacherEvent] = []
    for seg, version in enumerate(chain):
        for i in range(bounds[seg], bounds[seg + 1]):
            sid = samples[i]
            at = _EPOCH + timedelta(seconds=i)
            group = [record_to_event(by_version[v][sid], teacher=name, produced_at=at,
                                     event_id=f"{sid}|{v}")  # unique whatever the field
                     for v, name in ((version, watched), *((p, p) for p in peers))]
            rng.shuffle(group)
            events.extend(group)
    return DriftStream(events=events, change_points=bounds[1:-1], watched=watched,
                       peers=peers, chain=chain, n_samples=n)


def load_chains(path: str | Path) -> list[dict[str, Any]]:
    """The chain entries of a ``drift_chains.json`` file."""
    with open(path, encoding="utf-8") as fh:
        chains = json.load(fh)
    if not isinstance(chains, list):
        raise ValueError(f"{path}: expected a JSON list of chain entries")
    return chains
