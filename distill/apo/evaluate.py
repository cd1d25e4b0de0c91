"""The evaluation gate: how often the student picks the teachers' consensus, and the truth.

Choice by likelihood, not generation: for each probe case the student scores every
candidate answer ``"Final answer: <option>"`` after the prompt (mean log-prob per token,
so options of different token lengths compete fairly) and picks the best. The options are
the teachers' distinct answers and nothing else: the ground truth is never added (a student
cannot pick an answer no teacher gave, so a case the teachers all got wrong counts as
wrong, as it would for a generated answer). This is one batched
forward pass per option instead of a decode loop, and it still measures what matters for
a tiny or early student: which answer it prefers.

Multi-finding tasks (MS-CXR-T: 5 findings x {improving, stable, worsening}): where the
teachers' ``labels`` or the ground truth are dicts, each finding is scored separately
(option text ``"<finding>=<value>"``); the result has ``agreement/<finding>`` (against the
group's consensus label for that finding, the monitor's reliability-weighted decision, or
the teachers' majority where the group has none) and, only with ``with_gold=True`` (experiments),
``top1/<finding>`` (accuracy against the ground truth), ``top1/mean`` (their plain mean, as
in the paper's table) and ``accuracy``.

The promotion gate calls :func:`evaluate` without gold, so no training or gating decision
depends on the ground truth; only experiments ask for the gold columns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from distill.groups import TeacherGroup

ANSWER_FORMAT = "Final answer: {}"
FINDING_FORMAT = "{}={}"


def _majority(values: list[str]) -> str | None:
    counts = Counter(values).most_common(2)
    if not counts or (len(counts) == 2 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def _questions(group: TeacherGroup, with_gold: bool = False
               ) -> list[tuple[str, list[str], str | None, Any]]:
    """(key, options, consensus, truth) per question: "answer" and/or one per finding.
    Options are the teachers' answers only; ``truth`` is None unless ``with_gold``."""
    out = []
    answers = sorted({a.answer for a in group.answers if a.answer})
    truth = group.ground_truth if with_gold else None
    if answers:
        out.append(("answer", answers, group.consensus.answer,
                    truth if isinstance(truth, str) else None))
    labels = [a.labels for a in group.answers if isinstance(a.labels, dict)]
    truth_map = truth if isinstance(truth, dict) else {}
    decided = group.consensus.labels or {}
    findings = sorted({k for lab in labels for k in lab})
    for k in findings:
        values = [str(lab[k]) for lab in labels if lab.get(k) is not None]
        gt = truth_map.get(k)
        opts = sorted(set(values))
        if opts:
            out.append((f"finding:{k}", opts, decided.get(k) or _majority(values),
                        str(gt) if gt is not None else None))
    return out


def _option_text(key: str, option: str) -> str:
    if key == "answer":
        return ANSWER_FORMAT.format(option)
    return FINDING_FORMAT.format(key.removeprefix("finding:"), option)


def evaluate(model_dir: Path, probe: Sequence[TeacherGroup], max_length: int = 512,
             batch_size: int = 32, with_gold: bool = False,
             image_roots: Sequence[str] | None = None) -> dict[str, float]:
    """Agreement with the consensus; with ``with_gold``, also accuracy where ground truth
    exists (see module).

    A vision-language student scores every option with the probe case's images in its
    prompt, read under ``image_roots`` (hash checked); a probe group whose image cannot be
    read is left out and counted as ``n_probe_image_failures`` (``n_probe`` counts the
    groups scored). A text student ignores the images.
    """
    from distill.apo.vision import is_vision_student

    if is_vision_student(Path(model_dir)):
        from distill.apo.vision import load_group_images

        loaded, failed = load_group_images(probe, image_roots or [])
        images = {g.sample_id: imgs for g, imgs in loaded}
        out = _evaluate(_vision_scorer(Path(model_dir), images, max_length, batch_size),
                        [g for g, _ in loaded], with_gold)
        out["n_probe_image_failures"] = float(sum(failed.values()))
        return out
    return _evaluate(_text_scorer(Path(model_dir), max_length, batch_size), probe, with_gold)


#: Mean log-prob per response token of each (group, option text) row.
Scorer = Callable[[list[tuple[TeacherGroup, str]]], list[float]]


def _text_scorer(model_dir: Path, max_length: int, batch_size: int) -> Scorer:
    from distill.apo.encode import encode_pair, score_all
    from distill.apo.student import load_student

    model, tokenizer = load_student(model_dir)
    device = next(model.parameters()).device

    def score(rows: list[tuple[TeacherGroup, str]]) -> list[float]:
        encoded = [encode_pair(tokenizer, g.prompt or "", text, max_length, max_length // 2)
                   for g, text in rows]
        sums = score_all(model, encoded, tokenizer.pad_token_id, batch_size, device)
        return [s / max(e.response_len, 1) for s, e in zip(sums, encoded, strict=True)]

    return score


def _vision_scorer(model_dir: Path, images: dict[str, list[Any]], max_length: int,
                   batch_size: int) -> Scorer:
    from distill.apo.vision import load_vision_student
    from distill.apo.vision_encode import encode_vision_pair, vision_score_all

    model, processor = load_vision_student(model_dir)
    device = next(model.parameters()).device
    cache: dict[Any, Any] = {}

    def score(rows: list[tuple[TeacherGroup, str]]) -> list[float]:
        encoded = [encode_vision_pair(processor, g.prompt or "", images[g.sample_id], text,
                                      max_length, cache) for g, text in rows]
        sums = vision_score_all(model, encoded, processor.tokenizer.pad_token_id, batch_size,
                                device)
        return [s / max(e.response_len, 1) for s, e in zip(sums, encoded, strict=True)]

    return score


def _evaluate(score: Scorer, probe: Sequence[TeacherGroup], with_gold: bool
              ) -> dict[str, float]:
    items = [(g, q) for g in probe for q in _questions(g, with_gold)]
    rows: list[tuple[TeacherGroup, str]] = []
    spans: list[tuple[int, int]] = []
    for g, (key, opts, _, _) in items:
        start = len(rows)
        rows.extend((g, _option_text(key, o)) for o in opts)
        spans.append((start, len(rows)))
    scores = score(rows) if rows else []
    agree: dict[str, list[bool]] = {}
    correct: dict[str, list[bool]] = {}
    for (_, (key, opts, consensus, truth)), (a, b) in zip(items, spans, strict=True):
        pick = opts[max(range(b - a), key=lambda i: scores[a + i])]
        if consensus is not None:
            agree.setdefault(key, []).append(pick == consensus)
        if truth is not None:
            correct.setdefault(key, []).append(pick == truth)
    return _summarise(agree, correct, len(probe))


def _summarise(agree: dict[str, list[bool]], correct: dict[str, list[bool]],
               n_probe: int) -> dict[str, float]:
    def mean(xs: list[bool]) -> float:
        return sum(xs) / len(xs) if xs else 0.0

    out: dict[str, float] = {"n_probe": float(n_probe)}
    out["agreement"] = mean([x for v in agree.values() for x in v])
    if "answer" in correct:
        out["accuracy"] = mean(correct["answer"])
    findings = sorted(k for k in correct if k.startswith("finding:"))
    for k in findings:
        out[f"top1/{k.removeprefix('finding:')}"] = mean(correct[k])
    for k in sorted(a for a in agree if a.startswith("finding:")):
        out[f"agreement/{k.removeprefix('finding:')}"] = mean(agree[k])
    if findings:
        out["top1/mean"] = sum(mean(correct[k]) for k in findings) / len(findings)
        if "accuracy" not in out:
            out["accuracy"] = out["top1/mean"]
    return out
