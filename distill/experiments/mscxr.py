"""The MS-CXR-T-shaped task as the benchmark's students see it.

The text benchmark (``distill bench distill``) asks about whole cases
(:func:`case_group`):

* **prompt**: the case's two study lines (:func:`case_prompt`; the instruction paragraph,
  the same for every case, is dropped). The severities are described in words, so the five
  labels can be inferred from the prompt even when no change cue is written, and two cases
  share a prompt only by chance (the benchmark drops such training cases);
* **trajectories**: each teacher's full output, reasoning and final line as written;
* **consensus**: the monitor's per-finding consensus (the reliability-weighted labels the
  service trains on; :func:`positive_labels`), written as one answer string; the positive
  is the best-supported teacher trajectory whose final answer is that string
  (:func:`distill.apo.synthesis.best_supported`), so a negative differs from it in its
  reasoning as well as in its labels.

With ``--unit finding`` the text benchmark asks the same cases one finding at a time
(:func:`finding_groups` with :class:`FindingBlocks`): the prompt is as below, the trajectory
the teacher's own reasoning line for the finding and a one-finding final line.

The multimodal benchmark asks one finding at a time (:func:`finding_groups`):

* **prompt**: ``<finding>: <prior phrase> -> <current phrase>``, the finding's two phrases
  from the case (the instruction paragraph, the same for every case, is dropped);
* **trajectory**: the teacher's answer for that finding as ``Final answer: <label>``, read
  from the teacher's final line; a teacher with no readable label for it (a refusal, a
  format drift) contributes its last line as written, so SFT on all teachers still learns
  refusals and broken formats, as the paper's bootstrap does.

Every method sees the same items and trajectories, so the comparison between methods does
not depend on this choice. Answers are read from the text only (the teachers' structured
``labels`` are never used): :func:`parse_labels` reads ``finding=label`` pairs from the final
line, exactly what the monitor's answer extractor sees; a JSON or bare line therefore
counts as no answer. Consensus is per finding; a whole-string majority of seven noisy
five-finding answers is nearly always a tie. The plain per-finding majority
(:func:`finding_majority`) is kept as an ablation (``positive="majority"``) and as the
test-time vote baseline.

Examples
--------
>>> parse_labels("blah\\nFinal answer: consolidation=stable; pneumonia=worsening")
{'consolidation': 'stable', 'pneumonia': 'worsening'}
>>> parse_labels('{"consolidation": "stable"}') is None
True
>>> finding_majority([{"edema": "stable"}, {"edema": "stable"}, {"edema": "improving"}, None])
{'edema': 'stable'}
>>> case = ("Prior study (day -2): a; b; c; d; e.\\n"
...         "Current study (day 0): A (worse); B; C; D; E (improved).")
>>> finding_prompts(case)["edema"]
'edema: e -> E (improved)'
>>> case_prompt("Instruction.\\n" + case)
'Prior study (day -2): a; b; c; d; e.\\nCurrent study (day 0): A (worse); B; C; D; E (improved).'
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from distill.groups import Consensus, TeacherAnswer, TeacherGroup
from stream.answers import extract_answer
from stream.simulator import FINDINGS, LABELS
from stream.simulator.trajectory import answer_string

_PAIR = re.compile(r"([a-z_]+)\s*=\s*([a-z]+)")


def finding_prompts(prompt: str | None) -> dict[str, str]:
    """One short prompt per finding from a case prompt's two study lines."""
    text = prompt or ""
    lines = {ln.split(":", 1)[0].split(" (")[0]: ln.split(":", 1)[1]
             for ln in text.splitlines() if ln.startswith(("Prior study", "Current study"))}
    prior = [p.strip() for p in lines.get("Prior study", "").strip().rstrip(".").split(";")]
    current = [p.strip() for p in lines.get("Current study", "").strip().rstrip(".").split(";")]
    if len(prior) != len(FINDINGS) or len(current) != len(FINDINGS):
        raise ValueError("not an MS-CXR-T-shaped case prompt (five findings per study line)")
    return {f: f"{f}: {p} -> {c}" for f, p, c in zip(FINDINGS, prior, current, strict=True)}


def short_trajectory(output: str) -> str:
    """A teacher's last non-empty line; a one-line output (a refusal) stays whole."""
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def label_text(label: str) -> str:
    """The trajectory (and the scored option) for one label."""
    return f"Final answer: {label}"


def parse_labels(text: str | None) -> dict[str, str] | None:
    """``finding -> label`` from a final-answer line; None when nothing can be read."""
    answer = extract_answer(text) if text else None
    if answer is None:
        return None
    out = {f: lab for f, lab in _PAIR.findall(answer.lower()) if f in FINDINGS and lab in LABELS}
    return out or None


def finding_majority(labels: Iterable[dict[str, str] | None]) -> dict[str, str]:
    """Per-finding plurality over the teachers that gave a label; ties go to the label
    first in :data:`LABELS` order (deterministic, ground-truth free)."""
    counts: dict[str, Counter[str]] = {f: Counter() for f in FINDINGS}
    for lab in labels:
        for f, v in (lab or {}).items():
            counts[f][v] += 1
    return {f: plurality(counts[f]) for f in FINDINGS if counts[f]}


def plurality(counts: Counter[str]) -> str:
    """The most counted label; ties (and no counts at all) go to the label first in
    :data:`LABELS` order.

    >>> plurality(Counter({"worsening": 2, "stable": 2})), plurality(Counter())
    ('stable', 'improving')
    """
    return max(LABELS, key=lambda lab: (counts[lab], -LABELS.index(lab)))


def case_prompt(prompt: str | None) -> str:
    """The case's two study lines (the shared instruction paragraph dropped)."""
    lines = [ln for ln in (prompt or "").splitlines()
             if ln.startswith(("Prior study", "Current study"))]
    if len(lines) != 2:
        raise ValueError("not an MS-CXR-T-shaped case prompt (a prior and a current study line)")
    return "\n".join(lines)


def full_answer(labels: dict[str, str] | None) -> str | None:
    """The canonical answer string when all five findings have a label, else None."""
    if not labels or any(f not in labels for f in FINDINGS):
        return None
    return answer_string(labels)


POSITIVES = ("consensus", "majority")
"""What a training group's positive states: the monitor's consensus, or the plain majority."""


def positive_labels(group: TeacherGroup, parsed: Iterable[dict[str, str] | None],
                    positive: str = "consensus") -> dict[str, str]:
    """The labels a training group's positive states, per finding.

    ``consensus``: the monitor's reliability-weighted consensus (``group.consensus.labels``,
    decided online from the teachers' parsed answers, never from gold: what ``distill
    train`` learns from), the plain majority of ``parsed`` filling a finding it has no label
    for; ``majority``: the plain majority alone (an ablation).

    >>> g = TeacherGroup("s", "p", "complete", [], Consensus(None, 0, False, {"edema": "stable"}),
    ...                  {})
    >>> votes = [{"edema": "worsening", "pneumonia": "stable"}] * 2
    >>> positive_labels(g, votes), positive_labels(g, votes, "majority")
    ({'pneumonia': 'stable', 'edema': 'stable'}, {'pneumonia': 'stable', 'edema': 'worsening'})
    """
    if positive not in POSITIVES:
        raise ValueError(f"positive: {positive!r} is not one of {list(POSITIVES)}")
    majority = finding_majority(parsed)
    if positive == "majority":
        return majority
    monitor = {f: lab for f, lab in (group.consensus.labels or {}).items()
               if f in FINDINGS and lab in LABELS}
    return {**majority, **monitor}


def case_group(group: TeacherGroup, positive: str = "consensus") -> TeacherGroup:
    """The monitor's group as the text benchmark's training group (module docstring).

    Answers keep the teachers' full outputs; each answer is the canonical five-finding
    string read from the text with the monitor's extractor, the consensus that of
    :func:`positive_labels`. Ground truth is dropped: this is what training stages see.
    """
    parsed = [parse_labels(a.output) for a in group.answers]
    decided = positive_labels(group, parsed, positive)
    consensus = full_answer(decided)
    answers = [TeacherAnswer(a.teacher, a.event_id, a.output, full_answer(lab), lab,
                             a.teacher_version, a.produced_at)
               for a, lab in zip(group.answers, parsed, strict=True)]
    support = sum(1 for a in answers if consensus is not None and a.answer == consensus)
    return TeacherGroup(group.sample_id, case_prompt(group.prompt), group.status, answers,
                        Consensus(consensus, support=support, tie=False, labels=decided),
                        dict(group.drift), None, group.completed_at)


def finding_groups(group: TeacherGroup, blocks: FindingBlocks | None = None,
                   positive: str = "consensus") -> list[TeacherGroup]:
    """The monitor's group as five student groups, one per finding (module docstring).

    Each keeps the teachers' drift state; the consensus is the finding's label in
    :func:`positive_labels`.
    With ``blocks``, a trajectory is the teacher's reasoning line for the finding and a
    one-finding final line (:meth:`FindingBlocks.trajectories`). Ground truth is dropped:
    these groups are what training stages see.
    """
    prompts = finding_prompts(group.prompt)
    parsed = [(a, parse_labels(short_trajectory(a.output))) for a in group.answers]
    decided = positive_labels(group, (lab for _, lab in parsed), positive)
    texts = [blocks.trajectories(a.output, lab) if blocks is not None else
             {f: label_text(lab[f]) if lab and f in lab else short_trajectory(a.output)[:160]
              for f in FINDINGS} for a, lab in parsed]
    out = []
    for f in FINDINGS:
        answers = [TeacherAnswer(a.teacher, f"{a.event_id}/{f}", text[f], (lab or {}).get(f),
                                 None, a.teacher_version, a.produced_at)
                   for (a, lab), text in zip(parsed, texts, strict=True)]
        consensus = decided.get(f)
        support = sum(1 for ans in answers if ans.answer == consensus)
        out.append(TeacherGroup(f"{group.sample_id}/{f}", prompts[f], group.status, answers,
                                Consensus(consensus, support=support, tie=False),
                                dict(group.drift), None, group.completed_at))
    return out


def case_labels(group: TeacherGroup) -> list[dict[str, str] | None]:
    """Each teacher's labels for a case, read from its final line."""
    return [parse_labels(short_trajectory(a.output)) for a in group.answers]


def teacher_top1(groups: Sequence[TeacherGroup], truths: Sequence[dict[str, str]],
                 ) -> dict[str, dict[str, float]]:
    """Per teacher, per finding: share of cases where its label equals the truth (no
    answer counts as wrong), plus ``mean`` over the findings."""
    hits: dict[str, Counter[str]] = {}
    seen: Counter[str] = Counter()
    for g, truth in zip(groups, truths, strict=True):
        for a in g.answers:
            seen[a.teacher] += 1
            h = hits.setdefault(a.teacher, Counter())
            labels = parse_labels(short_trajectory(a.output)) or {}
            for f in FINDINGS:
                h[f] += int(labels.get(f) == truth[f])
    return {t: with_mean({f: hits[t][f] / seen[t] for f in FINDINGS}) for t in sorted(hits)}


def ensemble_top1(groups: Sequence[TeacherGroup], truths: Sequence[dict[str, str]],
                  decide: str = "majority") -> dict[str, float]:
    """Top-1 of the 7 APIs as a test-time ensemble, each case decided per finding as
    :func:`positive_labels` decides (``majority``: the plain vote; ``consensus``: the
    monitor's own consensus)."""
    hits: Counter[str] = Counter()
    for g, truth in zip(groups, truths, strict=True):
        labels = positive_labels(g, case_labels(g), decide)
        for f in FINDINGS:
            hits[f] += int(labels.get(f) == truth[f])
    return with_mean({f: hits[f] / max(len(groups), 1) for f in FINDINGS})


def with_mean(row: dict[str, float]) -> dict[str, float]:
    """Add the plain mean over the five findings, as in the paper's table."""
    return {**row, "mean": sum(row[f] for f in FINDINGS) / len(FINDINGS)}


class FindingBlocks:
    """Each teacher's reasoning for one finding, cut from its whole-case trajectory.

    A teacher writes an optional opener, one line per finding (in :data:`FINDINGS` order,
    the order the instruction asks for), an optional closer and its final line. Openers and
    closers are boilerplate: a line a teacher writes verbatim as its first or last reasoning
    line in at least ``min_share`` of its outputs (fitted on ``(teacher, output)`` pairs; a
    finding's line holds two severities and a verdict, so it repeats far less often). An
    output whose reasoning is not five lines once boilerplate is removed has no blocks
    (:meth:`blocks` returns None) and is trained on by its final line alone.

    >>> fb = FindingBlocks([("t", "Hi.\\na\\nb\\nc\\nd\\ne\\nBye.\\nFinal answer: x")] * 3)
    >>> fb.blocks("Hi.\\n1\\n2\\n3\\n4\\n5\\nBye.\\nFinal answer: x")[-1]
    '5'
    >>> fb.blocks("1\\n2\\n3\\nFinal answer: x") is None
    True
    """

    def __init__(self, outputs: Iterable[tuple[str, str]], min_share: float = 0.1) -> None:
        edges: dict[str, Counter[str]] = {}
        totals: Counter[str] = Counter()
        for teacher, text in outputs:
            lines = _lines(text)[:-1]
            totals[teacher] += 1
            if lines:
                edges.setdefault(teacher, Counter()).update({lines[0], lines[-1]})
        self.boilerplate = {ln for t, seen in edges.items() for ln, n in seen.items()
                            if n >= max(2, min_share * totals[t])}

    def blocks(self, output: str) -> list[str] | None:
        """The five finding lines of ``output`` in :data:`FINDINGS` order, or None."""
        lines = _lines(output)[:-1]
        if lines and lines[0] in self.boilerplate:
            lines = lines[1:]
        if lines and lines[-1] in self.boilerplate:
            lines = lines[:-1]
        return lines if len(lines) == len(FINDINGS) else None

    def trajectories(self, output: str, labels: dict[str, str] | None,
                     ) -> dict[str, str]:
        """Each finding's short trajectory from one output and its final line's ``labels``:
        the finding's reasoning line and a one-finding final line; without a label for the
        finding, the output's last line as written (a refusal, a hidden format); without
        blocks, the final line alone."""
        cut = self.blocks(output)
        out = {}
        for i, f in enumerate(FINDINGS):
            label = (labels or {}).get(f)
            if label is None:
                out[f] = short_trajectory(output)[:160]
                continue
            line = f"Final answer: {f}={label}"
            out[f] = f"{cut[i]}\n{line}" if cut else line
        return out


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
