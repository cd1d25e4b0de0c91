"""The joint MMD test: false-alarm budget on real no-drift streams, no blind spot after an
alarm, exact state, and the bank's joint mode (live signals, peer-relative signals)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from detectors import BankConfig, DetectorBank, KLWindow, MMDWindow
from detectors.bank import joint_vector
from stream.datapack import read_pack, record_to_event
from stream.signals import event_signals, peer_signals

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
PACK = REAL / "zeroeval_gsm8k.jsonl.gz"
SMALL = {"window_size": 30, "reference_size": 60, "test_every": 5, "min_size": 15}
BUDGET = 100.0  # per 10k updates: large, so that a few thousand updates can check it


def _single_version_segments(versions: int, seed: int = 0) -> list[list[dict]]:
    """Per version of the pack, its outputs' signals in a shuffled order: no drift."""
    by_version: dict[str, list[dict]] = {}
    for record in read_pack(PACK):
        by_version.setdefault(record["teacher_version"], []).append(record)
    rng = random.Random(seed)
    chosen = rng.sample(sorted(by_version), versions)
    segments = []
    for version in chosen:
        records = by_version[version]
        rng.shuffle(records)
        segments.append([event_signals(record_to_event(r)) for r in records])
    return segments


@pytest.mark.skipif(not PACK.exists(), reason="real data pack not present")
def test_false_alarms_on_real_no_drift_streams_stay_within_twice_the_budget() -> None:
    """Shuffled single-version segments of a real pack (three versions, ~4k outputs):
    each detector's false alarms stay within 2x its budget (expected at most 1x)."""
    segments = _single_version_segments(3)
    config = BankConfig()
    blocks = [d for _, d in config.blocks("own")]
    counts = {"mmd own": 0, "mmd peer": 0, "kl_window vocab": 0}
    events = 0
    for signals in segments:
        own = MMDWindow(dim=sum(blocks), blocks=blocks, false_alarms_per_10k=BUDGET, **SMALL)
        peer = MMDWindow(dim=2, blocks=[1, 1], false_alarms_per_10k=BUDGET, **SMALL)
        kl = KLWindow(bins=64, window_size=30, reference_size=60, test_every=5,
                      false_alarms_per_10k=BUDGET)
        rng = np.random.default_rng(len(signals))
        median = np.log1p([s["length"] for s in signals])
        for i, s in enumerate(signals):
            counts["mmd own"] += own.update(joint_vector(config, "own", s)).drift_detected
            rel = float(np.log1p(s["length"]) - rng.choice(median))  # a random peer's length
            counts["mmd peer"] += peer.update((rel, float(i % 3 == 0))).drift_detected
            counts["kl_window vocab"] += kl.update(s["vocab"]).drift_detected
        events += len(signals)
    allowed = 2 * BUDGET * events / 10_000
    assert all(n <= allowed for n in counts.values()), (counts, allowed, events)


def _length_bank_run(levels: list[tuple[int, int]], seed: int = 0) -> list[int]:
    """Alarm indices of a default bank fed only lengths: (events, mean words) segments."""
    rng = random.Random(seed)
    bank = DetectorBank()
    alarms = []
    for n, mean in levels:
        for _ in range(n):
            alarms += bank.update("t", {"length": max(1, int(rng.gauss(mean, mean / 5))),
                                        "refusal": int(rng.random() < 0.1)})
    return [a.index for a in alarms]


def test_a_second_switch_100_events_after_the_first_is_caught() -> None:
    alarms = _length_bank_run([(400, 100), (100, 160), (300, 260)])
    assert len(alarms) == 2, alarms
    first, second = alarms
    assert 400 <= first < 500 and 500 <= second < 600


def test_restored_detector_gives_identical_future_detections() -> None:
    rng = random.Random(5)
    xs = [(rng.gauss(0, 1), rng.gauss(2 if i > 150 else 0, 1)) for i in range(400)]
    live = MMDWindow(dim=2, **SMALL)
    for x in xs[:120]:
        live.update(x)
    restored = MMDWindow.from_state(json.loads(json.dumps(live.to_state())))
    ahead = [(live.update(x).drift_detected, restored.update(x).drift_detected) for x in xs[120:]]
    assert all(a == b for a, b in ahead) and any(a for a, _ in ahead)


def test_bad_vector_and_parameters_are_errors_naming_them() -> None:
    with pytest.raises(ValueError, match="blocks"):
        MMDWindow(dim=3, blocks=[1, 1])
    with pytest.raises(ValueError, match="vector of 2"):
        MMDWindow(dim=2).update([1.0])


def test_answer_signals_are_off_for_a_teacher_without_answers() -> None:
    bank = DetectorBank()
    for i in range(50):
        bank.update("chat", {"length": 100 + i, "answer": None, "refusal": 0})
        bank.update("math", {"length": 100 + i, "answer": str(i % 4), "refusal": 0})
    assert "answer" not in bank.live_signals("chat")
    assert "agreement" not in bank.live_signals("chat")
    assert {"answer", "agreement", "length", "rel_length"} <= set(bank.live_signals("math"))
    summary = bank.summary()
    assert "answer" not in summary["chat"]["own"]["live"]
    assert "answer" in summary["math"]["own"]["live"]


def test_peer_signals_cancel_what_all_teachers_share() -> None:
    rows = peer_signals({"a": 99, "b": 99, "d": 99, "c": 999})
    assert rows["a"]["rel_length"] == pytest.approx(0.0)
    assert rows["c"]["rel_length"] == pytest.approx(np.log(1000 / 100))
    longer = peer_signals({"a": 999, "b": 999, "d": 999, "c": 9999})  # every teacher 10x longer
    assert longer["c"]["rel_length"] == pytest.approx(rows["c"]["rel_length"], abs=1e-3)
    assert peer_signals({"solo": 10})["solo"]["rel_length"] is None
    emb = peer_signals({"a": 1, "b": 1}, {"a": [1.0, 0.0], "b": [0.0, 1.0]})
    assert emb["a"]["peer_distance"] == pytest.approx(1.0)
