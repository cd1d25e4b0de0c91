"""A seeded, deterministic multi-teacher simulator for an MS-CXR-T-shaped task.

Teachers compare a prior and a current chest radiograph (described in text) and grade five
findings as improving, stable or worsening, each in its own writing style and with its own
per-finding accuracy. A scenario (TOML) schedules drifts: accuracy changes, verbosity,
refusals, format changes and version swaps. Used by ``distill simulate``, the demo, tests
and the benchmarks::

    scenario = load_scenario("default")
    events = generate(scenario, seed=0)          # Iterator[TeacherEvent]
    write_jsonl_gz(events, "sim.jsonl.gz")
    write_changepoints(change_points(scenario), changepoints_path("sim.jsonl.gz"))
"""

from stream.simulator.case import FINDINGS, LABELS
from stream.simulator.generator import change_points, generate, state_at
from stream.simulator.output import (
    PRODUCER_TUNING,
    changepoints_path,
    produce,
    read_jsonl_gz,
    write_changepoints,
    write_jsonl_gz,
)
from stream.simulator.profiles import PROFILES
from stream.simulator.scenario import (
    Scenario,
    load_scenario,
    packaged_scenarios,
    scenario_from_dict,
)
from stream.simulator.trajectory import FORMATS, answer_string

__all__ = [
    "FINDINGS",
    "FORMATS",
    "LABELS",
    "PRODUCER_TUNING",
    "PROFILES",
    "Scenario",
    "answer_string",
    "change_points",
    "changepoints_path",
    "generate",
    "load_scenario",
    "packaged_scenarios",
    "produce",
    "read_jsonl_gz",
    "scenario_from_dict",
    "state_at",
    "write_changepoints",
    "write_jsonl_gz",
]
