"""The detection benchmark counts everything: chains on any version field, unbuildable
chains fail unless skipped, skipped switches count as misses, the oracle column."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from detectors import BankConfig
from distill.experiments.detection import ChainUnbuildable, run_benchmark
from stream.datapack import build_drift_stream, version_field

STRATEGIES = {"zhou": 40, "kojima": 8, "none": 20}  # prompt strategy -> words per output


def _records() -> list[dict]:
    return [{"source": "fixture", "task": "qa", "sample_id": f"qa:{i}", "prompt": f"q{i}",
             "teacher": "gpt", "teacher_version": "gpt-1",
             "output_text": " ".join(["step"] * words) + f" Final answer: {i % 4}",
             "answer": str(i % 4), "ground_truth": "0", "correct": None,
             "extra": {"prompt_strategy": strategy}}
            for strategy, words in STRATEGIES.items() for i in range(120)]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    with gzip.open(tmp_path / "pack.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in _records())
    return tmp_path


def _chains(path: Path, *chains: list[str]) -> Path:
    out = path / "chains.json"
    out.write_text(json.dumps([{"file": "pack.jsonl.gz", "task": "qa", "chain": c}
                               for c in chains]))
    return out


def test_a_chain_may_name_prompting_strategies() -> None:
    entry = {"chain": ["zhou", "kojima"], "task": "qa"}
    assert version_field(_records(), entry) == "extra.prompt_strategy"
    stream = build_drift_stream(_records(), entry, seed=0)
    assert stream.peers == ["none"] and stream.change_points == [60]
    watched = stream.watched_events()
    assert len(watched[0].output.split()) == 43 and len(watched[-1].output.split()) == 11


def test_an_unbuildable_chain_fails_the_run_unless_skips_are_allowed(data: Path) -> None:
    chains = _chains(data, ["zhou", "kojima"], ["zhou", "missing-strategy"])
    config = BankConfig(mmd_window=20, mmd_reference=20, mmd_min_size=10)
    with pytest.raises(ChainUnbuildable, match="missing-strategy"):
        run_benchmark(data, chains, config, baselines=False)
    result = run_benchmark(data, chains, config, baselines=False, allow_skip=True)
    bank = result["aggregate"]["bank"]
    assert bank["changes"] == 2 and bank["detected"] == 1  # the skipped switch is a miss
    assert result["oracle"]["changes"] == 2 and result["oracle"]["detected"] == 1
    assert result["skipped"][0]["changes"] == 1
