"""``distill bench consensus``: consensus against gold on real and simulated teachers.

Real streams: every chain of ``drift_chains.json`` and every task of its file whose records
carry a gold answer, whatever the task is called. Each chain's drift stream (the watched
teacher switches version; up to four stable peers answer throughout) runs through the
monitor pipeline as ``serve`` would, and each completed group's answer is chosen by:

* **majority**: plain majority vote (ties: the smallest answer);
* **drift-aware**: a vote where teacher u counts ``1 / (1 + scale * evidence_u)``;
* **reliability**: the pipeline's own online consensus
  (:class:`~distill.consensus.ReliabilityConsensus`, decided when the group closed, with
  only the groups before it learnt from), and two ablations run beside it on the same
  groups and alerts: without forgetting on alerts, and without the correlation discount;
* **Dawid-Skene (batch)**: crowd-kit's EM over the whole stream at once (the classic
  confusion-matrix model for closed label sets, its one-coin form for open answers); it
  sees every group before deciding any, which no online system can;
* **best teacher**: the single teacher with the best accuracy over the whole stream, chosen
  in hindsight (an oracle).

Three hindsight bounds per stream say what any rule could do with these answers (they read
the gold answers, so they are measurements, never rules): **any teacher right** (the share
of groups where some teacher gave the gold answer: no rule that picks one of the answers
given does better); **hindsight vote** (the one-coin weighted vote, log-odds weights, with
each teacher's true accuracy and the stream's chance agreement: what the reliability
consensus would reach if its estimates were exact); **best right, others agree wrong** (the
share of groups where the best teacher is right while the others' strict plurality is one
wrong answer: agreement cannot tell these from the reverse case).

Simulated streams: the packaged scenarios (confusion matrices, colluding blocs, drifts),
scored per finding against the case's truth, mean over the five findings, over seeds.

Answers match the ground truth after :func:`stream.signals.canonical_answer`, or as
numbers for numeric gold (GSM8K's "18" vs "18.00").

>>> answer_matches("$1,800", "1800"), answer_matches("B", "b"), answer_matches("7", "8")
(True, True, False)
"""

from __future__ import annotations

import math
import re
import statistics
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.consensus import (
    ReliabilityConfig,
    ReliabilityConsensus,
    label_majority,
    majority,
    weighted_vote,
)
from stream.signals import canonical_answer

if TYPE_CHECKING:
    from detectors.bank import DriftRecord
    from distill.groups import TeacherGroup

#: the consensus rules every table row compares (best teacher is added per stream)
RULES = ("majority", "drift_aware", "reliability", "reliability_no_forget",
         "reliability_no_correlation", "dawid_skene")
#: ablations of the pipeline's consensus, run beside it: (name, config change, forgets)
ABLATIONS: tuple[tuple[str, dict[str, Any], bool], ...] = (("reliability_no_forget", {}, False),
             ("reliability_no_correlation", {"correlation": False}, True))
#: hindsight bounds per stream (they read the gold answers: measurements, never rules)
BOUNDS = ("any_teacher_right", "hindsight_vote", "best_right_others_agree_wrong")
SIM_SCENARIOS = ("default", "confusion", "collusion", "harsh")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def answer_matches(answer: str | None, truth: Any) -> bool:
    """Whether ``answer`` is the gold answer (canonical spelling, or the same number)."""
    if answer is None or truth is None:
        return False
    a, t = canonical_answer(str(answer)), canonical_answer(str(truth))
    if a == t:
        return True
    if t is not None and _NUMBER.fullmatch(t):
        found = _NUMBER.search((a or "").replace(",", ""))
        return found is not None and float(found.group()) == float(t)
    return False


def drift_weights(drift: Mapping[str, Any], scale: float) -> dict[str, float]:
    """``1 / (1 + scale * evidence)`` per teacher."""
    return {t: 1.0 / (1.0 + scale * s.evidence) for t, s in drift.items()}


def dawid_skene(questions: Sequence[Mapping[str, str | None]],
                max_classes: int = ReliabilityConfig().max_classes) -> list[str | None]:
    """crowd-kit's batch Dawid-Skene over all ``questions`` (teacher -> answer each): the
    confusion-matrix model when at most ``max_classes`` distinct answers occur, else its
    one-coin form on answers renamed per question to their rank among that question's
    answers (a full confusion matrix over hundreds of numbers is not estimable, and
    crowd-kit's one-coin form is quadratic in the label count: minutes for 100 GSM8K-like
    questions; the one-coin model only asks which teachers agree, which renaming keeps)."""
    import pandas as pd
    from crowdkit.aggregation import DawidSkene, OneCoinDawidSkene

    rows = [(t, i, a) for i, q in enumerate(questions) for t, a in q.items() if a is not None]
    if not rows:
        return [None] * len(questions)
    closed = len({a for _, _, a in rows}) <= max_classes
    local = [sorted({a for a in q.values() if a is not None}) for q in questions]
    if not closed:
        rows = [(t, i, str(local[i].index(a))) for t, i, a in rows]
    df = pd.DataFrame(rows, columns=["worker", "task", "label"])
    model = DawidSkene(n_iter=100) if closed else OneCoinDawidSkene(n_iter=100)
    with warnings.catch_warnings():  # crowd-kit's pandas calls warn about pandas' future
        warnings.simplefilter("ignore")
        picked = model.fit_predict(df)
    out = [picked.get(i) for i in range(len(questions))]
    return out if closed else [None if p is None else local[i][int(p)]
                               for i, p in enumerate(out)]


def chance_classes(questions: Sequence[Mapping[str, str | None]]) -> float:
    """``1 / r``, ``r`` the rate at which two different teachers' answers to consecutive
    questions are equal (the effective number of answers, as the consensus estimates it)."""
    pairs = equal = 0
    for before, now in pairwise(questions):
        last = Counter(a for a in before.values() if a is not None)
        for teacher, answer in now.items():
            if answer is None:
                continue
            mine = before.get(teacher)
            pairs += sum(last.values()) - (mine is not None)
            equal += last[answer] - (mine == answer)
    return max(2.0, pairs / equal) if equal else 1000.0


def hindsight_vote(questions: Sequence[Mapping[str, str | None]],
                   accuracy: Mapping[str, float], classes: float) -> list[str | None]:
    """The one-coin weighted vote with known accuracies (ties: the smallest answer): each
    teacher adds ``log(a (K - 1) / (1 - a))`` to the answer it gave."""
    weight = {t: math.log(min(max(a, 1e-3), 1 - 1e-3) * (classes - 1.0)
                          / (1.0 - min(max(a, 1e-3), 1 - 1e-3))) for t, a in accuracy.items()}
    return [weighted_vote(q, weight).answer for q in questions]


class _Beside:
    """The ablations of the pipeline's consensus, fed the same groups and alerts."""

    def __init__(self, config: ReliabilityConfig) -> None:
        self.models = {name: (ReliabilityConsensus(replace(config, **change)), forgets)
                       for name, change, forgets in ABLATIONS}
        self.decisions: dict[str, list[Any]] = {name: [] for name in self.models}

    def feed(self, out: Any) -> None:
        from distill.monitor.pipeline import PEER_ALERT_SIGNALS

        for alert in out.alerts:
            if alert.signal not in PEER_ALERT_SIGNALS:  # as the pipeline: own-history alerts
                for model, forgets in self.models.values():
                    if forgets:
                        model.forget(alert.teacher)
        for g in out.groups:
            answers = {a.teacher: a.answer for a in g.answers}
            labels = {a.teacher: a.labels for a in g.answers}
            for name, (model, _) in self.models.items():
                self.decisions[name].append(model.decide(answers, labels))


def run_pipeline(events: Iterable[Any], teachers: Sequence[str],
                 config: ReliabilityConfig | None = None,
                 ) -> tuple[list[TeacherGroup], dict[str, list[Any]], list[DriftRecord]]:
    """The monitor pipeline over ``events``: its groups, the ablations' decisions for the
    same groups, and its alerts."""
    from distill.monitor.pipeline import MonitorPipeline, PipelineConfig

    config = config or ReliabilityConfig()
    # The streams are in event-time order: no lateness to wait for, so the detect stage
    # (and the forgetting its alerts trigger) keeps pace with the groups instead of
    # running a group timeout behind a stream that spans minutes.
    pipeline = MonitorPipeline(PipelineConfig(expected_teachers=tuple(teachers),
                                              consensus=config, allowed_lateness_s=0.0))
    beside = _Beside(config)
    groups: list[TeacherGroup] = []
    alerts: list[DriftRecord] = []
    for event in events:
        out = pipeline.process(event)
        beside.feed(out)
        groups.extend(out.groups)
        alerts.extend(out.alerts)
    out = pipeline.flush()
    beside.feed(out)
    groups.extend(out.groups)
    alerts.extend(out.alerts)
    return groups, beside.decisions, alerts


def score_groups(groups: Sequence[Any], scale: float,
                 beside: Mapping[str, Sequence[Any]] | None = None,
                 with_dawid_skene: bool = True) -> dict[str, Any]:
    """Accuracy of every rule and every single teacher over the groups with gold."""
    keep = [i for i, g in enumerate(groups) if g.ground_truth is not None]
    n = len(keep)
    hits: Counter[str] = Counter()
    per_teacher: Counter[str] = Counter()
    in_drift = 0
    questions = [{a.teacher: a.answer for a in groups[i].answers} for i in keep]
    ds = dawid_skene(questions) if with_dawid_skene and n else None
    for k, i in enumerate(keep):
        g, answers = groups[i], questions[k]
        truth = g.ground_truth
        hits["majority"] += answer_matches(majority(answers).answer, truth)
        vote = weighted_vote(answers, drift_weights(g.drift, scale))
        hits["drift_aware"] += answer_matches(vote.answer, truth)
        hits["reliability"] += answer_matches(g.consensus.answer, truth)
        for name, decisions in (beside or {}).items():
            hits[name] += answer_matches(decisions[i].answer, truth)
        if ds is not None:
            hits["dawid_skene"] += answer_matches(ds[k], truth)
        in_drift += any(s.in_drift for s in g.drift.values())
        for a in g.answers:
            per_teacher[a.teacher] += answer_matches(a.answer, truth)
    teachers = {t: per_teacher[t] / n for t in sorted(per_teacher)} if n else {}
    best = max(teachers, key=lambda t: teachers[t]) if teachers else None
    bounds = _bounds(questions, [groups[i].ground_truth for i in keep], best) if n else {}
    rules = ["majority", "drift_aware", "reliability", *(beside or {}),
             *(["dawid_skene"] if ds is not None else [])]
    row: dict[str, Any] = {"groups": n, **{r: hits[r] / n if n else None for r in rules}}
    row.update(best_teacher=teachers.get(best) if best else None, best_teacher_name=best,
               teachers=teachers, groups_with_teacher_in_drift=in_drift, **bounds)
    return row


def _bounds(questions: Sequence[Mapping[str, str | None]], truths: Sequence[Any],
            best: str | None) -> dict[str, float]:
    """The hindsight bounds of :data:`BOUNDS` for one stream."""
    n = len(questions)
    right = [{t: answer_matches(a, truth) for t, a in q.items() if a is not None}
             for q, truth in zip(questions, truths, strict=True)]
    answered: Counter[str] = Counter(t for r in right for t in r)
    correct: Counter[str] = Counter(t for r in right for t, ok in r.items() if ok)
    accuracy = {t: correct[t] / answered[t] for t in answered}
    vote = hindsight_vote(questions, accuracy, chance_classes(questions))
    against = 0
    for q, r, truth in zip(questions, right, truths, strict=True):
        if best is not None and r.get(best):
            others = majority({t: a for t, a in q.items() if t != best})
            against += (others.answer is not None and not others.tie
                        and not answer_matches(others.answer, truth))
    return {"any_teacher_right": sum(any(r.values()) for r in right) / n,
            "hindsight_vote": sum(answer_matches(v, t) for v, t in zip(vote, truths,
                                                                        strict=True)) / n,
            "best_right_others_agree_wrong": against / n}


def gold_tasks(entry: Mapping[str, Any], gold_by_task: Mapping[str, bool]) -> list[str]:
    """The tasks a chain entry covers whose records carry a gold answer (``*``: every such
    task of its file), whatever they are called."""
    task = str(entry.get("task", "*"))
    if task == "*":
        return sorted(t for t, gold in gold_by_task.items() if gold)
    return [task] if gold_by_task.get(task) else []


def _gold_by_task(records: Iterable[Mapping[str, Any]]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for r in records:
        t = str(r.get("task"))
        out[t] = out.get(t, False) or r.get("ground_truth") is not None
    return out


def run(data_dir: Path, chains_file: Path, seed: int = 0, scale: float = 3.0,
        progress: Callable[[str], None] | None = None,
        config: ReliabilityConfig | None = None) -> dict[str, Any]:
    """Every gold-carrying chain: the rules' accuracies, per chain and aggregated."""
    from stream.datapack import build_drift_stream, load_chains, read_pack

    rows, skipped = [], []
    cache: dict[str, list[dict[str, Any]]] = {}
    for entry in load_chains(chains_file):
        name = "->".join(entry["chain"])
        path = Path(data_dir) / entry["file"]
        if not path.is_file():
            skipped.append({"chain": name, "reason": f"missing file {entry['file']}"})
            continue
        records = cache.setdefault(entry["file"], list(read_pack(path)))
        for task in gold_tasks(entry, _gold_by_task(records)):
            if progress:
                progress(f"{task}: {name}")
            try:
                stream = build_drift_stream(records, {**entry, "task": task}, seed=seed)
            except ValueError as exc:
                skipped.append({"chain": name, "task": task, "reason": str(exc)})
                continue
            groups, beside, alerts = run_pipeline(stream.events,
                                                  (stream.watched, *stream.peers), config)
            row = score_groups(groups, scale, beside)
            row.update(chain=name, task=task, watched=stream.watched, peers=stream.peers,
                       alerts=sum(a.teacher == stream.watched for a in alerts),
                       peer_alerts=sum(a.teacher != stream.watched for a in alerts))
            rows.append(row)
    return {"benchmark": "consensus", "seed": seed, "drift_scale": scale, "rows": rows,
            "aggregate": aggregate(rows), "skipped": skipped}


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over chains, pooled over all groups, and chains at/above the best teacher."""
    scored = [r for r in rows if r["groups"]]
    total = sum(r["groups"] for r in scored)
    out: dict[str, Any] = {"chains": len(scored), "groups": total}
    for key in (*RULES, "best_teacher", *BOUNDS):
        have = [r for r in scored if r.get(key) is not None]
        out[f"{key}_mean"] = (sum(r[key] for r in have) / len(have)) if have else None
        n = sum(r["groups"] for r in have)
        out[f"{key}_pooled"] = (sum(r[key] * r["groups"] for r in have) / n if n else None)
    out["drift_aware_wins"] = sum(r["drift_aware"] > r["majority"] for r in scored)
    out["drift_aware_losses"] = sum(r["drift_aware"] < r["majority"] for r in scored)
    out["reliability_at_or_above_best"] = sum(r["reliability"] >= r["best_teacher"] - 1e-12
                                              for r in scored)
    out["reliability_above_majority"] = sum(r["reliability"] > r["majority"] for r in scored)
    out["reliability_below_majority"] = sum(r["reliability"] < r["majority"] for r in scored)
    return out


# --- simulated teachers --------------------------------------------------------------------

def score_simulated(groups: Sequence[Any], beside: Mapping[str, Sequence[Any]],
                    with_dawid_skene: bool = True) -> dict[str, Any]:
    """Per-finding accuracy (mean over findings) of every rule and every teacher."""
    keep = [i for i, g in enumerate(groups) if isinstance(g.ground_truth, dict)]
    findings = sorted({f for i in keep for f in groups[i].ground_truth})
    picks: dict[str, list[dict[str, str] | None]] = {
        "majority": [label_majority({a.teacher: a.labels for a in groups[i].answers})
                     for i in keep],
        "reliability": [groups[i].consensus.labels for i in keep],
        **{name: [d[i].labels for i in keep] for name, d in beside.items()}}
    ds: list[dict[str, str]] = [{} for _ in keep]
    for f in findings if with_dawid_skene else ():
        qs = [{a.teacher: (a.labels or {}).get(f) for a in groups[i].answers} for i in keep]
        for k, label in enumerate(dawid_skene(qs)):
            if label is not None:
                ds[k][f] = label
    if with_dawid_skene:
        picks["dawid_skene"] = list(ds)
    teachers = sorted({a.teacher for i in keep for a in groups[i].answers})
    for t in teachers:
        picks[f"teacher:{t}"] = [next((a.labels for a in groups[i].answers if a.teacher == t),
                                      None) for i in keep]

    def acc(rows: list[dict[str, str] | None]) -> float:
        per: list[float] = [sum((r or {}).get(f) == groups[i].ground_truth[f]
                   for r, i in zip(rows, keep, strict=True)) / len(keep) for f in findings]
        return sum(per) / len(per)

    out = {name: acc(rows) for name, rows in picks.items()}
    best = max(teachers, key=lambda t: out[f"teacher:{t}"])
    return {"groups": len(keep), **{r: out[r] for r in RULES if r in out},
            "best_teacher": out[f"teacher:{best}"], "best_teacher_name": best,
            "teachers": {t: out[f"teacher:{t}"] for t in teachers}}


def run_simulated(scenarios: Sequence[str] = SIM_SCENARIOS, seeds: Sequence[int] = (0, 1, 2),
                  samples: int = 1000, progress: Callable[[str], None] | None = None,
                  config: ReliabilityConfig | None = None,
                  with_dawid_skene: bool = True) -> dict[str, Any]:
    """Every scenario over ``seeds`` (first ``samples`` cases): per-seed rows, mean and sd."""
    from stream.simulator import generate, load_scenario

    out: dict[str, Any] = {"samples": samples, "seeds": list(seeds), "scenarios": {}}
    for name in scenarios:
        scenario = load_scenario(name).with_samples(samples)
        runs = []
        for seed in seeds:
            if progress:
                progress(f"simulated {name}, seed {seed}")
            groups, beside, _ = run_pipeline(generate(scenario, seed),
                                             [t.name for t in scenario.teachers], config)
            runs.append(score_simulated(groups, beside, with_dawid_skene))
        out["scenarios"][name] = {"runs": runs, "summary": spread(runs)}
    return out


def spread(runs: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """(mean, sample sd) over seeds of every rule and of the best teacher."""
    out = {}
    for key in (*RULES, "best_teacher"):
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            out[key] = (statistics.fmean(values), sd)
    return out
