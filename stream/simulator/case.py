"""One MS-CXR-T-shaped case: a prior/current chest X-ray pair described in text, with the
true change (improving / stable / worsening) of five findings.

Each finding has a severity 0..3 on both studies; the label fixes their order (improving:
current < prior, stable: equal, worsening: current > prior). With probability ``cue_rate``
the current study also names the change in words ("increased", "unchanged", ...), which is
what a small student can learn to read.

>>> import random
>>> case = make_case(random.Random(7), "s-1", [0.3, 0.4, 0.3], cue_rate=1.0)
>>> sorted(case.truth) == sorted(FINDINGS)
True
>>> all((case.current[f] > case.prior[f]) == (case.truth[f] == "worsening") for f in FINDINGS)
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FINDINGS = ("consolidation", "pleural_effusion", "pneumonia", "pneumothorax", "edema")
LABELS = ("improving", "stable", "worsening")

_PHRASES = {
    "consolidation": ("no focal consolidation", "faint {side} basilar opacity",
                      "patchy {side} lower lobe consolidation", "dense {side} lobar consolidation"),
    "pleural_effusion": ("no pleural effusion", "trace {side} pleural effusion",
                         "small {side} pleural effusion", "large {side} pleural effusion"),
    "pneumonia": ("no radiographic evidence of pneumonia", "subtle {side} airspace change "
                  "suspicious for early pneumonia", "{side} airspace disease compatible with "
                  "pneumonia", "extensive multifocal pneumonia"),
    "pneumothorax": ("no pneumothorax", "tiny {side} apical pneumothorax",
                     "small {side} pneumothorax", "large {side} pneumothorax"),
    "edema": ("no pulmonary edema", "mild interstitial edema", "moderate pulmonary edema",
              "severe alveolar edema"),
}
_SIDES = {"consolidation": ("left", "right", "bilateral"),
          "pleural_effusion": ("left", "right", "bilateral"),
          "pneumonia": ("left", "right", "bilateral"),
          "pneumothorax": ("left", "right"), "edema": ("",)}
_CUES = {"improving": ("decreased", "improved", "smaller than before", "resolving"),
         "stable": ("unchanged", "stable", "no interval change", "similar to prior"),
         "worsening": ("increased", "worse", "larger than before", "progressed")}
_INSTRUCTION = (
    "Compare the prior and current chest radiographs of the same patient. For each finding "
    "(consolidation, pleural effusion, pneumonia, pneumothorax, edema) decide whether it is "
    "improving, stable or worsening. Reason briefly, then give one line per the format "
    "'Final answer: consolidation=<label>; pleural_effusion=<label>; pneumonia=<label>; "
    "pneumothorax=<label>; edema=<label>'."
)


@dataclass(frozen=True, slots=True)
class Case:
    """The shared part of a sample: what every teacher sees, and the truth."""

    sample_id: str
    prompt: str
    truth: dict[str, str]
    prior: dict[str, int]
    current: dict[str, int]


def _severities(rng: random.Random, label: str) -> tuple[int, int]:
    if label == "stable":
        s = rng.randrange(4)
        return s, s
    lo = rng.randrange(3)
    hi = rng.randrange(lo + 1, 4)
    return (hi, lo) if label == "improving" else (lo, hi)


def _phrase(finding: str, severity: int, side: str) -> str:
    return _PHRASES[finding][severity].format(side=side).replace("  ", " ")


def make_case(rng: random.Random, sample_id: str, prior_weights: list[float],
              cue_rate: float) -> Case:
    """Draw one case from ``rng`` (seeded per sample, shared by all teachers)."""
    truth: dict[str, str] = {}
    prior: dict[str, int] = {}
    current: dict[str, int] = {}
    before, after = [], []
    for finding in FINDINGS:
        label = rng.choices(LABELS, weights=prior_weights)[0]
        side = rng.choice(_SIDES[finding])
        p, c = _severities(rng, label)
        cue = rng.choice(_CUES[label])
        truth[finding], prior[finding], current[finding] = label, p, c
        before.append(_phrase(finding, p, side))
        now = _phrase(finding, c, side)
        after.append(f"{now} ({cue})" if rng.random() < cue_rate else now)
    gap = rng.randrange(1, 15)
    prompt = (f"{_INSTRUCTION}\nPrior study (day -{gap}): {'; '.join(before)}.\n"
              f"Current study (day 0): {'; '.join(after)}.")
    return Case(sample_id, prompt, truth, prior, current)
