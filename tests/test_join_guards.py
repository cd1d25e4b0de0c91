"""A join that bad clocks and stray names cannot corrupt, and bounded state from unbounded names."""

from __future__ import annotations

import gc
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from serving import Topics, produce_events, read_topic

from distill.monitor.pipeline import MonitorPipeline, PipelineConfig
from distill.monitor.service import MonitorService, RunLimits
from stream.deadletter import header_dict
from stream.events import TeacherEvent
from stream.kafka import KafkaSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REAL = ("a", "b", "c")


def ev(sample: int, teacher: str, seconds: float, eid: str | None = None) -> TeacherEvent:
    return TeacherEvent(eid or f"{sample}-{teacher}-{seconds}", f"s{sample}", teacher,
                        "Reasoning. Final answer: yes", T0 + timedelta(seconds=seconds))


def stream(samples: range, offset_s: float = 0.0) -> list[TeacherEvent]:
    return [ev(i, t, offset_s + 10.0 * i) for i in samples for t in REAL]


def test_learned_set_is_fixed_and_stray_names_never_make_groups_wait() -> None:
    pipe = MonitorPipeline(PipelineConfig(group_timeout_s=100))
    out = pipe.run(stream(range(30)), flush=False)  # learned: a, b, c (span 100 s)
    for name in ("x", "y", "z"):  # three stray names after the learning span
        out.extend(pipe.process(ev(30, name, 300.0)))
    out.extend(pipe.run(stream(range(31, 60)), flush=False))
    assert pipe.joiner.expected_teachers() == frozenset(REAL)
    assert pipe.counters()["stray_answers"] == 3
    complete = [g for g in out.groups if g.status == "complete"]
    assert [g.sample_id for g in complete][-29:] == [f"s{i}" for i in range(31, 60)]
    assert all(len(g.answers) == 3 for g in complete)


def test_a_restarted_clock_is_late_and_makes_no_groups() -> None:
    pipe = MonitorPipeline(PipelineConfig(group_timeout_s=100))
    first = pipe.run(stream(range(100)), flush=False)
    watermark, groups = pipe.joiner.watermark, len(first.groups)
    second = [pipe.process(e) for e in stream(range(100, 200), offset_s=-5000.0)]
    assert all(o.rejected is not None and o.rejected.reason == "late" for o in second)
    assert not any(o.groups for o in second)
    assert pipe.joiner.watermark == watermark and groups == len(first.groups)
    assert pipe.counters()["rejected"] == {"late": 300}


def test_a_future_stamp_neither_moves_the_watermark_nor_makes_a_group() -> None:
    pipe = MonitorPipeline(PipelineConfig(group_timeout_s=100, max_clock_skew_s=60))
    now = (T0 + timedelta(hours=1)).timestamp()
    for e in stream(range(10)):
        assert pipe.process(e, now=now).rejected is None
    watermark, open_count = pipe.joiner.watermark, pipe.joiner.open_count
    out = pipe.process(ev(99, "a", 5 * 365 * 86400.0), now=now)  # five years ahead
    assert out.rejected is not None and out.rejected.reason == "future_timestamp"
    assert pipe.joiner.watermark == watermark and pipe.joiner.open_count == open_count
    assert pipe.process(ev(10, "a", 100.0), now=now).rejected is None  # the stream goes on


def _rss_bytes() -> int:
    gc.collect()
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_100k_teacher_names_keep_memory_and_checkpoint_flat() -> None:
    pipe = MonitorPipeline(PipelineConfig(group_timeout_s=100, max_teachers=16))
    pipe.run(stream(range(50)), flush=False)
    checkpoints, rss = [], []
    for batch in range(10):  # 10 x 10k new names, one event each
        for i in range(batch * 10_000, (batch + 1) * 10_000):
            pipe.process(ev(50 + i % 7, f"stray-{i}", 500.0, eid=f"n{i}"))
        checkpoints.append(len(orjson.dumps(pipe.to_state(), option=orjson.OPT_SERIALIZE_NUMPY)))
        rss.append(_rss_bytes())
    assert len(pipe.roster.names) == 16 and pipe.roster.overflow == 100_000 - 13
    assert len(pipe.bank.summary()) <= 16 and len(pipe.events) <= 16
    assert max(checkpoints) - min(checkpoints) < 1024, checkpoints  # flat, not growing
    assert rss[-1] - rss[0] < 32 << 20, rss  # unbounded names cost ~20 KB each before


@pytest.mark.broker
def test_serve_bounds_teacher_series_and_dead_letters_the_overflow(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    topics = Topics.fresh()
    names = 2000
    evs = stream(range(20)) + [ev(20 + i, f"t{i}", 200.0 + i / 100) for i in range(names)]
    produce_events(kafka_settings, topics.input, evs)
    cfg = topics.config(kafka_settings.bootstrap_servers, tmp_path, max_teachers=8)
    registry = CollectorRegistry()
    service = MonitorService(cfg, registry=registry, limits=RunLimits(max_records=len(evs)))
    service.run()
    page = generate_latest(registry).decode()
    labelled = {line.split('teacher="')[1].split('"')[0]
                for line in page.splitlines() if 'teacher="' in line}
    assert len(labelled) == 8
    dead = read_topic(kafka_settings, topics.dlq, names - 5)
    assert len(dead) == names - 5
    assert {header_dict(r.headers)["dlq.reason"] for r in dead} == {"teacher_overflow"}
    assert len(page) < 200_000
