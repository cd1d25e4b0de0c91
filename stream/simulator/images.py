"""The simulator's multimodal mode: two small synthetic "studies" per case, whose pixels hold
the answer, written as PNG files and referenced from the events by URI and SHA-256.

Each study is a grey panel of five horizontal bands, one per finding (in :data:`FINDINGS`
order); a band's brightness is that finding's severity (0..3) on that study, plus a little
seeded noise. The label is the change between the two studies: darker now is improving,
the same is stable, brighter is worsening. Teachers (multimodal models) see the images, so
they keep their per-finding accuracy rows and drifts unchanged.

In this mode the case text no longer describes the findings: each finding is named with
"(see images)", and with probability ``cue_rate`` the current study also states the change
in words ("increased", ...). ``cue_rate = 0`` leaves the images as the only source of the
answer; the text keeps the two study lines, so per-finding prompts are cut the same way.

>>> import random
>>> from stream.simulator.case import make_case
>>> case = make_case(random.Random(7), "s-1", [0.3, 0.4, 0.3], cue_rate=1.0)
>>> text = multimodal_prompt(case, random.Random(1), cue_rate=0.0)
>>> text.splitlines()[-1].startswith("Current study (day 0): consolidation (see images);")
True
>>> study = render_study(case.prior, random.Random(2))
>>> study.size, band_level(study, "edema") == case.prior["edema"]
((16, 40), True)
"""

from __future__ import annotations

import io
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

from stream.images import ImageRef, image_ref
from stream.simulator.case import _CUES, _INSTRUCTION, FINDINGS, Case

BAND_HEIGHT = 8  # pixels per finding band
STUDY_WIDTH = 16
LEVELS = (40, 100, 160, 220)  # grey level of severity 0..3; gaps far above the noise
NOISE = 12  # +- uniform noise per pixel
STUDIES = ("prior", "current")


def render_study(severity: dict[str, int], rng: random.Random) -> Any:
    """One study as a greyscale PIL image: a band per finding, brightness = severity."""
    from PIL import Image  # the `multimodal` extra

    pixels = []
    for finding in FINDINGS:
        level = LEVELS[severity[finding]]
        pixels += [max(0, min(255, level + rng.randint(-NOISE, NOISE)))
                   for _ in range(BAND_HEIGHT * STUDY_WIDTH)]
    return Image.frombytes("L", (STUDY_WIDTH, BAND_HEIGHT * len(FINDINGS)), bytes(pixels))


def band_level(study: Any, finding: str) -> int:
    """The severity a band shows (its mean brightness, nearest level): the decoder of tests."""
    k = FINDINGS.index(finding)
    band = study.crop((0, k * BAND_HEIGHT, STUDY_WIDTH, (k + 1) * BAND_HEIGHT))
    values = band.convert("L").tobytes()
    mean = sum(values) / len(values)
    return min(range(len(LEVELS)), key=lambda i: abs(LEVELS[i] - mean))


def finding_pair(studies: list[Any], finding: str) -> Any:
    """The finding's band from both studies side by side (prior left, current right).

    What a per-finding question shows the student: one small image that holds exactly the
    evidence for that finding.
    """
    from PIL import Image

    k = FINDINGS.index(finding)
    box = (0, k * BAND_HEIGHT, STUDY_WIDTH, (k + 1) * BAND_HEIGHT)
    pair = Image.new(studies[0].mode, (STUDY_WIDTH * len(studies), BAND_HEIGHT))
    for i, study in enumerate(studies):
        pair.paste(study.crop(box), (i * STUDY_WIDTH, 0))
    return pair


def multimodal_prompt(case: Case, rng: random.Random, cue_rate: float) -> str:
    """The case text without the findings' descriptions (module docstring)."""
    prior = [f"{f.replace('_', ' ')} (see images)" for f in FINDINGS]
    current = []
    for f in FINDINGS:
        cue = rng.choice(_CUES[case.truth[f]])
        said = rng.random() < cue_rate
        current.append(f"{f.replace('_', ' ')} (see images{', ' + cue if said else ''})")
    gap = case.prompt.split("(day -", 1)[1].split(")", 1)[0] if "(day -" in case.prompt else "1"
    return (f"{_INSTRUCTION}\nPrior study (day -{gap}): {'; '.join(prior)}.\n"
            f"Current study (day 0): {'; '.join(current)}.")


def png_bytes(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)  # no timestamp chunk: same pixels, same bytes
    return out.getvalue()


def render_case(case: Case, directory: Path, rng: random.Random,
                cue_rate: float) -> tuple[Case, tuple[ImageRef, ...]]:
    """Write the case's two studies to ``directory`` (``<sample_id>-prior.png``, ...) and
    return the case with its multimodal text and the references (URIs relative to it)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    refs = []
    for name, severity in zip(STUDIES, (case.prior, case.current), strict=True):
        path = directory / f"{case.sample_id}-{name}.png"
        path.write_bytes(png_bytes(render_study(severity, rng)))
        refs.append(image_ref(path, uri=path.name))
    return replace(case, prompt=multimodal_prompt(case, rng, cue_rate)), tuple(refs)


def with_cue_rate(scenario: Any, cue_rate: float) -> Any:
    """The scenario with its task's ``cue_rate`` replaced (validated by the scenario model)."""
    from stream.simulator.scenario import TaskSpec

    task = TaskSpec.model_validate({**scenario.task.model_dump(), "cue_rate": cue_rate})
    return scenario.model_copy(update={"task": task})
