"""``distill bench distill``: the paper's MS-CXR-T table at small scale, on a simulated stream.

1. Simulate the scenario (seeded) and run :class:`~distill.monitor.pipeline.MonitorPipeline` over
   the whole stream, as ``serve`` would: every completed group carries each teacher's drift
   evidence at that moment.
2. Split the cases: every ``eval_every``-th sample is held out for evaluation; its ground
   truth is read only by the scoring code. Training groups are built without ground truth.
3. Train the students of :mod:`distill.experiments.students` from one tiny initial model.
4. Score teachers (their own answers, no answer = wrong) and students (likelihood over the
   three labels, :mod:`distill.experiments.scoring`) per finding on the held-out cases.

The result is one JSON-able dict; :func:`table_rows` gives the paper-style rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distill.experiments.students import TrainSettings

METHODS = ("bootstrap", "sft_majority", "dpo", "apo_uniform", "apo_drift")
METHOD_NAMES = {"bootstrap": "SFT on all teachers (bootstrap only)",
                "sft_majority": "SFT on majority-vote answers",
                "dpo": "Pairwise DPO (authors' script)",
                "apo_uniform": "APO, uniform negatives (paper)",
                "apo_drift": "APO, drift-weighted negatives (ours)"}


@dataclass(frozen=True)
class BenchSettings:
    scenario: str = "default"
    seed: int = 0
    samples: int | None = None  # None = the scenario's own count
    eval_every: int = 5
    train: TrainSettings = field(default_factory=TrainSettings)


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


def split(groups: list[Any], eval_every: int) -> tuple[list[Any], list[Any]]:
    """Held-out cases (every ``eval_every``-th sample, ground truth kept for scoring) and
    the training groups: five per remaining case, built without ground truth."""
    from distill.experiments.mscxr import finding_groups

    held = [g for g in groups if _index(g.sample_id) % eval_every == 0]
    train = [fg for g in groups if _index(g.sample_id) % eval_every != 0
             for fg in finding_groups(g)]
    return held, train


def run(settings: BenchSettings, workdir: Path,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole benchmark for one scenario and seed (module docstring)."""
    from distill.experiments import students as st
    from distill.experiments.mscxr import (
        finding_prompts,
        label_text,
        majority_top1,
        teacher_top1,
    )
    from distill.experiments.scoring import student_scores
    from stream.simulator import FINDINGS, change_points, load_scenario

    say = progress or (lambda _: None)
    t = settings.train
    clock = st.Stopwatch()
    scenario = load_scenario(settings.scenario)
    if settings.samples:
        scenario = scenario.with_samples(settings.samples)
    say("monitor")
    groups, alerts = monitor_groups(scenario, settings.seed)
    clock.lap("monitor")
    held, train = split(groups, settings.eval_every)
    truths = [g.ground_truth for g in held]
    items = [(f, finding_prompts(g.prompt)[f], g.ground_truth[f]) for g in held for f in FINDINGS]
    workdir = Path(workdir)
    say("initial student")
    texts = [g.prompt for g in train] + [a.output for g in train[:4000] for a in g.answers]
    init = st.init_student(workdir / "init", texts, t)
    say("bootstrap")
    boot, boot_loss = st.sft(init, [(g.prompt, a.output) for g in train for a in g.answers],
                             workdir / "bootstrap", t, t.bootstrap_steps, t.sft_lr)
    clock.lap("bootstrap")
    dirs = {"bootstrap": boot}
    history: dict[str, dict[str, list[float]]] = {"bootstrap": {"loss": boot_loss}}
    usable = [g for g in train if g.consensus.answer is not None]
    if t.max_groups and len(usable) > t.max_groups:  # a CPU budget for a real student
        import random

        usable = random.Random(settings.seed).sample(usable, t.max_groups)
    positives = [label_text(g.consensus.answer) for g in usable]
    say("sft_majority")
    dirs["sft_majority"], loss = st.sft(boot, [(g.prompt, p) for g, p in zip(
        usable, positives, strict=True)], workdir / "sft_majority", t, t.stage2_steps,
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
    scores = {m: student_scores(dirs[m], items, t.max_length) for m in METHODS}
    clock.lap("evaluation")
    evidence = [s.evidence for g in usable for s in g.drift.values()]
    return {
        "benchmark": "distill", "scenario": scenario.name, "seed": settings.seed,
        "settings": asdict(settings),
        "cases": {"train": len(groups) - len(held), "eval": len(held),
                  "train_groups": len(train), "preference_groups": len(data.encoded)},
        "findings": list(FINDINGS),
        "teachers": teacher_top1(held, truths),
        "majority_vote": majority_top1(held, truths),
        "methods": {m: scores[m]["top1"] for m in METHODS},
        "methods_sampled": {m: scores[m]["sampled"] for m in METHODS},
        "history": history,
        "alerts": alerts,
        "change_points": change_points(scenario),
        "drift_evidence": {"mean": sum(evidence) / max(len(evidence), 1),
                           "share_positive": sum(e > 0 for e in evidence)
                           / max(len(evidence), 1)},
        "seconds": clock.seconds,
        "targets": targets(scores, teacher_top1(held, truths)),
    }


def targets(scores: dict[str, dict[str, dict[str, float]]],
            teachers: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The issue's three targets, measured on Top-1 means."""
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


def table_rows(result: dict[str, Any], key: str = "methods") -> list[tuple[str, dict[str, float]]]:
    """(row name, per-finding + mean) for teachers, the majority vote and the methods."""
    rows = [(name, row) for name, row in result["teachers"].items()]
    rows.append(("majority vote of the teachers (test-time)", result["majority_vote"]))
    rows += [(METHOD_NAMES[m], result[key][m]) for m in METHODS]
    return rows
