"""Replay an archived or recorded stream through the monitor pipeline, offline.

Users replay a stream to try detectors and training recipes before they trust them.
Three sources, one iterator of :class:`~stream.events.TeacherEvent`:

* a ``distill serve`` state dir or its ``archive/`` folder: the teacher groups are split
  back into their events, ordered by ``produced_at`` then ``event_id``;
* a ``.jsonl.gz`` (or ``.jsonl``) of events, as ``distill simulate`` writes, in file order;
  its ``.changepoints.json`` sidecar, when present, gives the true change points;
* a data-pack file plus a chain of ``drift_chains.json``: the benchmark's drift stream
  (:func:`stream.datapack.build_drift_stream`).

:class:`Replay` runs :class:`~distill.monitor.pipeline.MonitorPipeline` over it and writes a fresh
state dir that ``distill status`` and ``distill report`` read:

* ``checkpoints/replay-0.json``: a checkpoint in the serve format (pipeline state, the
  offset = events read);
* ``archive/``: the completed groups, as ``serve`` archives them;
* ``alerts.jsonl``: every drift record, in order;
* ``timeline.jsonl``: the bank's summary every ``snapshot_every`` events (for the report);
* ``changepoints.json``: true change points when the source knows them;
* ``replay.json``: what was replayed and how fast.

The pipeline runs on event time, so the output does not depend on pacing: the same input
gives the same alerts. Pacing (``speed``) sleeps so that wall time follows
``produced_at / speed``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from distill.groups import TeacherGroup
from distill.monitor.pipeline import MonitorPipeline, PipelineConfig
from distill.statedir import StateDir, jsonl_line
from stream.archive import SegmentArchive, read_archive
from stream.checkpoint import PartitionCheckpoint
from stream.durable import write_json_atomic
from stream.events import TeacherEvent, decode_event, format_timestamp, parse_timestamp

TOPIC = "replay"


class ReplaySourceError(ValueError):
    """The source cannot be read as any of the three kinds (the message says why)."""


class StateDirNotEmpty(RuntimeError):
    """The target state dir already holds files and ``force`` was not given."""


@dataclass
class Source:
    """A replayable stream: its events (materialised), kind and true change points."""

    kind: str  # "archive" | "events" | "pack"
    path: Path
    events: list[TeacherEvent]
    change_points: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0  # undecodable lines


# -- sources --------------------------------------------------------------------------------

def events_from_group(group: TeacherGroup) -> list[TeacherEvent]:
    """The teacher events a group was joined from (its answers, with the shared fields)."""
    out = []
    fallback = parse_timestamp(group.completed_at or "")
    for a in group.answers:
        at = parse_timestamp(a.produced_at or "") or fallback
        if at is None:
            raise ReplaySourceError(f"group {group.sample_id}: answer {a.event_id} has no time")
        out.append(TeacherEvent(event_id=a.event_id, sample_id=group.sample_id,
                                teacher=a.teacher, output=a.output, produced_at=at,
                                teacher_version=a.teacher_version, prompt=group.prompt,
                                answer=a.answer, labels=a.labels,
                                ground_truth=group.ground_truth, images=group.images))
    return out


def archive_events(directory: Path) -> list[TeacherEvent]:
    """Events of every archived group in ``directory``, by (produced_at, event_id)."""
    events: dict[str, TeacherEvent] = {}
    for line in read_archive(directory):
        for event in events_from_group(TeacherGroup.from_json(line)):
            events.setdefault(event.event_id, event)
    return sorted(events.values(), key=lambda e: (e.produced_at, e.event_id))


def file_events(path: Path) -> tuple[list[TeacherEvent], int]:
    """Events of a ``.jsonl.gz`` / ``.jsonl`` file in file order, and the lines skipped."""
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    events, skipped = [], 0
    with opener(path, "rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            decoded = decode_event(raw.rstrip(b"\n"))
            if isinstance(decoded, TeacherEvent):
                events.append(decoded)
            else:
                skipped += 1
    return events, skipped


def _is_pack(path: Path) -> bool:
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                first = json.loads(line)
                return "output_text" in first and "event_id" not in first
    return False


def find_chain(chains: list[dict[str, Any]], name: str, pack: Path | None) -> dict[str, Any]:
    """A chain entry by index (``3``) or by its versions (``a->b`` or ``a,b``).

    >>> chains = [{"file": "f.jsonl.gz", "chain": ["v1", "v2"]}]
    >>> find_chain(chains, "v1->v2", None)["chain"], find_chain(chains, "0", None)["chain"]
    (['v1', 'v2'], ['v1', 'v2'])
    """
    if name.isdigit():
        if int(name) >= len(chains):
            raise ReplaySourceError(f"chain index {name} out of range (0..{len(chains) - 1})")
        return chains[int(name)]
    wanted = [v.strip() for v in name.replace("->", ",").split(",") if v.strip()]
    for entry in chains:
        if [str(v) for v in entry["chain"]] == wanted and (
                pack is None or entry.get("file") in (None, pack.name)):
            return entry
    raise ReplaySourceError(f"no chain {name!r} in the chains file"
                            + (f" for {pack.name}" if pack else ""))


def pack_source(pack: Path, chain: str, chains_file: Path, seed: int = 0) -> Source:
    """The drift stream of one chain of a pack file, with its change points."""
    from stream.datapack import build_drift_stream, load_chains

    entry = find_chain(load_chains(chains_file), chain, pack)
    stream = build_drift_stream(pack, entry, seed=seed)
    points = [{"teacher": stream.watched, "kind": entry.get("kind", "chain"),
               "event_index_of_teacher": cp} for cp in stream.change_points]
    return Source("pack", pack, stream.events, points)


def open_source(source: Path, chain: str | None = None, data_dir: Path | None = None,
                seed: int = 0) -> Source:
    """Recognise and read SOURCE (module docstring)."""
    source = Path(source)
    if source.is_dir():
        layout = StateDir(source)
        folder = layout.archive if layout.archive.is_dir() else source
        events = archive_events(folder)
        if not events:
            raise ReplaySourceError(f"{source}: no archived groups found")
        return Source("archive", source, events, _read_points(layout.changepoints))
    if not source.is_file():
        raise ReplaySourceError(f"{source}: no such file or directory")
    if chain is not None or _is_pack(source):
        if chain is None:
            raise ReplaySourceError(f"{source} is a data pack: name a chain with --chain")
        chains = (data_dir or source.parent) / "drift_chains.json"
        return pack_source(source, chain, chains, seed)
    events, skipped = file_events(source)
    from stream.simulator import changepoints_path

    return Source("events", source, events, _read_points(changepoints_path(source)), skipped)


def _read_points(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else []


# -- pacing ---------------------------------------------------------------------------------

def paced(events: Iterable[TeacherEvent], speed: float | None,
          sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic) -> Iterator[TeacherEvent]:
    """Yield events so that wall time follows ``produced_at / speed`` (None or 0: no wait).

    >>> from datetime import UTC, datetime, timedelta
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> evs = [TeacherEvent(f"e{i}", "s", "a", "x", t0 + timedelta(seconds=10 * i))
    ...        for i in range(3)]
    >>> waits = []
    >>> _ = list(paced(evs, speed=10.0, sleep=waits.append, clock=lambda: 0.0))
    >>> waits
    [1.0, 2.0]
    """
    if not speed:
        yield from events
        return
    began: float | None = None
    first: datetime | None = None
    for event in events:
        if first is None:
            first, began = event.produced_at, clock()
        else:
            assert began is not None
            due = began + (event.produced_at - first).total_seconds() / speed
            wait = due - clock()
            if wait > 0:
                sleep(wait)  # pacing the stream to event time, not synchronisation
        yield event


# -- the offline run ------------------------------------------------------------------------

def prepare_state_dir(state_dir: Path, force: bool = False) -> None:
    """Make ``state_dir`` ready for a fresh replay; refuse a non-empty one unless ``force``,
    and then remove only what a replay writes."""
    state_dir = Path(state_dir)
    if state_dir.exists() and any(state_dir.iterdir()):
        if not force:
            raise StateDirNotEmpty(f"{state_dir} is not empty (use --force to overwrite a "
                                   "previous replay's outputs)")
        for target in StateDir(state_dir).replay_outputs():
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)


class Replay:
    """Runs the pipeline over a :class:`Source` and writes the state dir (module docstring).

    ``on_event(i)`` is called after each event (the CLI's progress bar).
    """

    def __init__(self, state_dir: Path, config: PipelineConfig | None = None,
                 snapshot_every: int = 500) -> None:
        if snapshot_every <= 0:
            raise ValueError("snapshot_every must be > 0")
        self.state_dir = Path(state_dir)
        self.layout = StateDir(self.state_dir)
        self.pipeline = MonitorPipeline(config)
        self.snapshot_every = snapshot_every
        self.alerts: list[dict[str, Any]] = []
        self.archive = SegmentArchive(self.layout.archive, f"{TOPIC}-0")
        self.processed = 0

    def run(self, source: Source, speed: float | None = None,
            on_event: Callable[[int], None] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
        started = time.perf_counter()
        last_at: datetime | None = None
        with open(self.layout.alerts, "wb") as alerts, open(self.layout.timeline, "wb") as timeline:
            for event in paced(source.events, speed, sleep):
                self._emit(self.pipeline.process(event), alerts)
                self.processed += 1
                last_at = event.produced_at
                if self.processed % self.snapshot_every == 0:
                    self._snapshot(timeline, last_at)
                if on_event is not None:
                    on_event(self.processed)
            self._emit(self.pipeline.flush(), alerts)
            self._snapshot(timeline, last_at)
        seconds = time.perf_counter() - started
        self._checkpoint()
        if source.change_points:
            write_json_atomic(self.layout.changepoints, source.change_points)
        summary = self.summary(source, seconds)
        write_json_atomic(self.layout.replay_summary, summary)
        return summary

    def _emit(self, out: Any, alerts: Any) -> None:
        for record in out.alerts:
            doc = record.to_dict()
            self.alerts.append(doc)
            alerts.write(jsonl_line(doc))
        for group in out.groups:
            self.archive.append(group.to_json())

    def _snapshot(self, timeline: Any, at: datetime | None) -> None:
        doc = {"events": self.processed, "time": format_timestamp(at) if at else None,
               "alerts": len(self.alerts), "summary": self.pipeline.bank.summary()}
        timeline.write(jsonl_line(doc))

    def _checkpoint(self) -> None:
        outputs = {"archive": self.archive.checkpoint_position()}
        self.archive.after_checkpoint()
        self.archive.close()
        cp = PartitionCheckpoint(TOPIC, 0, self.processed, self.pipeline.to_state(), outputs,
                                 time.time())
        write_json_atomic(self.layout.checkpoint(TOPIC, 0), cp.to_doc())

    def summary(self, source: Source, seconds: float) -> dict[str, Any]:
        by_teacher: dict[str, int] = {}
        for a in self.alerts:
            by_teacher[a["teacher"]] = by_teacher.get(a["teacher"], 0) + 1
        counters = self.pipeline.counters()
        counters["events_by_teacher"] = counters.pop("events")
        return {"source": str(source.path), "kind": source.kind, "events": self.processed,
                "skipped_lines": source.skipped, "alerts": len(self.alerts),
                "alerts_by_teacher": dict(sorted(by_teacher.items())),
                "change_points": source.change_points, **counters,
                "seconds": round(seconds, 3),
                "events_per_s": round(self.processed / seconds, 1) if seconds > 0 else None,
                "state_dir": str(self.state_dir)}


def republish(source: Source, sink: Any, topic: str, speed: float | None = None,
              on_event: Callable[[TeacherEvent], None] | None = None) -> int:
    """Send the source's events to ``topic`` (keyed by sample), paced like a replay.

    Only a producer is used: no consumer group is joined, so production consumers and
    their committed offsets are untouched.
    """
    from stream.simulator import produce

    return produce(paced(source.events, speed), sink, topic, on_event=on_event)
