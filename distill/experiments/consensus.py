"""``distill bench consensus``: answer-level consensus on real teacher outputs.

For every chain of ``drift_chains.json`` whose task has ground truth (prime, GSM8K,
MMLU-Pro health, MedQA), build the chain's drift stream (the watched teacher switches
version; up to four stable peers answer throughout), run the monitor pipeline over it as
``serve`` would, and score each completed group's answer chosen three ways:

* **majority**: plain majority vote (ties: the smallest answer, as the pipeline does);
* **drift-aware**: a vote where teacher u counts ``1 / (1 + scale * evidence_u)``, with
  ``evidence_u`` the live detectors' drift evidence for u when the group completed;
* **best teacher**: the single teacher with the best accuracy over the whole stream,
  chosen in hindsight (an oracle no online system has).

Answers match the ground truth after :func:`stream.signals.canonical_answer`, or as
numbers for numeric gold (GSM8K's "18" vs "18.00").

>>> answer_matches("$1,800", "1800"), answer_matches("B", "b"), answer_matches("7", "8")
(True, True, False)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from distill.consensus import majority, weighted_vote
from stream.signals import canonical_answer

GROUND_TRUTH_TASKS = ("prime", "gsm8k", "mmlu_pro_health", "medqa_usmle")
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


def score_groups(groups: Iterable[Any], scale: float) -> dict[str, Any]:
    """Accuracy of majority, drift-aware vote and every single teacher over ``groups``."""
    n = 0
    hits: Counter[str] = Counter()
    per_teacher: Counter[str] = Counter()
    in_drift = 0
    for g in groups:
        if g.ground_truth is None:
            continue
        n += 1
        answers = {a.teacher: a.answer for a in g.answers}
        hits["majority"] += answer_matches(majority(answers).answer, g.ground_truth)
        vote = weighted_vote(answers, drift_weights(g.drift, scale))
        hits["drift_aware"] += answer_matches(vote.answer, g.ground_truth)
        in_drift += any(s.in_drift for s in g.drift.values())
        for a in g.answers:
            per_teacher[a.teacher] += answer_matches(a.answer, g.ground_truth)
    teachers = {t: per_teacher[t] / n for t in sorted(per_teacher)} if n else {}
    best = max(teachers, key=lambda t: teachers[t]) if teachers else None
    return {"groups": n, "majority": hits["majority"] / n if n else None,
            "drift_aware": hits["drift_aware"] / n if n else None,
            "best_teacher": teachers.get(best) if best else None, "best_teacher_name": best,
            "teachers": teachers, "groups_with_teacher_in_drift": in_drift}


def chain_tasks(entry: Mapping[str, Any], tasks_in_file: set[str]) -> list[str]:
    """The ground-truth tasks a chain entry covers (``*`` = those present in its file)."""
    task = str(entry.get("task", "*"))
    if task == "*":
        return [t for t in GROUND_TRUTH_TASKS if t in tasks_in_file]
    return [task] if task in GROUND_TRUTH_TASKS else []


def run(data_dir: Path, chains_file: Path, seed: int = 0, scale: float = 3.0,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every ground-truth chain: the three accuracies, per chain and pooled."""
    from distill.monitor.pipeline import MonitorPipeline, PipelineConfig
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
        for task in chain_tasks(entry, {r.get("task") for r in records}):
            if progress:
                progress(f"{task}: {name}")
            try:
                stream = build_drift_stream(records, {**entry, "task": task}, seed=seed)
            except ValueError as exc:
                skipped.append({"chain": name, "task": task, "reason": str(exc)})
                continue
            pipeline = MonitorPipeline(PipelineConfig(
                expected_teachers=(stream.watched, *stream.peers)))
            out = pipeline.run(stream.events)
            row = score_groups(out.groups, scale)
            row.update(chain=name, task=task, watched=stream.watched, peers=stream.peers,
                       alerts=sum(a.teacher == stream.watched for a in out.alerts),
                       peer_alerts=sum(a.teacher != stream.watched for a in out.alerts))
            rows.append(row)
    return {"benchmark": "consensus", "seed": seed, "drift_scale": scale, "rows": rows,
            "aggregate": aggregate(rows), "skipped": skipped}


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over chains, and pooled over all groups (weighted by group count)."""
    scored = [r for r in rows if r["groups"]]
    total = sum(r["groups"] for r in scored)
    out: dict[str, Any] = {"chains": len(scored), "groups": total}
    for key in ("majority", "drift_aware", "best_teacher"):
        out[f"{key}_mean"] = (sum(r[key] for r in scored) / len(scored)) if scored else None
        out[f"{key}_pooled"] = (sum(r[key] * r["groups"] for r in scored) / total
                                if total else None)
    out["drift_aware_wins"] = sum(r["drift_aware"] > r["majority"] for r in scored)
    out["drift_aware_losses"] = sum(r["drift_aware"] < r["majority"] for r in scored)
    return out
