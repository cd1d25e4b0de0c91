"""bench consensus: majority vs drift-aware vote vs best teacher, on a pack-format fixture."""

from __future__ import annotations

import gzip
import json
import random
from collections import defaultdict
from pathlib import Path

from click.testing import CliRunner

from distill.cli import main
from distill.consensus import majority
from distill.experiments.bench_consensus import (
    _bounds,
    answer_matches,
    chance_classes,
    gold_tasks,
    hindsight_vote,
    run,
    run_simulated,
    score_groups,
)
from distill.groups import DriftState, TeacherAnswer, TeacherGroup
from stream.datapack import build_drift_stream, load_chains, read_pack

N = 240
ACCURACY = {"m-v1": 0.95, "m-v2": 0.2, "p1": 0.8, "p2": 0.7, "p3": 0.65}


def write_fixture(folder: Path) -> Path:
    """A pack with one ground-truth task (prime), one task without (opinion), and chains."""
    rng = random.Random(5)
    records = []
    for i in range(N):
        truth = "yes" if i % 2 else "no"
        for version, acc in ACCURACY.items():
            right = rng.random() < acc
            answer = truth if right else ("no" if truth == "yes" else "yes")
            # The new version also writes differently, as real switches do.
            text = (f"Let me think about {i}. " * (6 if version == "m-v2" else 1)
                    + f"[{answer.capitalize()}]")
            records.append({"source": "fx", "task": "prime", "sample_id": f"prime:{i}",
                            "prompt": f"Is {i} prime?", "teacher": version.split("-")[0],
                            "teacher_version": version, "output_text": text,
                            "answer": answer, "ground_truth": truth, "correct": right,
                            "extra": {}})
            records.append({"source": "fx", "task": "opinion", "sample_id": f"op:{i}",
                            "prompt": "?", "teacher": version.split("-")[0],
                            "teacher_version": version, "output_text": "A",
                            "answer": "A", "ground_truth": None, "correct": None,
                            "extra": {}})
    pack = folder / "fixture.jsonl.gz"
    with gzip.open(pack, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    chains = folder / "drift_chains.json"
    chains.write_text(json.dumps([
        {"file": pack.name, "task": "*", "kind": "version_update", "chain": ["m-v1", "m-v2"]},
        {"file": pack.name, "task": "opinion", "kind": "x", "chain": ["m-v1", "m-v2"]},
        {"file": "absent.jsonl.gz", "task": "prime", "kind": "x", "chain": ["a", "b"]}]))
    return chains


def test_answers_match_by_canonical_spelling_or_number() -> None:
    assert answer_matches("[Yes]".strip("[]"), "yes")
    assert answer_matches("18.00", "18") and answer_matches("$1,234", "1234")
    assert not answer_matches(None, "yes") and not answer_matches("A", "B")


def test_drift_aware_vote_overturns_a_majority_of_drifting_teachers() -> None:
    def group(drifting: set[str]) -> TeacherGroup:
        answers = {"a": "no", "b": "no", "c": "yes", "d": "yes", "e": "yes"}
        return TeacherGroup("s", "?", "complete",
                            [TeacherAnswer(t, t, x, x) for t, x in answers.items()],
                            majority(answers),
                            {t: DriftState(1.0 if t in drifting else 0.0, t in drifting)
                             for t in answers}, ground_truth="no")

    calm = score_groups([group(set())], scale=3.0)
    assert calm["majority"] == 0.0 and calm["drift_aware"] == 0.0
    drifting = score_groups([group({"c", "d"})], scale=3.0)  # yes: 1 + 2 * 0.25 < no: 2
    assert drifting["majority"] == 0.0 and drifting["drift_aware"] == 1.0
    assert drifting["teachers"] == {"a": 1.0, "b": 1.0, "c": 0.0, "d": 0.0, "e": 0.0}
    assert drifting["best_teacher"] == 1.0 and drifting["best_teacher_name"] == "a"


def test_every_task_with_gold_is_run_whatever_it_is_called() -> None:
    gold = {"prime": True, "opinion": False, "count_happy_numbers": True, "new_task": True}
    assert gold_tasks({"task": "*"}, gold) == ["count_happy_numbers", "new_task", "prime"]
    assert gold_tasks({"task": "opinion"}, gold) == []
    assert gold_tasks({"task": "new_task"}, gold) == ["new_task"]
    assert gold_tasks({"task": "gsm8k"}, gold) == []


def test_bench_scores_every_group_of_the_chain(tmp_path: Path) -> None:
    chains = write_fixture(tmp_path)
    result = run(tmp_path, chains, seed=1)
    [row] = result["rows"]
    assert row["task"] == "prime" and row["groups"] == N and row["watched"] == "m"
    assert [s["chain"] for s in result["skipped"]] == ["a->b"]
    # The plain majority, recomputed independently from the same stream.
    stream = build_drift_stream(read_pack(tmp_path / "fixture.jsonl.gz"),
                                {**load_chains(chains)[0], "task": "prime"}, seed=1)
    votes: dict[str, dict[str, str]] = defaultdict(dict)
    truth = {}
    for e in stream.events:
        votes[e.sample_id][e.teacher] = e.answer
        truth[e.sample_id] = e.ground_truth
    expected = sum(majority(v).answer == truth[s] for s, v in votes.items()) / N
    assert row["majority"] == expected
    assert row["best_teacher"] == max(row["teachers"].values())
    assert 0.0 <= row["drift_aware"] <= 1.0
    # The reliability consensus learns that m-v1 (0.95) outranks the peers and that m-v2
    # (0.2) does not: it beats the plain majority here; crowd-kit's DS row is present.
    assert row["reliability"] > row["majority"]
    assert 0.0 <= row["dawid_skene"] <= 1.0
    agg = result["aggregate"]
    assert agg["chains"] == 1 and agg["majority_mean"] == row["majority"]


def test_cli_writes_the_json(tmp_path: Path) -> None:
    chains = write_fixture(tmp_path)
    out = tmp_path / "consensus.json"
    res = CliRunner().invoke(main, ["bench", "consensus", "--data", str(tmp_path),
                                    "--chains", str(chains), "--json", str(out),
                                    "--sim-samples", "0"])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "consensus" and doc["rows"][0]["groups"] == N


def test_simulated_rows_have_every_rule_and_a_spread() -> None:
    sim = run_simulated(("confusion",), seeds=(0, 1), samples=60, with_dawid_skene=False)
    summary = sim["scenarios"]["confusion"]["summary"]
    assert set(summary) >= {"majority", "reliability", "reliability_no_forget",
                            "reliability_no_correlation", "best_teacher"}
    assert all(0.0 <= m <= 1.0 and sd >= 0.0 for m, sd in summary.values())


def test_hindsight_bounds_count_what_agreement_cannot_see() -> None:
    questions = [{"a": "x", "b": "y", "c": "y"},  # the best right, the others agree wrong
                 {"a": "x", "b": "x", "c": "z"},
                 {"a": "z", "b": "y", "c": "y"},  # nobody right
                 {"a": "x", "b": "y", "c": "x"}]  # the others tie: not counted
    bounds = _bounds(questions, ["x"] * 4, best="a")
    assert bounds["any_teacher_right"] == 0.75
    assert bounds["best_right_others_agree_wrong"] == 0.25
    # log-odds weights: two 0.6 teachers outvote a 0.9 one only when wrong answers are
    # spread over many classes (their agreement is then unlikely by chance)
    accuracy = {"a": 0.9, "b": 0.6, "c": 0.6}
    assert hindsight_vote(questions[:1], accuracy, classes=3.0) == ["x"]
    assert hindsight_vote(questions[:1], accuracy, classes=10.0) == ["y"]
    assert chance_classes([{"a": "x", "b": "y"}, {"a": "y", "b": "x"}]) == 2.0
