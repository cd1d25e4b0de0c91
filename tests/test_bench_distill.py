"""bench distill at a very small configuration: the whole pipeline (monitor, split, five
students from one tiny model, scoring, table, targets) end to end, on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from distill.experiments.bench_distill import METHODS, monitor_groups, split, table_rows
from distill.experiments.mscxr import finding_groups, label_text
from stream.simulator import FINDINGS, load_scenario

pytestmark = pytest.mark.train


def test_training_groups_never_carry_ground_truth() -> None:
    groups, _ = monitor_groups(load_scenario("default").with_samples(30), seed=2)
    held, train = split(groups, eval_every=5)
    held_ids = {g.sample_id for g in held}
    assert len(held) == 6 and len(train) == 24 * len(FINDINGS)
    assert all(g.ground_truth is None for g in train)
    assert not {g.sample_id.split("/")[0] for g in train} & held_ids
    assert all(g.ground_truth for g in held)
    # The positive is the finding's majority label, read from the teachers' text only.
    g = finding_groups(groups[1])[0]
    votes = [a.answer for a in g.answers if a.answer]
    assert g.consensus.answer == max(sorted(set(votes), key=["improving", "stable",
                                                             "worsening"].index),
                                     key=votes.count)
    assert {a.output for a in g.answers if a.answer} <= {label_text(x) for x in votes}


def test_tiny_benchmark_runs_end_to_end_through_the_cli(tmp_path: Path) -> None:
    from distill.cli import main

    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench", "distill", "--samples", "50", "--seed", "3",
                                    "--bootstrap-steps", "8", "--stage2-steps", "2",
                                    "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "target +0.03" in res.output
    result = json.loads(out.read_text())
    assert result["scenario"] == "default" and result["seed"] == 3
    assert set(result["methods"]) == set(METHODS) == set(result["methods_sampled"])
    assert len(result["teachers"]) == 7
    for _, row in table_rows(result):
        assert set(row) == {*FINDINGS, "mean"}
        assert all(0.0 <= v <= 1.0 for v in row.values())
    assert result["cases"]["eval"] == 10 and result["cases"]["train"] == 40
    loss = result["history"]["bootstrap"]["loss"]
    assert loss[0] > loss[-1]
    assert len(result["history"]["apo_drift"]["rewards/margins"]) == 2
    assert set(result["targets"]["met"]) == {"beats_best_teacher_by_0.03",
                                             "beats_bootstrap_by_0.10",
                                             "drift_at_least_uniform"}
