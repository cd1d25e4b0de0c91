"""The event generator: a scenario and a seed in, a deterministic stream of teacher events out.

Every random draw comes from a ``random.Random`` seeded by a hash of (seed, sample index,
teacher) -- or (seed, sample index) for the case itself -- so the same scenario and seed
give byte-identical events, and adding or removing a teacher leaves the other teachers'
outputs unchanged. Events are ordered by sample; within a sample, by each teacher's
simulated latency (a seeded draw), so ``produced_at`` never goes backwards.

Each teacher draws its five correctness coins, its five wrong-label coins and its refusal
coin first, before any style draw, so two scenarios that differ only in a drift see the
same coins: a drift changes exactly what it schedules. A bloc's shared coins come from
their own stream (seed, sample index, bloc), so adding a bloc leaves every other draw as
it was. An event carries ``labels`` only when its output states them in a form the
monitor's answer parser reads (a refusal or a hidden format has none).

>>> from stream.simulator.scenario import load_scenario
>>> scenario = load_scenario("default").with_samples(2)
>>> events = list(generate(scenario, seed=1))
>>> len(events), events[0].sample_id, events[0].teacher, events[0].produced_at.isoformat()
(14, 'default-1-000000', 'qwen-vl-max', '2026-01-01T00:00:05.702000+00:00')
>>> print(events[0].output)
Consol mod->large. worse.
PE trace->large. worse.
PNA none->large. same.
PTX trace->trace. same.
Edema large->mod. better.
Final answer: consolidation=worsening; pleural_effusion=worsening; pneumonia=stable;
    pneumothorax=stable; edema=improving
>>> events[0].labels["pneumonia"], events[0].ground_truth["pneumonia"]
('stable', 'worsening')
>>> [cp["teacher"] for cp in change_points(load_scenario("default"))]
['glm-4.5v', 'grok-4', 'moonshot', 'qwen-vl-max']
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from stream.answers import parse_labels
from stream.events import TeacherEvent
from stream.simulator.case import FINDINGS, LABELS, Case, make_case
from stream.simulator.profiles import PROFILES
from stream.simulator.scenario import (
    AccuracyParams,
    Confusion,
    DriftSpec,
    FormatParams,
    RefusalParams,
    Scenario,
    TeacherSpec,
    VerbosityParams,
    VersionSwapParams,
)
from stream.simulator.trajectory import answer_string, refusal, render

LATENCY_FRACTION = 0.5  # a teacher answers within half a sample interval


@dataclass(frozen=True, slots=True)
class TeacherState:
    """What a teacher is like at one sample index, after the drifts scheduled so far."""

    profile: str
    version: str
    accuracy: dict[str, float]
    wrong_label: dict[str, str | None]
    confusion: dict[str, dict[str, float]] | None
    verbosity: float
    refusal_rate: float
    format: str


def seeded_rng(*parts: object) -> random.Random:
    """A ``random.Random`` seeded by a stable hash of ``parts`` (not Python's salted hash)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def base_state(spec: TeacherSpec) -> TeacherState:
    return TeacherState(spec.profile, spec.version, spec.accuracy.as_dict(),
                        dict.fromkeys(FINDINGS, spec.wrong_label), _plain(spec.confusion),
                        spec.verbosity,
                        spec.refusal_rate, spec.format)


def _plain(confusion: Confusion | None) -> dict[str, dict[str, float]] | None:
    """A scenario's confusion matrix keyed by plain label strings."""
    if confusion is None:
        return None
    return {str(t): {str(w): float(x) for w, x in row.items()} for t, row in confusion.items()}


def _ramp(old: float, new: float, progress: float) -> float:
    return old + (new - old) * progress


def apply_drift(state: TeacherState, drift: DriftSpec, progress: float) -> TeacherState:
    """The state after ``drift``; ``progress`` in (0, 1] is how far a ramp has got."""
    p = drift.typed_params()
    if isinstance(p, AccuracyParams):
        acc, wrong = dict(state.accuracy), dict(state.wrong_label)
        for f in FINDINGS if p.finding == "all" else (p.finding,):
            target = p.accuracy if p.accuracy is not None else acc[f] + (p.delta or 0.0)
            acc[f] = _ramp(acc[f], min(1.0, max(0.0, target)), progress)
            if p.wrong_label is not None:
                wrong[f] = p.wrong_label
        confusion = _plain(p.confusion) if p.confusion is not None else state.confusion
        return replace(state, accuracy=acc, wrong_label=wrong, confusion=confusion)
    if isinstance(p, VerbosityParams):
        return replace(state, verbosity=_ramp(state.verbosity, state.verbosity * p.factor,
                                              progress))
    if isinstance(p, RefusalParams):
        return replace(state, refusal_rate=_ramp(state.refusal_rate, p.rate, progress))
    if isinstance(p, FormatParams):
        return replace(state, format=p.format)
    assert isinstance(p, VersionSwapParams)
    return replace(state, profile=p.profile, version=p.version,
                   accuracy={**state.accuracy, **{str(f): a for f, a in p.accuracy.items()}})


class _States:
    """Teacher states per sample index, memoised on the set of active drifts and ramps."""

    def __init__(self, scenario: Scenario) -> None:
        self._specs = {t.name: t for t in scenario.teachers}
        self._drifts = {t.name: sorted((d for d in scenario.drift if d.teacher == t.name),
                                       key=lambda d: d.at) for t in scenario.teachers}
        self._memo: dict[tuple[str, tuple[tuple[int, float], ...]], TeacherState] = {}

    def at(self, teacher: str, index: int) -> TeacherState:
        active = tuple((k, 1.0 if d.over == 0 else min(1.0, (index - d.at + 1) / d.over))
                       for k, d in enumerate(self._drifts[teacher]) if d.at <= index)
        key = (teacher, active)
        state = self._memo.get(key)
        if state is None:
            state = base_state(self._specs[teacher])
            for k, progress in active:
                state = apply_drift(state, self._drifts[teacher][k], progress)
            self._memo[key] = state
        return state


def state_at(scenario: Scenario, teacher: str, index: int) -> TeacherState:
    """The teacher's state at sample ``index`` (for tests, reports and benchmarks)."""
    return _States(scenario).at(teacher, index)


def _labels(truth: dict[str, str], state: TeacherState, coins: list[float],
            picks: list[float]) -> dict[str, str]:
    out: dict[str, str] = {}
    for f, u, v in zip(FINDINGS, coins, picks, strict=True):
        if u < state.accuracy[f]:
            out[f] = truth[f]
            continue
        out[f] = wrong_label(truth[f], state.wrong_label[f], state.confusion, v)
    return out


def wrong_label(truth: str, fixed: str | None, confusion: dict[str, dict[str, float]] | None,
                pick: float) -> str:
    """What a wrong teacher says: its fixed wrong label, else a draw from its confusion row
    for the true label, else one of the other labels uniformly (``pick`` in [0, 1))."""
    if fixed is not None and fixed != truth:
        return fixed
    row = (confusion or {}).get(truth)
    if row:
        total, acc = sum(row.values()), 0.0
        for label in LABELS:
            acc += row.get(label, 0.0)
            if pick * total < acc:
                return label
    others = [label for label in LABELS if label != truth]
    return others[int(pick * len(others))]


def bloc_coins(scenario: Scenario, seed: int, index: int
               ) -> dict[str, tuple[list[bool], list[float], list[float]]]:
    """Per bloc member: which findings use the bloc's shared draws, and those draws."""
    out = {}
    for bloc in scenario.blocs:
        if index < bloc.at:
            continue
        rng = seeded_rng(seed, index, "\x00bloc", bloc.name)
        coins = [rng.random() for _ in FINDINGS]
        picks = [rng.random() for _ in FINDINGS]
        shared = [rng.random() < bloc.strength for _ in FINDINGS]
        for teacher in bloc.teachers:
            out[teacher] = (shared, coins, picks)
    return out


def teacher_event(scenario: Scenario, seed: int, index: int, case: Case, teacher: str,
                  state: TeacherState,
                  bloc: tuple[list[bool], list[float], list[float]] | None = None
                  ) -> tuple[float, TeacherEvent]:
    """One teacher's answer to one case, with its latency in seconds; ``bloc`` (from
    :func:`bloc_coins`) replaces the teacher's own draws where its bloc shares them."""
    rng = seeded_rng(seed, index, teacher)
    coins = [rng.random() for _ in FINDINGS]
    picks = [rng.random() for _ in FINDINGS]
    if bloc is not None:
        shared, bloc_c, bloc_p = bloc
        coins = [b if use else own for use, b, own in zip(shared, bloc_c, coins, strict=True)]
        picks = [b if use else own for use, b, own in zip(shared, bloc_p, picks, strict=True)]
    refuse = rng.random() < state.refusal_rate
    latency = 1.0 + rng.random() * (scenario.interval_s * LATENCY_FRACTION - 1.0)
    latency = round(latency, 3)
    profile = PROFILES[state.profile]
    labels: dict[str, str] | None = None
    answer: str | None = None
    if refuse:
        output = refusal(rng, profile)
    else:
        said = _labels(case.truth, state, coins, picks)
        output = render(rng, profile, case, said, state.verbosity, state.format)
        if state.format in ("final_line", "json_answer"):
            answer = answer_string(said)
            labels = parse_labels(answer)  # what the output states, as the parser reads it
    produced_at = scenario.start + timedelta(seconds=index * scenario.interval_s + latency)
    event = TeacherEvent(
        event_id=f"{case.sample_id}-{teacher}", sample_id=case.sample_id, teacher=teacher,
        output=output, produced_at=produced_at, teacher_version=state.version,
        prompt=case.prompt, answer=answer, labels=labels, ground_truth=dict(case.truth),
        meta={"scenario": scenario.name, "seed": seed, "sample_index": index},
    )
    return latency, event


def sample_case(scenario: Scenario, seed: int, index: int) -> Case:
    """The case of sample ``index``: the same for every teacher."""
    rng = seeded_rng(seed, index, "\x00case")
    return make_case(rng, f"{scenario.name}-{seed}-{index:06d}",
                     scenario.task.prior_weights(), scenario.task.cue_rate)


def generate(scenario: Scenario, seed: int = 0,
             images_dir: Path | None = None) -> Iterator[TeacherEvent]:
    """All events of the scenario: ``samples`` x teachers, ordered by sample then latency.

    ``images_dir`` turns on the multimodal mode (:mod:`stream.simulator.images`): each case's
    two studies are written there and referenced from its events, relative to it.
    """
    states = _States(scenario)
    order = {t.name: k for k, t in enumerate(scenario.teachers)}
    for index in range(scenario.samples):
        case = sample_case(scenario, seed, index)
        refs = None
        if images_dir is not None:
            from stream.simulator.images import render_case

            case, refs = render_case(case, images_dir, seeded_rng(seed, index, "\x00image"),
                                     scenario.task.cue_rate)
        blocs = bloc_coins(scenario, seed, index) if scenario.blocs else {}
        answered = [teacher_event(scenario, seed, index, case, name, states.at(name, index),
                                  blocs.get(name))
                    for name in order]
        answered.sort(key=lambda le: (le[0], order[le[1].teacher]))
        for _, event in answered:
            yield event if refs is None else replace(event, images=refs)


def change_points(scenario: Scenario) -> list[dict[str, Any]]:
    """Ground-truth change points: one per scheduled drift that starts within the stream.

    ``event_index_of_teacher`` counts that teacher's events from 0; every teacher answers
    every sample, so it equals ``sample_index``.
    """
    order = {t.name: k for k, t in enumerate(scenario.teachers)}
    drifts = sorted((d for d in scenario.drift if d.at < scenario.samples),
                    key=lambda d: (d.at, order[d.teacher]))
    return [{"teacher": d.teacher, "kind": d.kind, "sample_index": d.at,
             "event_index_of_teacher": d.at, "over": d.over,
             "params": d.typed_params().model_dump(exclude_none=True)} for d in drifts]
