"""The commit order: an offset is never committed before the state that covers it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from stream.archive import SegmentArchive, read_archive
from stream.checkpoint import (
    PartitionCheckpoint,
    PartitionSnapshot,
    checkpoint_path,
    commit_checkpoint,
    write_json_atomic,
)
from stream.exceptions import CommitError, ProducerFlushError


class Producer:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.flushed = fail, 0

    def flush(self, timeout: float = 30.0) -> None:
        if self.fail:
            raise ProducerFlushError("1 message(s) not acknowledged")
        self.flushed += 1


class Consumer:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.committed = fail, {}

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        if self.fail:
            raise CommitError("rebalance in progress")
        self.committed.update(offsets)


def snapshot(offset: int, state: dict | None = None) -> PartitionSnapshot:
    return PartitionSnapshot("in", 0, offset, lambda: state or {"n": offset})


def test_commit_writes_state_then_commits_offset(tmp_path: Path) -> None:
    producer, consumer = Producer(), Consumer()
    commit_checkpoint(tmp_path, [snapshot(42)], producer, consumer, now=1.0)
    cp = PartitionCheckpoint.load(tmp_path, "in", 0)
    assert cp is not None and cp.offset == 42 and cp.state == {"n": 42}
    assert producer.flushed == 1
    assert consumer.committed == {("in", 0): 42}


def test_commit_fails_when_producer_flush_fails(tmp_path: Path) -> None:
    consumer = Consumer()
    with pytest.raises(ProducerFlushError):
        commit_checkpoint(tmp_path, [snapshot(42)], Producer(fail=True), consumer, now=1.0)
    assert not checkpoint_path(tmp_path, "in", 0).exists()
    assert consumer.committed == {}


def test_commit_fails_when_state_write_fails(tmp_path: Path) -> None:
    consumer = Consumer()
    commit_checkpoint(tmp_path, [snapshot(10)], Producer(), consumer, now=1.0)

    def broken_state() -> dict:
        raise OSError("disk full")

    with pytest.raises(OSError):
        commit_checkpoint(tmp_path, [PartitionSnapshot("in", 0, 20, broken_state)], Producer(),
                          consumer, now=2.0)
    assert PartitionCheckpoint.load(tmp_path, "in", 0).offset == 10  # old state intact
    assert consumer.committed == {("in", 0): 10}
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["in-0.json"]


def test_state_is_durable_when_offset_commit_fails(tmp_path: Path) -> None:
    with pytest.raises(CommitError):
        commit_checkpoint(tmp_path, [snapshot(7)], Producer(), Consumer(fail=True), now=1.0)
    assert PartitionCheckpoint.load(tmp_path, "in", 0).offset == 7  # restart seeks here


def test_atomic_write_never_leaves_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": object()})  # fails mid-serialisation
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_archive_restore_drops_lines_written_after_checkpoint(tmp_path: Path) -> None:
    archive = SegmentArchive(tmp_path, "g-0", segment_records=100)
    for i in range(3):
        archive.append(b'{"i": %d}' % i)
    position = archive.checkpoint_position()
    archive.append(b'{"i": 99}')  # processed, then the process died before the checkpoint
    archive.sync()
    archive.close()

    again = SegmentArchive(tmp_path, "g-0", segment_records=100)
    again.restore(position)
    again.append(b'{"i": 3}')
    again.sync()
    assert [json.loads(x)["i"] for x in read_archive(tmp_path)] == [0, 1, 2, 3]


def test_archive_restore_undoes_a_rotation_the_checkpoint_missed(tmp_path: Path) -> None:
    archive = SegmentArchive(tmp_path, "g-0", segment_records=2)
    archive.append(b'{"i": 0}')
    position = archive.checkpoint_position()  # seq 0 holds one line: not full
    archive.append(b'{"i": 1}')
    archive.checkpoint_position()  # rotates to .gz, but say this checkpoint never landed
    archive.close()

    again = SegmentArchive(tmp_path, "g-0", segment_records=2)
    again.restore(position)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["g-0-00000000.jsonl"]
    assert [json.loads(x)["i"] for x in read_archive(tmp_path)] == [0]
