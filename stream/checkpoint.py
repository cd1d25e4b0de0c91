"""Checkpoints: state and the input offsets it covers, made durable before offsets commit.

This is the only module that knows the commit order. :func:`commit_checkpoint` runs it:

1. flush the producer (alerts, groups, dead letters), raising if anything was not acked;
2. sync each partition's side outputs (the on-disk archive) and take their positions;
3. write each partition's checkpoint file atomically (temp file, fsync, rename, fsync dir);
4. commit the offsets to the consumer group;
5. let side outputs drop what the checkpoint made redundant.

An offset is therefore never committed before the state that covers it is on disk. A crash
between 3 and 4 is harmless: on restart the consumer seeks to the checkpointed offset.
Outputs are at-least-once: a crash after step 1 but before step 3 re-emits those alerts
and groups on restart (consumers dedupe by ``sample_id``; the archive is truncated back).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stream.durable import read_json, write_json_atomic

CHECKPOINT_VERSION = 1
CHECKPOINTS_DIR = "checkpoints"
"""The folder of a state directory holding one checkpoint file per input partition."""


OFFSET_RESETS = "offset_resets.jsonl"  # in the state dir: one line per offset found lost


def resume_offset(offset: int, log_start: int, log_end: int, policy: str) -> int | None:
    """Where to resume a partition whose checkpoint says ``offset``: the offset itself when
    the log still holds it (``log_start <= offset <= log_end``), else by ``policy``:
    ``earliest`` (the log's start), ``latest`` (its end) or ``fail`` (None: stop).

    >>> resume_offset(5, 0, 9, "fail"), resume_offset(500, 0, 9, "earliest")
    (5, 0)
    >>> resume_offset(500, 0, 9, "latest"), resume_offset(500, 0, 9, "fail") is None
    (9, True)
    """
    if log_start <= offset <= log_end:
        return offset
    return {"earliest": log_start, "latest": log_end}.get(policy)


def checkpoint_path(state_dir: Path, topic: str, partition: int) -> Path:
    return Path(state_dir) / CHECKPOINTS_DIR / f"{topic}-{partition}.json"


@dataclass(frozen=True)
class PartitionCheckpoint:
    """The durable state of one input partition; ``offset`` is the next offset to read."""

    topic: str
    partition: int
    offset: int
    state: dict[str, Any]
    outputs: dict[str, Any]
    written_at: float

    def to_doc(self) -> dict[str, Any]:
        return {"version": CHECKPOINT_VERSION, "topic": self.topic, "partition": self.partition,
                "offset": self.offset, "written_at": self.written_at,
                "outputs": self.outputs, "state": self.state}

    @classmethod
    def load(cls, state_dir: Path, topic: str, partition: int) -> PartitionCheckpoint | None:
        doc = read_json(checkpoint_path(state_dir, topic, partition))
        if doc is None:
            return None
        if doc.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {doc.get('version')!r} is not "
                             f"{CHECKPOINT_VERSION}")
        return cls(doc["topic"], doc["partition"], doc["offset"], doc["state"],
                   doc.get("outputs", {}), doc["written_at"])


class Flushable(Protocol):
    def flush(self, timeout: float = ...) -> None: ...


class Committer(Protocol):
    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None: ...


class PartitionOutputs(Protocol):
    """Side outputs of one partition that must be as durable as its state."""

    def checkpoint_position(self) -> dict[str, Any]: ...

    def after_checkpoint(self) -> None: ...


@dataclass
class PartitionSnapshot:
    topic: str
    partition: int
    offset: int
    state: Callable[[], dict[str, Any]]
    outputs: PartitionOutputs | None = None


def commit_checkpoint(state_dir: Path, snapshots: list[PartitionSnapshot],
                      producer: Flushable | None, consumer: Committer | None,
                      now: float) -> list[PartitionCheckpoint]:
    """Run the five steps above for every partition in ``snapshots``."""
    if producer is not None:
        producer.flush()  # 1
    written = []
    for snap in snapshots:
        outputs = snap.outputs.checkpoint_position() if snap.outputs else {}  # 2
        cp = PartitionCheckpoint(snap.topic, snap.partition, snap.offset, snap.state(),
                                 outputs, now)
        write_json_atomic(checkpoint_path(state_dir, snap.topic, snap.partition),
                          cp.to_doc())  # 3
        written.append(cp)
    if consumer is not None:
        consumer.commit({(s.topic, s.partition): s.offset for s in snapshots})  # 4
    for snap in snapshots:
        if snap.outputs:
            snap.outputs.after_checkpoint()  # 5
    return written
