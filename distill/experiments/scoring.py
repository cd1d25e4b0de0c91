"""The student's answer to a held-out finding: likelihood over the three labels.

For each (case, finding) item the student scores the three complete trajectories
``Final answer: <label>`` (summed log-probability, EOS included) after the item's prompt.

* **Top-1** (the paper's metric): the label with the highest likelihood, i.e. the answer
  of a greedy decoder allowed to write only labels.
* **Sampled**: the probability mass the student puts on the true label, renormalised over
  the three; the expected accuracy of a student that samples its answer (temperature 1).
  It shows what Top-1 hides: a student that copies a conflicting crowd puts its mass on
  every teacher's answer.

One batched forward pass per (item, label) instead of a decode loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream.simulator import FINDINGS, LABELS


def label_scores(model: Any, tokenizer: Any, prompts: Sequence[str], max_length: int = 256,
                 batch_size: int = 256) -> list[list[float]]:
    """Summed log-probs of each label's trajectory, per prompt (rows follow ``LABELS``)."""
    from distill.apo.encode import encode_pair, score_all
    from distill.experiments.mscxr import label_text

    device = next(model.parameters()).device
    encoded = [encode_pair(tokenizer, p, label_text(label), max_length, max_length - 16)
               for p in prompts for label in LABELS]
    flat = score_all(model, encoded, tokenizer.pad_token_id, batch_size, device)
    k = len(LABELS)
    return [flat[i * k:(i + 1) * k] for i in range(len(prompts))]


def _softmax(row: Sequence[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def student_scores(model_dir: Path, items: Sequence[tuple[str, str, str]],
                   max_length: int = 256) -> dict[str, dict[str, float]]:
    """``{"top1": row, "sampled": row}`` for items ``(finding, prompt, truth)``; each row
    has the five findings and their plain mean."""
    from distill.apo.student import load_student
    from distill.experiments.mscxr import with_mean

    model, tokenizer = load_student(Path(model_dir))
    scores = label_scores(model, tokenizer, [p for _, p, _ in items], max_length)
    hits = {f: [0.0, 0.0, 0] for f in FINDINGS}
    for (finding, _, truth), row in zip(items, scores, strict=True):
        h = hits[finding]
        h[0] += float(LABELS[max(range(len(LABELS)), key=lambda j: row[j])] == truth)
        h[1] += _softmax(row)[LABELS.index(truth)]
        h[2] += 1
    top1 = {f: h[0] / max(h[2], 1) for f, h in hits.items()}
    sampled = {f: h[1] / max(h[2], 1) for f, h in hits.items()}
    return {"top1": with_mean(top1), "sampled": with_mean(sampled)}
