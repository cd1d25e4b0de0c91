"""``distill bench distill``: the paper's MS-CXR-T table at small scale, on a simulated stream,
built so that it cannot be solved by looking answers up.

1. Simulate the scenario (seeded), with the change cue rare (``cue_rate``, default 0.1: the
   labels must be read from the severities the case describes), and run
   :class:`~distill.monitor.pipeline.MonitorPipeline` over the whole stream, as ``serve``
   would: every completed group carries each teacher's drift evidence at that moment.
2. Split by case (:func:`split_cases`): every ``eval_every``-th case is a test case (ground
   truth read only by the scorer), every ``2 * eval_every``-th case after it a probe case
   (ground-truth-free agreement with the teachers, what a promotion gate sees), the rest
   train. Prompts are whole cases (:func:`distill.experiments.mscxr.case_group`); a training
   case whose prompt text equals a test or probe prompt is dropped, and the split refuses
   to go on if any test prompt is still in training.
3. Train the students of :mod:`distill.experiments.students` from one tiny initial model on
   the teachers' full trajectories (reasoning and final line).
4. Score on the test cases: the teachers (their own answers, no answer = wrong), the
   teachers' per-case majority vote, a no-model lookup baseline (:func:`lookup_top1`) and
   the students: the answer they write (greedy decoding, read with the monitor's answer
   extractor) and, second, the label they find most likely after their own reasoning
   (:mod:`distill.experiments.scoring`).

The result is one JSON-able dict; :func:`table_rows` gives the paper-style rows and
:func:`aggregate` the mean and spread of every row over seeds.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distill.experiments.students import TrainSettings

METHODS = ("bootstrap", "sft_majority", "dpo", "apo_uniform", "apo_drift")
METHOD_NAMES = {"bootstrap": "SFT on all teachers (bootstrap only)",
                "sft_majority": "SFT on the consensus answers",
                "dpo": "Pairwise DPO (authors' script)",
                "apo_uniform": "APO, uniform negatives (paper)",
                "apo_drift": "APO, drift-weighted negatives (ours)"}
LOOKUP_NAME = "lookup: training plurality for the same prompt (no model)"
FINDING_LOOKUP_NAME = "lookup: training plurality for the same finding phrases (no model)"
MAJORITY_NAME = "majority vote of the teachers (test-time)"
CONSENSUS_NAME = "the monitor's consensus of the teachers (test-time)"
DEFAULT_CUE_RATE = 0.1
UNITS = ("case", "finding")
ANSWER_TOKENS = {"case": 320, "finding": 96}
"""Default tokens a student may write: a whole case's trajectory, or one finding's."""


@dataclass(frozen=True)
class BenchSettings:
    """One run. ``cue_rate``: share of findings whose change the case text names (None =
    the scenario's own); ``eval_every``: every N-th case is a test case, every 2N-th after
    it a probe case; ``max_new_tokens``: the students' answer budget when scored;
    ``unit``: what a student is asked, a whole case or one finding of it
    (:func:`training_groups`); ``positive``: what the positive states, the monitor's
    consensus or the plain majority (:func:`distill.experiments.mscxr.positive_labels`)."""

    scenario: str = "default"
    seed: int = 0
    samples: int | None = None  # None = the scenario's own count
    eval_every: int = 5
    cue_rate: float | None = DEFAULT_CUE_RATE
    max_new_tokens: int | None = None  # None = ANSWER_TOKENS of the unit
    torch_threads: int = 1  # tiny models are per-op overhead: extra threads only contend
    unit: str = "case"
    positive: str = "consensus"
    train: TrainSettings = field(default_factory=TrainSettings)

    def __post_init__(self) -> None:
        from distill.experiments.mscxr import POSITIVES

        if self.unit not in UNITS:
            raise ValueError(f"unit: {self.unit!r} is not one of {list(UNITS)}")
        if self.positive not in POSITIVES:
            raise ValueError(f"positive: {self.positive!r} is not one of {list(POSITIVES)}")

    @property
    def answer_tokens(self) -> int:
        return self.max_new_tokens or ANSWER_TOKENS[self.unit]


@dataclass(frozen=True)
class CaseSplit:
    """Disjoint cases: ``test`` and ``probe`` keep the monitor's groups (test ground truth
    for the scorer only), ``train`` are ground-truth-free case groups; ``dropped``: training
    cases left out because their prompt text equals a test or probe prompt."""

    train: list[Any]
    probe: list[Any]
    test: list[Any]
    dropped: int


def _index(sample_id: str) -> int:
    return int(sample_id.rsplit("-", 1)[-1])


def monitor_groups(scenario: Any, seed: int, images_dir: Path | None = None,
                   ) -> tuple[list[Any], list[dict[str, Any]]]:
    """Groups (with drift state) and alerts of the monitor over the simulated stream;
    ``images_dir``: the simulator's multimodal mode (images written there)."""
    from distill.monitor.pipeline import MonitorPipeline, PipelineConfig
    from stream.simulator import generate

    pipeline = MonitorPipeline(PipelineConfig(
        expected_teachers=tuple(t.name for t in scenario.teachers)))
    out = pipeline.run(generate(scenario, seed, images_dir))
    groups = sorted(out.groups, key=lambda g: _index(g.sample_id))
    return groups, [a.to_dict() for a in out.alerts]


def split(groups: list[Any], eval_every: int, positive: str = "consensus",
          ) -> tuple[list[Any], list[Any]]:
    """The per-finding split of the multimodal benchmark: held-out cases (every
    ``eval_every``-th sample, ground truth kept for scoring) and the training groups, five
    per remaining case, built without ground truth."""
    from distill.experiments.mscxr import finding_groups

    held = [g for g in groups if _index(g.sample_id) % eval_every == 0]
    train = [fg for g in groups if _index(g.sample_id) % eval_every != 0
             for fg in finding_groups(g, positive=positive)]
    return held, train


def split_cases(groups: Sequence[Any], eval_every: int, positive: str = "consensus",
                ) -> CaseSplit:
    """Test, probe and training cases, disjoint by case and by prompt text (module
    docstring); raises ValueError if a test prompt would still be trained on."""
    from distill.experiments.mscxr import case_group, case_prompt

    if eval_every < 3:
        raise ValueError(f"eval_every: must be >= 3 (got {eval_every})")
    test = [g for g in groups if _index(g.sample_id) % eval_every == 0]
    probe = [g for g in groups if _index(g.sample_id) % (2 * eval_every) == 1]
    held_ids = {g.sample_id for g in (*test, *probe)}
    held_prompts = {case_prompt(g.prompt) for g in (*test, *probe)}
    train = [case_group(g, positive) for g in groups if g.sample_id not in held_ids]
    kept = [g for g in train if g.prompt not in held_prompts]
    assert_disjoint(kept, test)
    return CaseSplit(kept, probe, test, len(train) - len(kept))


def assert_disjoint(train: Sequence[Any], test: Sequence[Any]) -> None:
    """Refuse a split where a test case or its prompt text is in training."""
    from distill.experiments.mscxr import case_prompt

    seen = {g.prompt for g in train}
    ids = {g.sample_id for g in train}
    leaked = [g.sample_id for g in test if case_prompt(g.prompt) in seen or g.sample_id in ids]
    if leaked:
        raise ValueError(f"split: {len(leaked)} test case(s) also in training, e.g. "
                         f"{leaked[0]}")


def lookup_top1(train: Sequence[Any], test: Sequence[Any], truths: Sequence[dict[str, str]],
                ) -> tuple[dict[str, float], int]:
    """The no-model baseline: per finding, the teachers' plurality label for the same prompt
    in training; a prompt never seen falls back to the finding's most frequent training
    label. Returns the Top-1 row and how many test prompts were found in training."""
    from distill.experiments.mscxr import case_prompt, finding_majority, plurality, with_mean
    from stream.simulator import FINDINGS

    by_prompt: dict[str, list[dict[str, str] | None]] = {}
    prior: dict[str, Counter[str]] = {f: Counter() for f in FINDINGS}
    for g in train:
        for a in g.answers:
            by_prompt.setdefault(g.prompt, []).append(a.labels)
            for f, lab in (a.labels or {}).items():
                prior[f][lab] += 1
    fallback = {f: plurality(prior[f]) for f in FINDINGS}
    hits: Counter[str] = Counter()
    found = 0
    for g, truth in zip(test, truths, strict=True):
        labels = by_prompt.get(case_prompt(g.prompt))
        found += labels is not None
        vote = {**fallback, **finding_majority(labels or [])}
        for f in FINDINGS:
            hits[f] += int(vote[f] == truth[f])
    return with_mean({f: hits[f] / max(len(test), 1) for f in FINDINGS}), found


def finding_lookup_top1(train: Sequence[Any], test: Sequence[Any],
                        truths: Sequence[dict[str, str]]) -> dict[str, float]:
    """A stronger no-model baseline: per finding, the teachers' plurality label for the
    same two phrases (``<finding>: <prior> -> <current>``) in training, else the finding's
    most frequent training label. The finding phrases repeat across cases, so this is the
    denoised table a per-finding student can at best learn from the teachers."""
    from distill.experiments.mscxr import finding_prompts, plurality, with_mean
    from stream.simulator import FINDINGS

    by_phrase: dict[str, Counter[str]] = {}
    prior: dict[str, Counter[str]] = {f: Counter() for f in FINDINGS}
    for g in train:
        phrases = finding_prompts(g.prompt)
        for a in g.answers:
            for f, lab in (a.labels or {}).items():
                by_phrase.setdefault(phrases[f], Counter())[lab] += 1
                prior[f][lab] += 1
    hits: Counter[str] = Counter()
    for g, truth in zip(test, truths, strict=True):
        for f, phrase in finding_prompts(g.prompt).items():
            hits[f] += int(plurality(by_phrase.get(phrase) or prior[f]) == truth[f])
    return with_mean({f: hits[f] / max(len(test), 1) for f in FINDINGS})


def training_groups(unit: str, cases: Sequence[Any], positive: str = "consensus",
                    ) -> list[Any]:
    """What the students train on: the case groups themselves (``case``: a whole case in,
    a teacher's whole trajectory out), or five groups per case (``finding``: one finding's
    two phrases in, the teacher's reasoning line for it and a one-finding final line out,
    :class:`~distill.experiments.mscxr.FindingBlocks`), short enough for a pretrained
    student on a CPU."""
    from distill.experiments.mscxr import FindingBlocks, finding_groups

    if unit == "case":
        return list(cases)
    blocks = FindingBlocks((a.teacher, a.output) for g in cases for a in g.answers)
    return [fg for g in cases for fg in finding_groups(g, blocks, positive)]


def run(settings: BenchSettings, workdir: Path,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole benchmark for one scenario and seed (module docstring)."""
    import random

    from distill.apo.synthesis import best_supported
    from distill.experiments import students as st
    from distill.experiments.mscxr import case_prompt, ensemble_top1, teacher_top1
    from distill.experiments.scoring import answer_scores
    from stream.simulator import FINDINGS, change_points, load_scenario
    from stream.simulator.images import with_cue_rate

    say = progress or (lambda _: None)
    t = settings.train
    _threads(settings)
    clock = st.Stopwatch()
    scenario = load_scenario(settings.scenario)
    if settings.samples:
        scenario = scenario.with_samples(settings.samples)
    if settings.cue_rate is not None:
        scenario = with_cue_rate(scenario, settings.cue_rate)
    say("monitor")
    groups, alerts = monitor_groups(scenario, settings.seed)
    clock.lap("monitor")
    cases = split_cases(groups, settings.eval_every, settings.positive)
    train, test = training_groups(settings.unit, cases.train, settings.positive), cases.test
    truths = [g.ground_truth for g in test]
    workdir = Path(workdir)
    say("initial student")
    texts = [g.prompt for g in train] + [a.output for g in train[:600] for a in g.answers]
    init = st.init_student(workdir / "init", texts, t)
    say("bootstrap")
    boot, boot_loss = st.sft(init, [(g.prompt, a.output) for g in train for a in g.answers
                                    if a.output.strip()], workdir / "bootstrap", t,
                             t.bootstrap_steps, t.sft_lr)
    clock.lap("bootstrap")
    dirs = {"bootstrap": boot}
    history: dict[str, dict[str, list[float]]] = {"bootstrap": {"loss": boot_loss}}
    usable = [g for g in train if g.consensus.support > 0]
    if t.max_groups and len(usable) > t.max_groups:  # a CPU budget for a real student
        usable = random.Random(settings.seed).sample(usable, t.max_groups)
    positives = [best_supported(g).output for g in usable]
    say("sft_majority")
    dirs["sft_majority"], loss = st.sft(boot, list(zip([g.prompt for g in usable], positives,
                                                       strict=True)),
                                        workdir / "sft_majority", t, t.stage2_steps,
                                        t.stage2_sft_lr)
    history["sft_majority"] = {"loss": loss}
    clock.lap("sft_majority")
    say("reference log-probs")
    data = st.preference_data(boot, usable, positives, t)
    clock.lap("reference")
    for method in ("dpo", "apo_uniform", "apo_drift"):
        say(method)
        dirs[method], history[method] = st.preference_train(boot, data, method,
                                                            workdir / method, t)
        clock.lap(method)
    say("evaluation")
    prompts = [case_prompt(g.prompt) for g in test]
    probe = [case_prompt(g.prompt) for g in cases.probe]
    probe_votes = [g.consensus.labels or {}
                   for g in _case_groups(cases.probe, settings.positive)]
    scores = {m: answer_scores(dirs[m], prompts, truths, settings.answer_tokens,
                               t.max_length, probe, probe_votes, settings.unit)
              for m in METHODS}
    clock.lap("evaluation")
    teachers = teacher_top1(test, truths)
    lookup, found = lookup_top1(cases.train, test, truths)
    evidence = [s.evidence for g in usable for s in g.drift.values()]
    return {
        "benchmark": "distill", "scenario": scenario.name, "seed": settings.seed,
        "settings": asdict(settings), "cue_rate": scenario.task.cue_rate,
        "unit": settings.unit, "positive": settings.positive,
        "cases": {"train": len(cases.train), "probe": len(cases.probe), "test": len(test),
                  "dropped_same_prompt": cases.dropped, "test_prompts_in_training": found,
                  "preference_groups": len(data.encoded),
                  "training_groups": len(train),
                  "train_without_consensus_trajectory": len(train) - len(
                      [g for g in train if g.consensus.support > 0])},
        "findings": list(FINDINGS),
        "teachers": teachers,
        "majority_vote": ensemble_top1(test, truths, "majority"),
        "consensus_vote": ensemble_top1(test, truths, "consensus"),
        "lookup": lookup,
        "lookup_finding": finding_lookup_top1(cases.train, test, truths),
        "methods": {m: scores[m]["generated"] for m in METHODS},
        "methods_likelihood": {m: scores[m]["likelihood"] for m in METHODS},
        "answered": {m: scores[m]["answered"] for m in METHODS},
        "probe_agreement": {m: scores[m]["probe_agreement"] for m in METHODS},
        "samples": {m: scores[m]["samples"] for m in METHODS},
        "history": history,
        "alerts": alerts,
        "change_points": change_points(scenario),
        "drift_evidence": {"mean": sum(evidence) / max(len(evidence), 1),
                           "share_positive": sum(e > 0 for e in evidence)
                           / max(len(evidence), 1)},
        "seconds": clock.seconds,
        "targets": targets({m: {"top1": scores[m]["generated"]} for m in METHODS}, teachers),
    }


def _threads(settings: BenchSettings) -> None:
    """One CPU thread for the tiny student (many threads on small matrices mostly wait on
    each other, worse on a shared machine); a real student keeps torch's default."""
    import torch

    if settings.train.student == "tiny" and settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)


def _case_groups(groups: Sequence[Any], positive: str) -> list[Any]:
    from distill.experiments.mscxr import case_group

    return [case_group(g, positive) for g in groups]


def targets(scores: dict[str, dict[str, dict[str, float]]],
            teachers: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The three targets, measured on Top-1 means."""
    best_teacher = max(teachers, key=lambda k: teachers[k]["mean"])
    best = teachers[best_teacher]["mean"]
    drift = scores["apo_drift"]["top1"]["mean"]
    return {
        "best_teacher": best_teacher, "best_teacher_mean": best,
        "apo_drift_minus_best_teacher": drift - best,
        "apo_drift_minus_bootstrap": drift - scores["bootstrap"]["top1"]["mean"],
        "apo_drift_minus_uniform": drift - scores["apo_uniform"]["top1"]["mean"],
        "met": {"beats_best_teacher_by_0.03": drift >= best + 0.03,
                "beats_bootstrap_by_0.10": drift >= scores["bootstrap"]["top1"]["mean"] + 0.10,
                "drift_at_least_uniform": drift >= scores["apo_uniform"]["top1"]["mean"]},
    }


def best_teacher_row(result: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """The teacher with the best mean Top-1 on the test cases, and its row."""
    name = max(result["teachers"], key=lambda k: result["teachers"][k]["mean"])
    return name, result["teachers"][name]


def table_rows(result: dict[str, Any], key: str = "methods") -> list[tuple[str, dict[str, float]]]:
    """(row name, per-finding + mean) for teachers, the majority vote, the lookup baseline
    (when the run has one) and the methods."""
    rows = [(name, row) for name, row in result["teachers"].items()]
    rows.append((MAJORITY_NAME, result["majority_vote"]))
    if "consensus_vote" in result:
        rows.append((CONSENSUS_NAME, result["consensus_vote"]))
    if "lookup" in result:
        rows.append((LOOKUP_NAME, result["lookup"]))
    if "lookup_finding" in result:
        rows.append((FINDING_LOOKUP_NAME, result["lookup_finding"]))
    rows += [(METHOD_NAMES[m], result[key][m]) for m in METHODS]
    return rows


def aggregate(runs: Sequence[dict[str, Any]], key: str = "methods") -> list[dict[str, Any]]:
    """Every row over seeds: per finding and mean, the mean, sd, min and max (the best
    teacher is chosen per run)."""
    cols = [*runs[0]["findings"], "mean"]
    named: dict[str, list[dict[str, Any]]] = {}  # float columns, plus the best's teacher
    for r in runs:
        name, row = best_teacher_row(r)
        named.setdefault("best teacher", []).append({**row, "teacher": name})
        for n, row in table_rows(r, key)[len(r["teachers"]):]:
            named.setdefault(n, []).append(row)
    out = []
    for name, rows in named.items():
        stats = {}
        for c in cols:
            values = [row[c] for row in rows]
            stats[c] = {"mean": statistics.fmean(values),
                        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                        "min": min(values), "max": max(values)}
        entry: dict[str, Any] = {"row": name, "seeds": [r["seed"] for r in runs], **stats}
        if name == "best teacher":
            entry["teachers"] = [row["teacher"] for row in rows]
        out.append(entry)
    return out
