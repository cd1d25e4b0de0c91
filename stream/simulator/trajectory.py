"""Render one teacher's reasoning trajectory and its final line.

The final line comes in one of :data:`FORMATS`. Only ``final_line`` and ``json_answer``
are read by :func:`stream.answers.extract_answer`; ``json`` and ``bare`` hide the answer
from it, which is what a format drift looks like to the monitor.

>>> labels = {"consolidation": "stable", "pleural_effusion": "worsening",
...           "pneumonia": "stable", "pneumothorax": "improving", "edema": "stable"}
>>> print(final_line(labels, "final_line"))
Final answer: consolidation=stable; pleural_effusion=worsening; pneumonia=stable;
    pneumothorax=improving; edema=stable
>>> print(final_line(labels, "json")[:40])
{"consolidation": "stable", "pleural_eff
"""

from __future__ import annotations

import json
import random

from stream.simulator.case import FINDINGS, Case
from stream.simulator.profiles import Profile

FORMATS = ("final_line", "json", "json_answer", "bare")


def answer_string(labels: dict[str, str]) -> str:
    """The canonical answer: ``consolidation=<x>; ...; edema=<x>`` in finding order."""
    return "; ".join(f"{f}={labels[f]}" for f in FINDINGS)


def final_line(labels: dict[str, str], fmt: str) -> str:
    if fmt == "final_line":
        return f"Final answer: {answer_string(labels)}"
    if fmt == "json":
        return json.dumps({f: labels[f] for f in FINDINGS})
    if fmt == "json_answer":
        return json.dumps({"answer": answer_string(labels)})
    if fmt == "bare":
        return answer_string(labels)
    raise ValueError(f"unknown format {fmt!r}")


def _fillers(rng: random.Random, profile: Profile, verbosity: float) -> list[str]:
    """Padding sentences; at verbosity v > 1 a finding's block is about v times as long."""
    if not profile.fillers:
        return []
    if verbosity <= 1.0:
        mean = profile.filler_mean * verbosity
    else:
        mean = profile.filler_mean + (verbosity - 1.0) * profile.pad_ratio
    count = int(mean) + (rng.random() < mean - int(mean))
    return [rng.choice(profile.fillers) for _ in range(count)]


def _finding_block(rng: random.Random, profile: Profile, case: Case, finding: str,
                   label: str, verbosity: float) -> str:
    sev = profile.severity
    name = profile.names[finding]
    evidence = rng.choice(profile.evidence).format(
        name=name, Name=name[0].upper() + name[1:], prior=sev[case.prior[finding]],
        current=sev[case.current[finding]])
    parts = [evidence, *_fillers(rng, profile, verbosity)]
    if profile.hedges and rng.random() < profile.hedge_rate:
        parts.append(rng.choice(profile.hedges))
    parts.append(rng.choice(profile.verdicts).format(label=profile.labels[label]))
    return profile.bullet + " ".join(parts)


def render(rng: random.Random, profile: Profile, case: Case, labels: dict[str, str],
           verbosity: float, fmt: str) -> str:
    """Opener, one block per finding, closer, final line: one string, lines joined by \\n."""
    lines: list[str] = []
    if profile.openers:
        lines.append(rng.choice(profile.openers))
    lines.extend(_finding_block(rng, profile, case, f, labels[f], verbosity) for f in FINDINGS)
    if profile.closers:
        lines.append(rng.choice(profile.closers))
    lines.append(final_line(labels, fmt))
    return "\n".join(lines)


def refusal(rng: random.Random, profile: Profile) -> str:
    """A refusal: no reasoning, no final answer (extract_answer returns None)."""
    return rng.choice(profile.refusals)
