"""The data-pack reader and the drift-stream construction of issue 2, on a fixture pack."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from stream.datapack import (
    build_drift_stream,
    chain_filter,
    iter_pack_events,
    load_chains,
    record_to_event,
)

VERSIONS = {  # version -> (teacher line, samples it answers)
    "m-1": ("m", range(30)),
    "m-2": ("m", range(30)),
    "m-3": ("m", range(2, 30)),
    "p-a": ("p", range(30)),
    "p-b": ("p", range(30)),
    "q-x": ("q", range(30)),
    "q-y": ("q", range(30)),
    "r-z": ("r", range(30)),
    "short": ("s", range(10)),  # misses samples: never a peer
}


def _record(version: str, i: int, run: str = "main") -> dict:
    teacher, _ = VERSIONS[version]
    return {"source": "fixture", "task": "t1" if i % 2 else "t2", "sample_id": f"t:{i}",
            "prompt": f"question {i}", "teacher": teacher, "teacher_version": version,
            "family": "f", "output_text": f"{version} says {i}. Final answer: {i % 3}",
            "answer": str(i % 3), "ground_truth": "0", "correct": i % 3 == 0,
            "extra": {"run": run}}


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    path = tmp_path / "fixture.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for version, (_, samples) in VERSIONS.items():
            for i in samples:
                fh.write(json.dumps(_record(version, i)) + "\n")
                fh.write(json.dumps(_record(version, i, run="other")) + "\n")  # duplicate
    return path


def test_record_becomes_event_with_version_and_meta() -> None:
    ev = record_to_event(_record("m-1", 4), teacher="watched")
    got = (ev.teacher, ev.teacher_version, ev.sample_id, ev.answer)
    assert got == ("watched", "m-1", "t:4", "1")
    assert ev.meta == {"task": "t2", "source": "fixture", "correct": False}
    assert ev.output.startswith("m-1 says 4")


def test_iter_pack_events_reads_every_record(pack: Path) -> None:
    events = list(iter_pack_events(pack))
    assert len(events) == 2 * sum(len(s) for _, s in VERSIONS.values())
    assert Counter(e.teacher for e in events)["m"] == 2 * (30 + 30 + 28)


def test_two_version_chain_switches_at_the_segment_start(pack: Path) -> None:
    s = build_drift_stream(pack, {"task": "*", "chain": ["m-1", "m-2"]}, seed=0)
    watched = s.watched_events()
    assert s.watched == "m" and s.n_samples == 30 and s.change_points == [15]
    assert [e.teacher_version for e in watched] == ["m-1"] * 15 + ["m-2"] * 15
    assert len(s.peers) == 4 and set(s.peers) <= {"m-3", "p-a", "p-b", "q-x", "q-y", "r-z"}
    assert "m-3" not in s.peers  # does not answer every shared sample
    for p in s.peers:  # each peer answers every sample with its own version
        assert sum(e.teacher == p for e in s.events) == 30
        assert {e.teacher_version for e in s.events if e.teacher == p} == {p}
    # one group per sample, in the shuffled order, each group contiguous
    ids = [e.sample_id for e in s.events]
    assert [ids[k] for k in range(0, len(ids), 5)] == [e.sample_id for e in watched]


def test_three_version_chain_uses_shared_samples_only(pack: Path) -> None:
    s = build_drift_stream(pack, {"task": "*", "chain": ["m-1", "m-2", "m-3"]})
    assert s.n_samples == 28 and s.change_points == [9, 18]
    versions = [e.teacher_version for e in s.watched_events()]
    assert versions == ["m-1"] * 9 + ["m-2"] * 9 + ["m-3"] * 10
    assert {e.sample_id for e in s.watched_events()} == {f"t:{i}" for i in range(2, 30)}


def test_stream_is_deterministic_per_seed(pack: Path) -> None:
    entry = {"task": "*", "chain": ["m-1", "m-2"]}
    a = build_drift_stream(pack, entry, seed=0)
    b = build_drift_stream(pack, entry, seed=0)
    c = build_drift_stream(pack, entry, seed=1)
    assert [e.event_id for e in a.events] == [e.event_id for e in b.events]
    assert [e.sample_id for e in a.watched_events()] != [e.sample_id for e in c.watched_events()]


def test_task_filter_and_note_filter(pack: Path) -> None:
    s = build_drift_stream(pack, {"task": "t1", "chain": ["m-1", "m-2"],
                                  "note": "use extra.run == 'other'"})
    assert s.n_samples == 15
    assert all(int(e.sample_id.split(":")[1]) % 2 for e in s.events)
    assert chain_filter({"note": "x extra.run == 'medqa_first500'; y"}) == {"run": "medqa_first500"}
    assert chain_filter({"where": {"extra.run": "a"}, "note": "extra.run == 'b'"}) == {"run": "a"}


def test_missing_version_is_a_clear_error(pack: Path) -> None:
    with pytest.raises(ValueError, match="versions not in the pack: nope"):
        build_drift_stream(pack, {"task": "*", "chain": ["m-1", "nope"]})
    with pytest.raises(ValueError, match="at least 2"):
        build_drift_stream(pack, {"task": "*", "chain": ["m-1"]})


def test_load_chains_reads_a_list(tmp_path: Path) -> None:
    path = tmp_path / "chains.json"
    path.write_text(json.dumps([{"file": "f", "task": "*", "chain": ["a", "b"]}]))
    assert load_chains(path)[0]["chain"] == ["a", "b"]
    path.write_text("{}")
    with pytest.raises(ValueError):
        load_chains(path)


# -- the detection benchmark over pack streams ------------------------------------------


def _switch_pack(path: Path, n: int = 400) -> None:
    """`w-1` writes short answers, `w-2` long ones; two peers never change."""
    rnd = __import__("random").Random(0)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for i in range(n):
            for version, words in (("w-1", 20), ("w-2", 120), ("p-1", 40), ("p-2", 60)):
                text = " ".join(rnd.choice(["alpha", "beta", "gamma", "delta"])
                                for _ in range(rnd.randint(words // 2, words)))
                fh.write(json.dumps({
                    "task": "t", "sample_id": f"t:{i}", "teacher": version.split("-")[0],
                    "teacher_version": version, "output_text": f"{text}. Final answer: {i % 2}",
                    "answer": str(i % 2)}) + "\n")


def test_bench_detect_counts_skipped_switches_as_misses(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from distill.cli import main

    _switch_pack(tmp_path / "pack.jsonl.gz")
    chains = tmp_path / "chains.json"
    chains.write_text(json.dumps([
        {"file": "pack.jsonl.gz", "task": "t", "chain": ["w-1", "w-2"]},
        {"file": "absent.jsonl.gz", "task": "*", "chain": ["a", "b"]},
    ]))
    out = tmp_path / "detect.json"
    args = ["bench", "detect", "--data", str(tmp_path), "--chains", str(chains),
            "--json", str(out), "--embeddings", "off"]  # auto would distil MiniLM (minutes)
    refused = CliRunner().invoke(main, args)
    # rich folds a long path at the console width: read the output unfolded
    assert refused.exit_code != 0 and "absent.jsonl.gz" in refused.output.replace("\n", "")
    result = CliRunner().invoke(main, [*args, "--allow-skip"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert [r["method"] for r in doc["rows"]] == ["bank", "river_adwin_length",
                                                  "river_kswin_length"]
    bank = doc["rows"][0]
    assert bank["change_points"] == [200] and bank["watched"]["detected"] == 1
    assert bank["watched"]["delays"][0] <= 100 and bank["peers"]["false_alarms"] == 0
    assert doc["aggregate"]["bank"]["detection_rate"] == 0.5  # the skipped switch: a miss
    assert doc["skipped"][0]["reason"].startswith("file not found")
    assert "absent.jsonl.gz" in result.output.replace("\n", "")


def test_scoring_follows_cerqueira_definitions() -> None:
    from distill.experiments.detection import score_alarms

    s = score_alarms([50, 130, 140, 700, 1300], [100, 600, 1200], n_events=1500, delta_max=300)
    assert s.per_change == [30, 100, 100] and s.false_alarms == 2  # 50 (early) and 140
    late = score_alarms([450], [100, 600], n_events=1000, delta_max=300)
    assert late.per_change == [None, None] and late.false_alarms == 1
    assert score_alarms([5, 9], [], n_events=10, delta_max=300).false_alarms == 2
