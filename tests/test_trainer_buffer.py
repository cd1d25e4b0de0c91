"""The trainer's group buffer: durable, idempotent, bounded, with a probe split never trained on."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.groups import Consensus, DriftState, TeacherAnswer, TeacherGroup
from distill.trainer.buffer import GroupBuffer, is_probe
from distill.trainer.triggers import TriggerPolicy
from stream.archive import SegmentArchive


def group(i: int, completed_at: str | None = None) -> TeacherGroup:
    return TeacherGroup(
        sample_id=f"s{i}", prompt=f"case {i}", status="complete",
        answers=[TeacherAnswer("a", f"e{i}a", f"out {i}", "yes"),
                 TeacherAnswer("b", f"e{i}b", f"other {i}", "no")],
        consensus=Consensus("yes", 1, True),
        drift={"a": DriftState(0.0, False), "b": DriftState(1.0, True, ["answer"])},
        completed_at=completed_at)


def ids(groups: list[TeacherGroup]) -> list[str]:
    return [g.sample_id for g in groups]


def test_insert_is_idempotent_by_sample_id(tmp_path: Path) -> None:
    with GroupBuffer(tmp_path / "b.sqlite") as buf:
        assert buf.add([group(i) for i in range(10)]) == 10
        assert buf.add([group(i) for i in range(5, 15)]) == 5
        c = buf.counts()
        assert c.train + c.probe == 15
        assert [g.sample_id for _, g in buf.new_since(0)] == [
            f"s{i}" for i in range(15) if not is_probe(f"s{i}", buf.probe_fraction)]


def test_groups_survive_reopen_with_their_content(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with GroupBuffer(path, probe_fraction=0.0) as buf:
        buf.add([group(1)])
    with GroupBuffer(path) as buf:
        [(seq, g)] = buf.new_since(0)
        assert seq == 1 and g == group(1)


def test_buffer_evicts_the_oldest_when_full(tmp_path: Path) -> None:
    with GroupBuffer(tmp_path / "b.sqlite", max_groups=20, probe_fraction=0.0) as buf:
        for start in range(0, 50, 10):
            buf.add([group(i) for i in range(start, start + 10)])
        assert buf.counts().train == 20
        assert buf.counts().evicted == 30
        assert ids([g for _, g in buf.new_since(0)]) == [f"s{i}" for i in range(30, 50)]


def test_probe_split_is_deterministic_and_probe_groups_are_never_selected(
        tmp_path: Path) -> None:
    groups = [group(i) for i in range(400)]
    with GroupBuffer(tmp_path / "a.sqlite", probe_fraction=0.25) as a, \
            GroupBuffer(tmp_path / "b.sqlite", probe_fraction=0.25) as b:
        a.add(groups)
        b.add(reversed(groups))
        probe_a, probe_b = set(ids(a.probe(1000))), set(ids(b.probe(1000)))
        assert probe_a == probe_b == {g.sample_id for g in groups if is_probe(g.sample_id, .25)}
        assert 60 < len(probe_a) < 140
        sel = a.select(watermark=0, max_new=1000, replay_fraction=1.0, seed=3)
        trained = set(ids(sel.groups))
        assert trained and not trained & probe_a
        assert not set(ids(a.replay(10_000, 1000, seed=1))) & probe_a


def test_probe_fraction_is_fixed_when_the_buffer_is_created(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with GroupBuffer(path, probe_fraction=0.2) as buf:
        buf.add([group(i) for i in range(100)])
        before = set(ids(buf.probe(1000)))
    with GroupBuffer(path, probe_fraction=0.0) as buf:
        assert buf.probe_fraction == 0.2
        assert set(ids(buf.probe(1000))) == before


def test_select_takes_new_groups_after_the_watermark_plus_seeded_replay(
        tmp_path: Path) -> None:
    with GroupBuffer(tmp_path / "b.sqlite", probe_fraction=0.0) as buf:
        buf.add([group(i) for i in range(30)])
        sel = buf.select(watermark=20, max_new=100, replay_fraction=0.5, seed=7)
        assert ids(sel.new) == [f"s{i}" for i in range(20, 30)]
        assert len(sel.replay) == 5
        assert all(int(g.sample_id[1:]) < 20 for g in sel.replay)
        assert sel.upto_seq == 30
        again = buf.select(watermark=20, max_new=100, replay_fraction=0.5, seed=7)
        assert ids(again.replay) == ids(sel.replay)


def test_select_caps_new_groups_and_moves_the_watermark_only_over_them(
        tmp_path: Path) -> None:
    with GroupBuffer(tmp_path / "b.sqlite", probe_fraction=0.0) as buf:
        buf.add([group(i) for i in range(30)])
        first = buf.select(watermark=0, max_new=12, replay_fraction=0.0, seed=0)
        assert first.upto_seq == 12 and len(first.new) == 12
        second = buf.select(watermark=first.upto_seq, max_new=12, replay_fraction=0.0, seed=0)
        assert ids(second.new)[0] == "s12"
        assert buf.count_new(first.upto_seq) == 18


def test_since_selects_by_completion_time_whatever_the_watermark(tmp_path: Path) -> None:
    with GroupBuffer(tmp_path / "b.sqlite", probe_fraction=0.0) as buf:
        buf.add([group(i, f"2026-01-0{1 + i % 3}T00:00:00Z") for i in range(9)])
        from distill.trainer.buffer import parse_time

        sel = buf.select(watermark=9, max_new=100, replay_fraction=0.0, seed=0,
                         since_ts=parse_time("2026-01-03T00:00:00Z"))
        assert ids(sel.new) == ["s2", "s5", "s8"]


def test_import_archive_reads_compressed_and_open_segments_once(tmp_path: Path) -> None:
    archive_dir = tmp_path / "archive"
    arch = SegmentArchive(archive_dir, "teacher-groups-0", segment_records=5)
    for i in range(8):
        arch.append(group(i).to_json())
    arch.checkpoint_position()  # first segment compressed, second one open
    arch.append(b"not a group")
    for i in range(8, 12):
        arch.append(group(i).to_json())
    arch.sync()
    names = sorted(p.name for p in archive_dir.iterdir())
    assert any(n.endswith(".jsonl.gz") for n in names)
    with GroupBuffer(tmp_path / "b.sqlite") as buf:
        assert buf.import_archive(archive_dir) == 12
        assert buf.import_archive(archive_dir) == 0
        c = buf.counts()
        assert c.train + c.probe == 12


def test_import_archive_tolerates_a_truncated_segment(tmp_path: Path) -> None:
    import gzip

    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    data = gzip.compress(b"".join(group(i).to_json() + b"\n" for i in range(20)))
    (archive_dir / "g-0-00000000.jsonl.gz").write_bytes(data[: len(data) // 2])
    with GroupBuffer(tmp_path / "b.sqlite") as buf:
        added = buf.import_archive(archive_dir)
        assert 0 <= added < 20


@pytest.mark.parametrize(("new", "idle", "alert", "expected"), [
    (9, 0.0, False, None),
    (10, 0.0, False, "count"),
    (1, 0.0, True, "alert"),
    (0, 999.0, True, None),
    (1, 60.0, False, "interval"),
    (10, 60.0, True, "count"),
])
def test_trigger_policy_fires_on_count_alert_and_interval(
        new: int, idle: float, alert: bool, expected: str | None) -> None:
    policy = TriggerPolicy(every_groups=10, every_s=60.0, on_alert=True, min_groups=1)
    assert policy.due(new, idle, alert) == expected


def test_trigger_policy_ignores_alerts_when_disabled() -> None:
    assert TriggerPolicy(10, 60.0, on_alert=False).due(3, 1.0, True) is None


def test_small_and_truncated_groups_never_reach_training_or_the_probe() -> None:
    from dataclasses import replace

    from distill.groups import fit_record

    alone = [replace(group(i), answers=group(i).answers[:1]) for i in range(200)]
    big = replace(group(999), answers=[replace(a, output="x" * 5000)
                                       for a in group(999).answers])
    cut = TeacherGroup.from_json(fit_record(big, big.to_json(), 4000))
    assert cut.truncated
    buf = GroupBuffer(":memory:", probe_fraction=0.5)
    assert buf.add([*alone, cut, group(1)]) == 1
    c = buf.counts()
    assert c.train + c.probe == 1
    assert buf.probe(100) + [g for _, g in buf.new_since(0)] == [group(1)]
