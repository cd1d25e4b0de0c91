"""Gold never reaches a training or gating path, and events say only what outputs say.

Every group here carries a sentinel ground truth that no teacher ever wrote; the sentinel
must not appear in anything the training side builds (consensus, synthesis prompts,
preference groups, the gate's answer options) nor in the monitor's consensus.
"""

from __future__ import annotations

from dataclasses import replace

from distill.apo.config import APOConfig
from distill.apo.evaluate import _questions
from distill.apo.synthesis import synthesis_prompt
from distill.apo.training import make_preference_groups
from distill.monitor.pipeline import MonitorPipeline, PipelineConfig
from stream.answers import extract_answer, parse_labels
from stream.simulator import generate, load_scenario

SENTINEL = "zz-gold-sentinel-zz"


def _gold_groups():
    """Simulated groups (their truth replaced by the sentinel before the monitor sees them),
    so the consensus, the labels and the drift states are the real pipeline's."""
    scenario = load_scenario("harsh").with_samples(60)
    teachers = tuple(t.name for t in scenario.teachers)
    events = [replace(e, ground_truth=dict.fromkeys(e.ground_truth, SENTINEL))
              for e in generate(scenario, 3)]
    return MonitorPipeline(PipelineConfig(expected_teachers=teachers)).run(events).groups


def test_gold_reaches_no_training_or_gating_path(tmp_path) -> None:
    groups = _gold_groups()
    assert groups and all(SENTINEL in str(g.ground_truth) for g in groups)
    # the monitor's consensus
    assert not any(SENTINEL in str(g.consensus) for g in groups)
    # synthesis prompts and preference groups (positives, negatives, weights)
    config = APOConfig(output_dir=str(tmp_path), synthesis="best_teacher")  # no model here;
    # "generate" has the student write from exactly the synthesis prompts checked above
    prompts = [synthesis_prompt(g, config.synthesis_template,
                                config.synthesis_trajectory_template,
                                config.synthesis_max_chars_per_teacher) for g in groups]
    assert not any(SENTINEL in p for p in prompts)
    built = make_preference_groups(groups, config)
    assert built and not any(SENTINEL in repr(p) for p in built)
    # the gate's candidates: teachers' answers only
    for g in groups:
        for _key, options, consensus, truth in _questions(g):
            assert SENTINEL not in options and truth is None and consensus != SENTINEL


def test_events_carry_labels_only_when_the_output_states_them() -> None:
    # harsh: a format drift to an unparsable JSON line, refusals, version swaps
    events = list(generate(load_scenario("harsh").with_samples(1000), seed=0))
    hidden = [e for e in events if extract_answer(e.output) is None]
    assert len(hidden) > 100
    assert all(e.labels is None and e.answer is None for e in hidden)
    shown = [e for e in events if extract_answer(e.output) is not None]
    assert all(e.labels == parse_labels(extract_answer(e.output)) for e in shown)
