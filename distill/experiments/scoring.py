"""How the students are scored.

Whole cases (``distill bench distill``, :func:`answer_scores`):

* **Generated** (the primary metric): the student writes its answer to the case prompt
  (greedy decoding, up to ``max_new_tokens``), and the answer is read with the monitor's
  own extractor (:func:`distill.experiments.mscxr.parse_labels`, built on
  :func:`stream.answers.extract_answer`). A finding without a readable label is wrong.
* **Likelihood** (second column): after the student's own reasoning (its generated text up
  to its last ``Final answer`` line), the final line is written finding by finding; for each
  finding the three labels are scored (summed log-probability of the label's tokens) and
  the most likely one is taken and kept for the findings after it. It says whether the
  student prefers the right label even when its decoded answer is unreadable.
* **Probe agreement**: on probe cases (never trained on, no ground truth), the share of
  findings where the generated label equals the teachers' per-finding majority: what a
  promotion gate would see.

Per finding, three options (:func:`student_scores`, the multimodal benchmark's text-only
comparison): the likelihood of ``Final answer: <label>`` after a one-finding prompt, its
Top-1 and the probability mass on the true label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream.simulator import FINDINGS, LABELS

_FINAL = "Final answer:"


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


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
             max_prompt_tokens: int, batch_size: int = 128) -> list[str]:
    """Greedy answers, batched (the synthesis stage's generator)."""
    from distill.apo.synthesis import hf_generate_fn

    fn = hf_generate_fn(model, tokenizer, max_new_tokens, max_prompt_tokens)
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        out.extend(fn(list(prompts[start:start + batch_size])))
    return out


def reasoning(text: str) -> str:
    """The generated text before its last final-answer line (all of it if there is none).

    >>> reasoning("a\\nb\\nFinal answer: edema=stable")
    'a\\nb'
    """
    cut = text.rfind(_FINAL)
    return (text[:cut] if cut >= 0 else text).rstrip()


def _likeliest(model: Any, tokenizer: Any, contexts: Sequence[list[int]],
               batch_size: int = 64) -> list[str]:
    """Per context (token ids), the label of :data:`LABELS` whose tokens are most likely
    to follow it."""
    from distill.apo.encode import Encoded, score_all

    device = next(model.parameters()).device
    encoded = [Encoded(ctx + tokenizer(lab, add_special_tokens=False).input_ids, len(ctx))
               for ctx in contexts for lab in LABELS]
    flat = score_all(model, encoded, tokenizer.pad_token_id, batch_size, device)
    k = len(LABELS)
    return [LABELS[max(range(k), key=lambda j: flat[i * k + j])] for i in range(len(contexts))]


def likelihood_labels(model: Any, tokenizer: Any, prompts: Sequence[str],
                      texts: Sequence[str], batch_size: int = 64) -> list[dict[str, str]]:
    """Per case, the most likely label of each finding after the student's own reasoning,
    the final line built finding by finding (module docstring)."""
    from distill.apo.encode import prompt_ids

    heads = [prompt_ids(tokenizer, p) for p in prompts]
    picks: list[dict[str, str]] = [{} for _ in prompts]
    for f in FINDINGS:
        contexts = []
        for head, text, done in zip(heads, texts, picks, strict=True):
            line = "; ".join(f"{g}={done[g]}" for g in FINDINGS if g in done)
            prefix = f"{reasoning(text)}\n{_FINAL} {line}{'; ' if line else ''}{f}="
            contexts.append(head + tokenizer(prefix, add_special_tokens=False).input_ids)
        for done, label in zip(picks, _likeliest(model, tokenizer, contexts, batch_size),
                               strict=True):
            done[f] = label
    return picks


def _accuracy(labels: Sequence[dict[str, str] | None], truths: Sequence[dict[str, str]],
              ) -> dict[str, float]:
    from distill.experiments.mscxr import with_mean

    n = max(len(truths), 1)
    return with_mean({f: sum((lab or {}).get(f) == t[f] for lab, t in zip(
        labels, truths, strict=True)) / n for f in FINDINGS})


def finding_likelihood(model: Any, tokenizer: Any, prompts: Sequence[str],
                       texts: Sequence[str], findings: Sequence[str], batch_size: int = 64,
                       ) -> list[str]:
    """Per one-finding prompt, the most likely label after the student's own reasoning
    (its text up to the last final line, then ``Final answer: <finding>=``)."""
    from distill.apo.encode import prompt_ids

    contexts = []
    for prompt, text, f in zip(prompts, texts, findings, strict=True):
        before = reasoning(text)
        contexts.append(prompt_ids(tokenizer, prompt) + tokenizer(
            f"{before}\n{_FINAL} {f}=" if before else f"{_FINAL} {f}=",
            add_special_tokens=False).input_ids)
    return _likeliest(model, tokenizer, contexts, batch_size)


def _case_answers(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
                  max_prompt_tokens: int, scored: int,
                  ) -> tuple[list[str], list[Any], list[dict[str, str]]]:
    """Whole cases: the texts, their read labels, and the likelihood labels of the first
    ``scored`` cases."""
    from distill.experiments.mscxr import parse_labels

    texts = generate(model, tokenizer, prompts, max_new_tokens, max_prompt_tokens)
    likely = likelihood_labels(model, tokenizer, prompts[:scored], texts[:scored])
    return texts, [parse_labels(t) for t in texts], likely


def _finding_answers(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
                     max_prompt_tokens: int, scored: int,
                     ) -> tuple[list[str], list[Any], list[dict[str, str]]]:
    """One question per finding, the answers put back together per case (the texts of a
    case joined by a blank line); likelihood labels for the first ``scored`` cases."""
    from distill.experiments.mscxr import finding_prompts, parse_labels

    asked = [(i, f, q) for i, p in enumerate(prompts) for f, q in finding_prompts(p).items()]
    qs, fs = [q for _, _, q in asked], [f for _, f, _ in asked]
    texts = generate(model, tokenizer, qs, max_new_tokens, max_prompt_tokens)
    n = len(FINDINGS) * scored
    likely = finding_likelihood(model, tokenizer, qs[:n], texts[:n], fs[:n])
    parsed: list[dict[str, str]] = [{} for _ in prompts]
    picks: list[dict[str, str]] = [{} for _ in prompts[:scored]]
    joined: list[list[str]] = [[] for _ in prompts]
    for k, ((i, f, _), text) in enumerate(zip(asked, texts, strict=True)):
        label = (parse_labels(text) or {}).get(f)
        if label is not None:
            parsed[i][f] = label
        if k < n:
            picks[i][f] = likely[k]
        joined[i].append(text)
    return ["\n\n".join(j) for j in joined], parsed, picks


def answer_scores(model_dir: Path, prompts: Sequence[str], truths: Sequence[dict[str, str]],
                  max_new_tokens: int, max_prompt_tokens: int,
                  probe: Sequence[str] = (), probe_votes: Sequence[dict[str, str]] = (),
                  unit: str = "case") -> dict[str, Any]:
    """Generated and likelihood Top-1 rows on whole cases, the share of test answers with a
    readable label for every finding, probe agreement, and two sample answers. ``unit``:
    ask each case whole, or finding by finding (:func:`_finding_answers`)."""
    from distill.apo.student import load_student

    model, tokenizer = load_student(Path(model_dir))
    answers = _finding_answers if unit == "finding" else _case_answers
    texts, parsed, likely = answers(model, tokenizer, [*prompts, *probe], max_new_tokens,
                                    max_prompt_tokens, len(prompts))
    test, probed = parsed[:len(prompts)], parsed[len(prompts):]
    agree = [(lab or {}).get(f) == vote[f] for lab, vote in zip(probed, probe_votes,
                                                                  strict=True)
             for f in FINDINGS if f in vote]
    return {"generated": _accuracy(test, truths),
            "likelihood": _accuracy(likely, truths),
            "answered": sum(len(lab or {}) == len(FINDINGS) for lab in test)
            / max(len(test), 1),
            "probe_agreement": sum(agree) / len(agree) if agree else None,
            "samples": texts[:2]}
