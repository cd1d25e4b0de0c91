"""bench distill at a very small configuration: disjoint whole cases, the no-model baselines,
and the whole pipeline (monitor, split, five students from one tiny model, generated-answer
scoring, tables over seeds) end to end, on CPU."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from distill.experiments.bench_distill import (
    CONSENSUS_NAME,
    LOOKUP_NAME,
    MAJORITY_NAME,
    METHODS,
    aggregate,
    assert_disjoint,
    lookup_top1,
    monitor_groups,
    split_cases,
    table_rows,
)
from distill.experiments.mscxr import case_group, case_prompt, parse_labels
from stream.simulator import FINDINGS, load_scenario
from stream.simulator.images import with_cue_rate

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def groups() -> list:
    scenario = with_cue_rate(load_scenario("default").with_samples(60), 0.1)
    return monitor_groups(scenario, seed=2)[0]


def test_cases_are_disjoint_and_training_never_carries_ground_truth(groups: list) -> None:
    cases = split_cases(groups, eval_every=5)
    assert len(cases.test) == 12 and len(cases.probe) == 6
    assert len(cases.train) + cases.dropped == 60 - 18
    train_ids = {g.sample_id for g in cases.train}
    assert not train_ids & {g.sample_id for g in (*cases.test, *cases.probe)}
    assert not {g.prompt for g in cases.train} & {case_prompt(g.prompt) for g in cases.test}
    assert all(g.ground_truth is None for g in cases.train) and all(g.ground_truth
                                                                    for g in cases.test)
    # Whole cases, full trajectories: the instruction is gone, the reasoning stays.
    g = cases.train[0]
    assert g.prompt.startswith("Prior study") and "Compare" not in g.prompt
    assert all(len(a.output.splitlines()) > 2 for a in g.answers if a.answer)
    # The consensus is the monitor's (reliability-weighted, read from the teachers' text);
    # the ablation's is the per-finding majority of their final lines; they differ.
    monitor = {g.sample_id: g.consensus.labels for g in groups}
    assert all(c.consensus.labels == monitor[c.sample_id] for c in cases.train)
    by_majority = split_cases(groups, eval_every=5, positive="majority").train
    for c in by_majority:
        for f in FINDINGS:
            votes = [(parse_labels(a.output) or {}).get(f) for a in c.answers]
            top = max(votes.count(v) for v in set(votes) - {None})
            assert votes.count(c.consensus.labels[f]) == top
    assert sum(c.consensus.labels != monitor[c.sample_id] for c in by_majority) > 0
    # A split whose training holds a test prompt is refused.
    leaked = [*cases.train, replace(cases.test[0], sample_id="other-1",
                                    prompt=case_prompt(cases.test[0].prompt))]
    with pytest.raises(ValueError, match="split: 1 test case"):
        assert_disjoint(leaked, cases.test)


def test_lookup_baseline_finds_no_test_prompt_and_falls_back_to_the_prior(groups: list,
                                                                          ) -> None:
    cases = split_cases(groups, eval_every=5)
    truths = [g.ground_truth for g in cases.test]
    row, found = lookup_top1(cases.train, cases.test, truths)
    assert found == 0
    # Under the old per-finding layout it would have been a lookup; here it is the prior.
    prior_only, _ = lookup_top1([], cases.test, truths)
    assert row.keys() == prior_only.keys() and 0.0 <= row["mean"] <= 1.0
    # A training copy of a test case is found and answered from the teachers' votes.
    copy = cases.test[0]
    _, hits = lookup_top1([case_group(copy)], [copy], [copy.ground_truth])
    assert hits == 1


def test_tiny_benchmark_runs_end_to_end_through_the_cli(tmp_path: Path) -> None:
    from distill.cli import main

    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench", "distill", "--samples", "50", "--seed", "3",
                                    "--eval-every", "10", "--bootstrap-steps", "3",
                                    "--stage2-steps", "1", "--max-new-tokens", "16",
                                    "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "test prompts in training: 0" in res.output
    assert CONSENSUS_NAME in res.output
    # Not a terminal: each stage is one timestamped line on stderr, not a status spinner.
    assert "seed 3: bootstrap (+" in res.stderr and "seed 3: evaluation (+" in res.stderr
    result = json.loads(out.read_text())
    assert result["scenario"] == "default" and result["seed"] == 3 and result["cue_rate"] == 0.1
    assert result["positive"] == "consensus"
    assert dict(table_rows(result))[CONSENSUS_NAME] == result["consensus_vote"]
    assert set(result["methods"]) == set(METHODS) == set(result["methods_likelihood"])
    assert len(result["teachers"]) == 7
    assert result["cases"]["test"] == 5 and result["cases"]["test_prompts_in_training"] == 0
    for _, row in table_rows(result):
        assert set(row) == {*FINDINGS, "mean"}
        assert all(0.0 <= v <= 1.0 for v in row.values())
    assert LOOKUP_NAME in dict(table_rows(result))
    loss = result["history"]["bootstrap"]["loss"]
    assert loss[0] > loss[-1]
    assert len(result["history"]["apo_drift"]["rewards/margins"]) == 1
    # Over seeds: every row's mean and spread (a second run with shifted numbers).
    other = json.loads(json.dumps(result))
    other["seed"] = 4
    other["lookup"] = {k: min(1.0, v + 0.1) for k, v in result["lookup"].items()}
    rows = {r["row"]: r for r in aggregate([result, other])}
    assert rows["best teacher"]["seeds"] == [3, 4]
    lookup = rows[LOOKUP_NAME]["mean"]
    assert lookup["min"] == result["lookup"]["mean"] and lookup["sd"] > 0
    assert rows[MAJORITY_NAME]["mean"]["sd"] == 0.0


def test_finding_blocks_cut_each_teachers_line_for_the_finding(groups: list) -> None:
    from distill.experiments.bench_distill import training_groups
    from distill.experiments.mscxr import FindingBlocks, finding_prompts
    from stream.simulator.profiles import PROFILES

    cases = split_cases(groups, eval_every=5)
    blocks = FindingBlocks((a.teacher, a.output) for g in cases.train for a in g.answers)
    # Openers and closers are learned as boilerplate; a finding line never is.
    assert "That covers the five findings." in blocks.boilerplate
    outputs = [a.output for g in cases.train for a in g.answers]
    cut = [blocks.blocks(o) for o in outputs]
    assert sum(c is not None for c in cut) >= 0.9 * len(outputs)
    # The line cut for a finding names that finding, in some teacher's words.
    names = {f: {p.names[f].lower() for p in PROFILES.values()} for f in FINDINGS}
    for text, lines in zip(outputs, cut, strict=True):
        if lines is None:
            continue
        assert not set(lines) & blocks.boilerplate, text
        for f, line in zip(FINDINGS, lines, strict=True):
            assert any(n in line.lower() for n in names[f]), (f, line)
            assert not line.startswith("Final answer")
    # Per-finding groups: one finding's phrases in, its line and a one-finding final line
    # out; no gold, disjoint from the test cases, consensus = that finding's majority.
    per_finding = training_groups("finding", cases.train)
    assert len(per_finding) == 5 * len(cases.train)
    fg = per_finding[1]
    assert fg.prompt == finding_prompts(cases.train[0].prompt)["pleural_effusion"]
    assert fg.ground_truth is None
    for a in fg.answers:
        if a.answer is not None:
            head, last = a.output.rsplit("\n", 1)
            assert last == f"Final answer: pleural_effusion={a.answer}"
            assert "\n" not in head and "Final answer" not in head
    assert fg.consensus.answer == cases.train[0].consensus.labels["pleural_effusion"]
    assert not {g.sample_id.split("/")[0] for g in per_finding} & {
        g.sample_id for g in cases.test}


def test_finding_lookup_reads_the_teachers_plurality_for_the_same_phrases(groups: list,
                                                                          ) -> None:
    from distill.experiments.bench_distill import finding_lookup_top1

    cases = split_cases(groups, eval_every=5)
    truths = [g.ground_truth for g in cases.test]
    row = finding_lookup_top1(cases.train, cases.test, truths)
    assert set(row) == {*FINDINGS, "mean"}
    # A test case whose every finding the teachers answered unanimously in training is
    # answered with their label, right or wrong.
    case = cases.test[0]
    fake = replace(case_group(case))
    wrong = {f: next(lab for lab in ("improving", "stable", "worsening")
                     if lab != case.ground_truth[f]) for f in FINDINGS}
    fake = replace(fake, answers=[replace(a, labels=wrong) for a in fake.answers])
    assert finding_lookup_top1([fake], [case], [case.ground_truth])["mean"] == 0.0
    right = [replace(a, labels=dict(case.ground_truth)) for a in fake.answers]
    assert finding_lookup_top1([replace(fake, answers=right)], [case],
                               [case.ground_truth])["mean"] == 1.0


def test_finding_unit_runs_end_to_end_through_the_cli(tmp_path: Path) -> None:
    from distill.cli import main
    from distill.experiments.bench_distill import FINDING_LOOKUP_NAME

    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench", "distill", "--samples", "50", "--seed", "3",
                                    "--eval-every", "10", "--unit", "finding",
                                    "--alpha-nll", "1", "--bootstrap-steps", "3",
                                    "--stage2-steps", "1", "--positive", "majority",
                                    "--max-new-tokens", "12", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "asked per finding" in res.output
    result = json.loads(out.read_text())
    assert result["unit"] == "finding" and result["positive"] == "majority"
    assert result["cases"]["training_groups"] == 5 * result["cases"]["train"]
    assert FINDING_LOOKUP_NAME in dict(table_rows(result))
    # Each test case was asked five times: its sample holds five answers.
    assert result["samples"]["bootstrap"][0].count("\n\n") >= 4
    assert result["settings"]["train"]["num_layers"] == 4
    # --alpha-nll reaches the preference trainers (their NLL term is logged), not the SFTs.
    assert result["settings"]["train"]["alpha_nll"] == 1.0
    assert "nll" in result["history"]["apo_uniform"] and "nll" in result["history"]["dpo"]
