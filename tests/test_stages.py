"""The ingest and detect stages without a broker: canonical order, restarts, the codec."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from distill.monitor.detect import DetectStage
from distill.monitor.observations import Watermark, decode, encode
from distill.monitor.pipeline import MonitorPipeline, PartitionedPipeline, PipelineConfig
from stream.events import TeacherEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TEACHERS = ("a", "b", "c")


def stream(samples: int = 900) -> list[TeacherEvent]:
    """Three teachers; "a" switches from answering to refusing at sample 500; answers
    arrive out of order within a sample and a little across samples."""
    events = []
    for i in range(samples):
        for k, t in enumerate(TEACHERS):
            refuses = t == "a" and i >= 500
            text = ("I cannot help with that request." if refuses
                    else f"Looking at case {i % 13}. Final answer: {'yes' if i % 3 else 'no'}")
            at = T0 + timedelta(seconds=60 * i + (20 - 7 * k) + (30 if i % 17 == 0 else 0))
            events.append(TeacherEvent(f"e{i}-{t}", f"s{i}", t, text, at))
    return events


def alerts(out) -> list[tuple[str, str, int]]:
    return [(a.teacher, a.signal, a.index) for a in out.alerts]


@pytest.fixture(scope="module")
def reference() -> list[tuple[str, str, int]]:
    got = alerts(MonitorPipeline(PipelineConfig(expected_teachers=TEACHERS)).run(stream()))
    assert got and got[0][0] == "a" and 500 <= got[0][2] < 600
    return got


@pytest.mark.parametrize("partitions", [2, 5])
def test_partitioned_stages_alert_like_one_pipeline(reference, partitions: int) -> None:
    pipe = PartitionedPipeline(PipelineConfig(expected_teachers=TEACHERS), partitions)
    assert alerts(pipe.run(stream())) == reference
    assert pipe.detect.counters.late == 0 and pipe.detect.buffered == 0


def test_input_order_within_the_lateness_does_not_change_alerts(reference) -> None:
    events = stream()
    for i in range(0, len(events) - 6, 6):  # swap neighbouring samples' answers
        events[i:i + 6] = events[i + 3:i + 6] + events[i:i + 3]
    got = MonitorPipeline(PipelineConfig(expected_teachers=TEACHERS)).run(events)
    assert alerts(got) == reference


def test_restored_detect_stage_drops_what_a_restarted_ingest_resends(reference) -> None:
    """Checkpoint both stages at different moments, replay the input after the ingest's
    checkpoint (as serve does after kill -9): the same alerts, none twice."""
    config = PipelineConfig(expected_teachers=TEACHERS)
    events = stream()
    pipe = MonitorPipeline(config)
    got = []
    for e in events[:1200]:
        got += alerts(pipe.process(e))
    ingest_state = json.loads(json.dumps(pipe.to_state()))["ingest"]
    offset = pipe.offset
    for e in events[1200:1700]:  # processed by both stages, then the ingest "crashes"
        got += alerts(pipe.process(e))
    detect_state = json.loads(json.dumps(pipe.detect.to_state()))

    restored = MonitorPipeline(config)
    restored.ingest.load_state(ingest_state)
    restored.offset = offset
    restored.detect.load_state(detect_state)
    for e in events[1200:]:
        got += alerts(restored.process(e))
    got += alerts(restored.flush())
    assert got == reference
    assert restored.detect.counters.duplicates > 0


def test_detect_stage_waits_for_every_source() -> None:
    from distill.monitor.observations import EVENT, Observation

    stage = DetectStage(sources=1)
    stage.add(Observation("a", 5.0, "s", EVENT, "e1", {"refusal": 0}, source=0, offset=0))
    stage.watermark(Watermark(0, 2, 10.0))  # source 0 of 2: source 1 has said nothing
    assert stage.release() == [] and stage.buffered == 1
    stage.watermark(Watermark(1, 2, 6.0))
    stage.release()
    assert stage.buffered == 0 and stage.events["a"] == 1


def test_codec_round_trips_and_names_bad_input() -> None:
    mark = Watermark(3, 8, 1.5)
    assert decode(encode(mark)) == mark
    with pytest.raises(ValueError, match="not an observation"):
        decode(b'{"k": "o"}')
