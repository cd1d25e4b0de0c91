"""Teacher groups for tests and benchmarks, without a broker or a monitor (a fixture: not
part of the installed package; benchmarks put tests/ on sys.path to import it).

* :func:`parity_groups`: a tiny hand-made task ("is x even?") where the first teachers are
  right and the last ones have drifted (wrong answer, drift evidence 1).
* :func:`simulated_groups`: the MS-CXR-T-shaped simulator's events joined by sample, with
  a plain majority consensus (drift evidence left at 0: no detectors run here).

Examples
--------
>>> g = parity_groups(1, n_teachers=7, n_drifted=2)[0]
>>> g.prompt, g.consensus.answer, [a.answer for a in g.answers][-2:]
('Is 59 even?', 'no', ['yes', 'yes'])
"""

from __future__ import annotations

import random
from collections import defaultdict
from itertools import islice

from distill.consensus import majority
from distill.groups import DriftState, TeacherAnswer, TeacherGroup

STYLES = (
    "{x} ends in {d}, so it is {kind}. Final answer: {a}",
    "Let us check: {x} divided by 2 leaves {r}. It is {kind}. Final answer: {a}",
    "The last digit of {x} is {d}; {kind} numbers end that way. Final answer: {a}",
    "{x} = 2 * {h} + {r}, which makes it {kind}. Final answer: {a}",
)


def parity_groups(n: int, n_teachers: int = 7, n_drifted: int = 2, seed: int = 0,
                  reasoning_steps: int = 0) -> list[TeacherGroup]:
    """``n`` groups; teachers ``t{n_teachers-n_drifted}..`` answer wrongly and drift.

    ``reasoning_steps`` > 0 prepends that many filler reasoning sentences to every
    trajectory, for realistic lengths (about 60 characters each) without the simulator.
    """
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = rng.randint(10, 99)
        truth = "yes" if x % 2 == 0 else "no"
        answers, drift = [], {}
        for t in range(n_teachers):
            drifted = t >= n_teachers - n_drifted
            a = ("no" if truth == "yes" else "yes") if drifted else truth
            kind = "even" if a == "yes" else "odd"
            text = STYLES[(t + i) % len(STYLES)].format(x=x, d=x % 10, r=x % 2, h=x // 2,
                                                          kind=kind, a=a)
            steps = [f"Step {k + 1}: teacher {t} looks at digit {(x + k * (t + 1)) % 10} of "
                     f"{x} again." for k in range(reasoning_steps)]
            text = " ".join([*steps, text])
            answers.append(TeacherAnswer(f"t{t}", f"e{i}-{t}", text, a))
            drift[f"t{t}"] = DriftState(1.0 if drifted else 0.0, drifted)
        consensus = majority({a.teacher: a.answer for a in answers})
        out.append(TeacherGroup(f"s{i}", f"Is {x} even?", "complete", answers, consensus,
                                drift, ground_truth=truth))
    return out


def simulated_groups(n: int, scenario: str = "default", seed: int = 0) -> list[TeacherGroup]:
    """The first ``n`` complete samples of a simulator scenario, as teacher groups."""
    from stream.simulator import generate, load_scenario

    sc = load_scenario(scenario)
    teachers = len(sc.teachers) if hasattr(sc, "teachers") else 7
    by_sample: dict[str, list] = defaultdict(list)
    order: list[str] = []
    for event in islice(generate(sc, seed=seed), n * teachers * 2):
        if event.sample_id not in by_sample:
            order.append(event.sample_id)
        by_sample[event.sample_id].append(event)
    out = []
    for sid in order[:n]:
        events = by_sample[sid]
        answers = [TeacherAnswer(e.teacher, e.event_id, e.output, e.answer, e.labels,
                                 e.teacher_version) for e in events]
        out.append(TeacherGroup(
            sid, events[0].prompt, "complete", answers,
            majority({a.teacher: a.answer for a in answers}),
            {a.teacher: DriftState(0.0, False) for a in answers},
            ground_truth=events[0].ground_truth))
    return out
