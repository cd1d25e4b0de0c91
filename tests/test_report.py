"""distill report: PNG figures and one self-contained HTML page, from a replay state dir,
a trainer registry and a benchmark JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from distill.cli import main
from distill.monitor.replay import Replay, open_source, prepare_state_dir
from distill.report import make_report
from stream.simulator import (
    change_points,
    changepoints_path,
    generate,
    load_scenario,
    write_changepoints,
    write_jsonl_gz,
)

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    scenario = load_scenario("default").with_samples(1100)
    sim = folder / "sim.jsonl.gz"
    write_jsonl_gz(generate(scenario, seed=1), sim)
    write_changepoints(change_points(scenario), changepoints_path(sim))
    state = folder / "state"
    prepare_state_dir(state)
    Replay(state, snapshot_every=350).run(open_source(sim))
    registry = state / "trainer" / "registry" / "registry.json"
    registry.parent.mkdir(parents=True)
    registry.write_text(json.dumps({"versions": {
        f"v000{i}": {"status": "promoted", "metrics": {
            "loss": 1.0 / i, "reward_margin": 0.1 * i, "eval_accuracy": 0.5 + 0.05 * i,
            "eval_agreement": 0.6 + 0.04 * i}} for i in range(1, 5)}}))
    return state


def bench_result() -> dict:
    findings = ["consolidation", "pleural_effusion", "pneumonia", "pneumothorax", "edema"]

    def row(x: float) -> dict[str, float]:
        return {**dict.fromkeys(findings, x), "mean": x}

    methods = ("bootstrap", "sft_majority", "dpo", "apo_uniform", "apo_drift")
    return {
        "benchmark": "distill", "scenario": "default", "seed": 0, "findings": findings,
        "teachers": {"gpt-5": row(0.75), "sonnet-4": row(0.45)},
        "majority_vote": row(0.8),
        "methods": {m: row(0.6 + 0.05 * i) for i, m in enumerate(methods)},
        "history": {"bootstrap": {"loss": [3.0, 1.0, 0.5]},
                    "apo_drift": {"loss/preference": [0.7, 0.5],
                                  "rewards/margins": [0.0, 0.2]}},
        "alerts": [{"teacher": "gpt-5", "signal": "agreement", "index": 650}],
        "change_points": [{"teacher": "gpt-5", "kind": "accuracy",
                           "event_index_of_teacher": 600}],
        "targets": {"met": {"beats_best_teacher_by_0.03": True}},
    }


def test_state_dir_report_draws_signals_alerts_and_rounds(state_dir: Path,
                                                          tmp_path: Path) -> None:
    made = make_report(tmp_path, state_dir=state_dir)
    names = [Path(p).name for p in made["figures"]]
    assert names == ["signals.png", "alerts.png", "rounds.png"]
    for p in made["figures"]:
        assert Path(p).read_bytes().startswith(PNG) and Path(p).stat().st_size > 10_000
    page = Path(made["html"]).read_text()
    assert page.count("src='data:image/png;base64,") == 3 and "<script" not in page


def test_bench_json_report_draws_the_table_and_curves(tmp_path: Path) -> None:
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(bench_result()))
    res = CliRunner().invoke(main, ["report", "--bench-json", str(bench),
                                    "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "accuracy.png", "alerts.png", "index.html", "training.png"]


def test_report_needs_an_input(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["report", "--out", str(tmp_path)])
    assert res.exit_code == 2
