"""`distill bench distill --multimodal`: the images reach the student, per finding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("PIL")

pytestmark = pytest.mark.train


def test_each_training_group_sees_its_findings_band_of_both_studies(tmp_path: Path) -> None:
    from distill.apo.vision import load_group_images
    from distill.experiments.bench_distill import monitor_groups, split
    from distill.experiments.bench_multimodal import _pair, _with_images
    from stream.simulator import load_scenario
    from stream.simulator.images import BAND_HEIGHT, LEVELS, STUDY_WIDTH, with_cue_rate

    scenario = with_cue_rate(load_scenario("default").with_samples(6), 0.0)
    groups, _ = monitor_groups(scenario, 2, images_dir=tmp_path / "img")
    _, train = split(groups, 5)
    train = _with_images(train, groups)
    truth = {g.sample_id: g.ground_truth for g in groups}
    (tmp_path / "img" / f"{groups[1].sample_id}-prior.png").write_bytes(b"tampered")
    loaded, failed = load_group_images(train, [str(tmp_path / "img")], _pair)
    assert failed == {"image_hash_mismatch": 5}  # the five findings of the tampered case
    assert len(loaded) == len(train) - 5
    for group, (image,) in loaded:
        assert image.size == (2 * STUDY_WIDTH, BAND_HEIGHT)
        case, finding = group.sample_id.rsplit("/", 1)
        left = image.crop((0, 0, STUDY_WIDTH, BAND_HEIGHT)).convert("L").tobytes()
        right = image.crop((STUDY_WIDTH, 0, 2 * STUDY_WIDTH, BAND_HEIGHT)).convert("L").tobytes()
        p, c = (min(range(4), key=lambda i, b=b: abs(LEVELS[i] - sum(b) / len(b)))
                for b in (left, right))
        assert ("stable" if p == c else "worsening" if c > p else "improving") == \
            truth[case][finding]
        assert group.ground_truth is None  # training groups never carry the truth


@pytest.mark.slow
def test_tiny_multimodal_benchmark_runs_through_the_cli(tmp_path: Path) -> None:
    from distill.cli import main
    from distill.experiments.bench_distill import METHODS

    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench", "distill", "--multimodal", "--samples", "50",
                                    "--bootstrap-steps", "4", "--stage2-steps", "2",
                                    "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "Text-only student" in res.output and "VLM - text-only" in res.output
    result = json.loads(out.read_text())
    assert result["multimodal"] and result["image_failures"] == {}
    assert set(result["methods"]) == set(METHODS)
    assert set(result["text_only"]) == {"bootstrap", "apo_drift"}
    assert result["cases"]["eval"] == 10 and result["cases"]["train_groups"] == 200
    assert len(result["history"]["apo_drift"]["rewards/margins"]) == 2
