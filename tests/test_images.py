"""Images by reference: form checks, confinement to the roots, carried into groups and the
archive, dead-lettered by serve when outside the roots, hash-checked when read."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from serving import Topics, produce_events, read_topic, run_in_thread

from distill.groups import TeacherGroup
from distill.monitor.pipeline import MonitorPipeline, PipelineConfig
from stream.archive import read_archive
from stream.deadletter import header_dict
from stream.events import REJECTION_REASONS, Invalid, TeacherEvent, decode_event
from stream.images import (
    ImageRef,
    ImageUnavailable,
    confine,
    image_ref,
    read_image_bytes,
)
from stream.kafka import KafkaSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SHA = "0" * 64


def raw_event(**extra: object) -> bytes:
    return orjson.dumps({"event_id": "e1", "sample_id": "s1", "teacher": "a",
                         "output": "Final answer: yes", "produced_at": "2026-01-01T00:00:00Z",
                         **extra})


def test_event_images_decode_and_round_trip() -> None:
    ev = decode_event(raw_event(images=[{"uri": "s1/prior.png", "sha256": "AB" * 32},
                                        {"uri": "s3://b/cxr/s1.png", "sha256": SHA}]))
    assert isinstance(ev, TeacherEvent)
    assert ev.images == (ImageRef("s1/prior.png", "ab" * 32), ImageRef("s3://b/cxr/s1.png", SHA))
    assert decode_event(ev.to_json_bytes()) == ev
    plain = decode_event(raw_event())
    assert isinstance(plain, TeacherEvent) and plain.images is None
    assert "images" not in plain.to_dict()


@pytest.mark.parametrize("images, detail", [
    ({"uri": "x.png", "sha256": SHA}, "expected a list"),
    ([{"uri": "x.png"}], "sha256"),
    ([{"uri": "x.png", "sha256": "abc"}], "sha256"),
    ([{"uri": "", "sha256": SHA}], "uri"),
    ([{"uri": "a/../../etc/passwd", "sha256": SHA}], "'..'"),
    ([{"uri": "file:///data/%2e%2e/etc/passwd", "sha256": SHA}], "'..'"),
    (["x.png"], "expected an object"),
    ([{"uri": f"{i}.png", "sha256": SHA} for i in range(9)], "limit"),
])
def test_bad_image_references_are_rejected_with_a_reason(images: object, detail: str) -> None:
    got = decode_event(raw_event(images=images))
    assert isinstance(got, Invalid) and got.reason == "bad_image" and detail in got.detail
    assert got.reason in REJECTION_REASONS


def test_confinement_to_roots() -> None:
    ref = ImageRef
    assert confine(ref("a/b.png", SHA), ["/data/cxr", "/other"]) == "/data/cxr/a/b.png"
    assert confine(ref("file:///data/cxr/b.png", SHA), ["/data/cxr"]) == "/data/cxr/b.png"
    assert confine(ref("/data/cxr/b.png", SHA), ["file:///data/cxr/"]) == "/data/cxr/b.png"
    assert confine(ref("s3://bucket/cxr/1.png", SHA), ["s3://bucket/cxr/"]) == \
        "s3://bucket/cxr/1.png"
    for uri in ("/data/cxr-other/b.png", "/etc/passwd", "s3://bucket/other/1.png",
                "gs://bucket/cxr/1.png", "http://host/data/cxr/1.png"):
        got = confine(ref(uri, SHA), ["/data/cxr", "s3://bucket/cxr"])
        assert isinstance(got, Invalid) and got.reason == "image_outside_roots", uri
    assert confine(ref("a.png", SHA), []).reason == "image_outside_roots"


def test_reading_checks_the_hash_and_the_roots(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    (root / "a.png").write_bytes(b"pixels")
    good = image_ref(root / "a.png", uri="a.png")
    assert good.sha256 == hashlib.sha256(b"pixels").hexdigest()
    assert read_image_bytes(good, [str(root)]) == b"pixels"
    (root / "a.png").write_bytes(b"changed")
    assert read_image_bytes(good, [str(root)]).reason == "image_hash_mismatch"
    assert read_image_bytes(ImageRef("gone.png", SHA), [str(root)]).reason == "image_missing"
    (tmp_path / "secret.png").write_bytes(b"x")
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    escaped = read_image_bytes(image_ref(root / "link.png", "link.png"), [str(root)])
    assert isinstance(escaped, ImageUnavailable) and escaped.reason == "image_outside_roots"


def _events(images: bool = True) -> list[TeacherEvent]:
    refs = (ImageRef("s1/prior.png", SHA), ImageRef("s1/current.png", "1" * 64))
    return [TeacherEvent(event_id=f"e-{t}", sample_id="s1", teacher=t, prompt="p",
                         output="Final answer: yes", produced_at=T0 + timedelta(seconds=i),
                         images=refs if images else None)
            for i, t in enumerate(("a", "b"))]


def test_pipeline_carries_images_into_the_group_and_its_checkpoint() -> None:
    pipeline = MonitorPipeline(PipelineConfig(expected_teachers=("a", "b", "c")))
    first, second = _events()
    pipeline.process(first)
    state = orjson.loads(orjson.dumps(pipeline.to_state()))  # the join state is JSON
    restored = MonitorPipeline(PipelineConfig(expected_teachers=("a", "b", "c")))
    restored.load_state(state)
    restored.process(second)
    (group,) = restored.flush().groups
    assert group.images == first.images
    assert TeacherGroup.from_json(group.to_json()) == group
    assert orjson.loads(group.to_json())["images"][0] == {"uri": "s1/prior.png", "sha256": SHA}
    (plain,) = MonitorPipeline().run(_events(images=False)).groups
    assert plain.images is None


@pytest.mark.broker
def test_serve_dead_letters_images_outside_the_roots(kafka_settings: KafkaSettings,
                                                     tmp_path: Path) -> None:
    topics = Topics.fresh()
    inside = _events()
    outside = TeacherEvent(event_id="e-x", sample_id="s2", teacher="a", output="x",
                           produced_at=T0 + timedelta(seconds=5),
                           images=(ImageRef("/etc/passwd", SHA),))
    produce_events(kafka_settings, topics.input, [*inside, outside])
    cfg = topics.config(kafka_settings.bootstrap_servers, tmp_path,
                        image_roots=[str(tmp_path / "images")], expected_teachers=["a", "b"])
    summary = run_in_thread(cfg)
    assert summary.records == 3 and summary.dead_lettered == 1
    (dead,) = read_topic(kafka_settings, topics.dlq, 1)
    assert header_dict(dead.headers)["dlq.reason"] == "image_outside_roots"
    archived = [TeacherGroup.from_json(line) for line in read_archive(tmp_path / "archive")]
    assert [g.images for g in archived] == [inside[0].images]


def test_simulator_multimodal_mode_puts_the_answer_in_the_images(tmp_path: Path) -> None:
    import io

    from PIL import Image

    from stream.simulator import FINDINGS, generate, load_scenario
    from stream.simulator.images import band_level, with_cue_rate

    scenario = with_cue_rate(load_scenario("default").with_samples(4), 0.0)
    events = list(generate(scenario, seed=1, images_dir=tmp_path / "a"))
    again = list(generate(scenario, seed=1, images_dir=tmp_path / "b"))
    assert [e.images for e in events] == [e.images for e in again]  # same seed, same bytes
    text_only = list(generate(scenario, seed=1))
    assert [e.output for e in events] == [e.output for e in text_only]  # teachers unchanged
    for ev in events[::7]:
        assert ev.images is not None and len(ev.images) == 2
        prior, current = (Image.open(io.BytesIO(read_image_bytes(r, [str(tmp_path / "a")])))
                          for r in ev.images)
        for f in FINDINGS:
            p, c = band_level(prior, f), band_level(current, f)
            shown = "stable" if p == c else "worsening" if c > p else "improving"
            assert shown == ev.ground_truth[f]
        assert "," not in ev.prompt.splitlines()[-1]  # cue_rate 0: no change named in words
    cued = list(generate(with_cue_rate(scenario, 1.0), seed=1, images_dir=tmp_path / "c"))
    assert cued[0].prompt.splitlines()[-1].count(",") == len(FINDINGS)
