"""The teacher simulator: determinism, scenario validation, drifts that really change the
stream, the change-point sidecar, the CLI, and a round trip through the real broker."""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer, TopicPartition

from distill.cli import main
from stream.answers import extract_answer
from stream.events import TeacherEvent, decode_event
from stream.exceptions import ScenarioInvalid
from stream.kafka import KafkaSettings, KafkaSink, ensure_topics
from stream.simulator import (
    FINDINGS,
    PRODUCER_TUNING,
    answer_string,
    change_points,
    changepoints_path,
    generate,
    load_scenario,
    produce,
    read_jsonl_gz,
    scenario_from_dict,
    write_jsonl_gz,
)

PAPER_ROWS = {  # DESIGN.md: Con, PE, Pna, Pnx, Ede
    "gpt-5": (.75, .68, .89, .90, .52), "gemini-2.5": (.28, .61, .40, .94, .42),
    "sonnet-4": (.89, .69, .48, .15, .15), "qwen-vl-max": (.54, .65, .40, .95, .64),
    "grok-4": (.43, .41, .36, .97, .61), "glm-4.5v": (.59, .67, .52, .96, .72),
    "moonshot": (.13, .46, .77, .88, .19),
}


def by_teacher(events: list[TeacherEvent]) -> dict[str, list[TeacherEvent]]:
    out: dict[str, list[TeacherEvent]] = defaultdict(list)
    for e in events:
        out[e.teacher].append(e)
    return out


@pytest.fixture(scope="module")
def default_stream() -> dict[str, list[TeacherEvent]]:
    return by_teacher(list(generate(load_scenario("default").with_samples(1600), seed=0)))


@pytest.fixture(scope="module")
def harsh_stream() -> dict[str, list[TeacherEvent]]:
    return by_teacher(list(generate(load_scenario("harsh").with_samples(1200), seed=0)))


def accuracy(events: list[TeacherEvent]) -> float:
    graded = [sum(e.labels[f] == e.ground_truth[f] for f in FINDINGS) / 5
              for e in events if e.labels is not None]
    return statistics.mean(graded)


def words(events: list[TeacherEvent]) -> float:
    return statistics.mean(len(e.output.split()) for e in events)


def refusal_rate(events: list[TeacherEvent]) -> float:
    return sum(e.labels is None for e in events) / len(events)


# --- determinism ---------------------------------------------------------------------------

def test_same_seed_gives_byte_identical_file(tmp_path: Path) -> None:
    scenario = load_scenario("harsh").with_samples(120)
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    assert write_jsonl_gz(generate(scenario, seed=5), a) == 120 * 7
    write_jsonl_gz(generate(scenario, seed=5), b)
    assert a.read_bytes() == b.read_bytes()


def test_different_seed_gives_different_stream() -> None:
    scenario = load_scenario("default").with_samples(20)
    one = [e.to_json_bytes() for e in generate(scenario, seed=1)]
    two = [e.to_json_bytes() for e in generate(scenario, seed=2)]
    assert len(one) == len(two) == 140
    assert sum(x == y for x, y in zip(one, two, strict=True)) == 0


def test_adding_a_teacher_leaves_other_teachers_unchanged() -> None:
    base = load_scenario("paper_nodrift").with_samples(30)
    data = base.model_dump(mode="json")
    data["teachers"].insert(0, {**data["teachers"][2], "name": "newcomer"})
    grown = scenario_from_dict(data)
    before = {e.event_id: e.to_json_bytes() for e in generate(base, seed=9)}
    after = {e.event_id: e.to_json_bytes() for e in generate(grown, seed=9)}
    assert {k: v for k, v in after.items() if "newcomer" not in k} == before


def test_events_are_valid_ordered_and_share_one_case_per_sample() -> None:
    events = list(generate(load_scenario("default").with_samples(40), seed=3))
    assert [decode_event(e.to_json_bytes()) for e in events] == events
    times = [e.produced_at for e in events]
    assert times == sorted(times)
    assert len({e.event_id for e in events}) == len(events)
    per_sample: dict[str, set[tuple[str | None, str]]] = defaultdict(set)
    for e in events:
        per_sample[e.sample_id].add((e.prompt, json.dumps(e.ground_truth, sort_keys=True)))
    assert len(per_sample) == 40 and all(len(v) == 1 for v in per_sample.values())
    assert [e.sample_id for e in events] == sorted(e.sample_id for e in events)


# --- scenarios -----------------------------------------------------------------------------

def test_packaged_scenarios_carry_the_paper_rows() -> None:
    for name in ("default", "paper_nodrift", "harsh"):
        scenario = load_scenario(name)
        rows = {t.name: tuple(t.accuracy.as_dict().values()) for t in scenario.teachers}
        assert rows == PAPER_ROWS
        assert scenario.samples == 2000
    assert load_scenario("paper_nodrift").drift == []
    kinds = {d.kind for d in load_scenario("harsh").drift}
    assert kinds == {"accuracy", "verbosity", "refusal", "format", "version_swap"}


ACC = ("accuracy = { consolidation = 0.5, pleural_effusion = 0.5, pneumonia = 0.5, "
       "pneumothorax = 0.5, edema = 0.5 }")
SCENARIO_TOML = """
name = "tiny"
samples = 100
[[teachers]]
name = "a"
version = "a-1"
profile = "terse"
{ACC}
[[teachers]]
name = "b"
version = "b-1"
profile = "casual"
{ACC}
[[drift]]
teacher = "a"
at = 50
kind = "refusal"
params = { rate = 0.5 }
""".replace("{ACC}", ACC)


@pytest.mark.parametrize(("old", "new", "field"), [
    ("edema = 0.5 }\n[[teachers]]", "edema = 1.5 }\n[[teachers]]", "teachers[0].accuracy.edema"),
    ('profile = "casual"', 'profile = "shouty"', "teachers[1].profile"),
    ('teacher = "a"', 'teacher = "zed"', "drift[0].teacher"),
    ("at = 50", "at = 100", "drift[0].at"),
    ('kind = "refusal"', 'kind = "mood"', "drift[0].kind"),
    ("rate = 0.5", "rate = 2", "drift[0].params.rate"),
    ("rate = 0.5", "rat = 0.5", "drift[0].params.rate"),
    ('kind = "refusal"', 'kind = "format"', "drift[0].params.format"),
    ('name = "b"', 'name = "a"', "teachers[1].name"),
    ("samples = 100", "samples = 0", "samples"),
    ("samples = 100", "samples = 100\ncolour = 1", "colour"),
    (", edema = 0.5 }\n[[teachers]]", " }\n[[teachers]]", "teachers[0].accuracy.edema"),
])
def test_scenario_validation_names_the_bad_field(tmp_path: Path, old: str, new: str,
                                                 field: str) -> None:
    path = tmp_path / "bad.toml"
    assert old in SCENARIO_TOML
    path.write_text(SCENARIO_TOML.replace(old, new, 1))
    with pytest.raises(ScenarioInvalid) as info:
        load_scenario(path)
    assert info.value.field == field
    assert field in str(info.value)


def test_good_scenario_file_loads_and_unknown_name_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(SCENARIO_TOML)
    assert [t.name for t in load_scenario(path).teachers] == ["a", "b"]
    with pytest.raises(ScenarioInvalid, match="no such file or packaged scenario"):
        load_scenario("no-such-scenario")


# --- drifts change the generated distribution; stable teachers stay put ---------------------

def test_accuracy_drift_lowers_accuracy_only_after_it_starts(default_stream) -> None:
    glm = default_stream["glm-4.5v"]
    assert accuracy(glm[:800]) == pytest.approx(0.692, abs=0.04)
    assert accuracy(glm[800:]) == pytest.approx(0.692 - 0.35, abs=0.04)
    qwen = default_stream["qwen-vl-max"]
    assert accuracy(qwen[:1200]) - accuracy(qwen[1200:]) > 0.25
    wrong = [(e.labels[f], e.ground_truth[f]) for e in qwen[1200:] for f in FINDINGS
             if e.labels[f] != e.ground_truth[f]]
    # wrong_label = "stable": an error says stable unless stable is the truth
    assert all(said == "stable" for said, truth in wrong if truth != "stable")
    assert len(wrong) > 1000


def test_verbosity_drift_lengthens_outputs(default_stream) -> None:
    grok = default_stream["grok-4"]
    assert words(grok[1000:]) / words(grok[:1000]) > 1.8


def test_refusal_onset_gives_refusals_without_answers(default_stream) -> None:
    moon = default_stream["moonshot"]
    assert refusal_rate(moon[:1000]) == 0
    assert refusal_rate(moon[1000:]) == pytest.approx(0.4, abs=0.05)
    refused = [e for e in moon if e.labels is None]
    assert all(e.answer is None and extract_answer(e.output) is None for e in refused)
    assert all("cannot" in e.output or "can't" in e.output for e in refused)


def test_stable_teachers_stay_stationary(default_stream) -> None:
    for name in ("gpt-5", "gemini-2.5", "sonnet-4"):
        events = default_stream[name]
        first, second = events[:1000], events[1000:]
        assert accuracy(first) == pytest.approx(accuracy(second), abs=0.03)
        assert words(first) == pytest.approx(words(second), rel=0.03)
        assert refusal_rate(events) == 0
        assert accuracy(events) == pytest.approx(statistics.mean(PAPER_ROWS[name]), abs=0.03)


def test_format_drift_hides_the_answer_from_the_parser(harsh_stream) -> None:
    glm = harsh_stream["glm-4.5v"]
    assert all(extract_answer(e.output) == answer_string(e.labels) for e in glm[:800])
    assert all(extract_answer(e.output) is None and e.answer is None for e in glm[800:])
    # the answer is in the JSON line, but no event says more than the parser can read
    assert all(set(json.loads(e.output.splitlines()[-1])) == set(FINDINGS) for e in glm[800:])
    assert all(e.labels is None for e in glm[800:])


def test_version_swap_changes_version_style_and_vocabulary(harsh_stream) -> None:
    sonnet = harsh_stream["sonnet-4"]
    assert {e.teacher_version for e in sonnet[:1000]} == {"claude-sonnet-4-20250514"}
    assert {e.teacher_version for e in sonnet[1000:]} == {"claude-sonnet-4-preview-0925"}
    vocab_before = {w for e in sonnet[900:1000] for w in e.output.lower().split()}
    vocab_after = {w for e in sonnet[1000:1100] for w in e.output.lower().split()}
    assert len(vocab_before & vocab_after) / len(vocab_before | vocab_after) < 0.5
    pnx = [e.labels["pneumothorax"] == e.ground_truth["pneumothorax"] for e in sonnet[1000:]]
    assert statistics.mean(pnx) < 0.1


def test_refusal_ramp_rises_gradually(harsh_stream) -> None:
    qwen = harsh_stream["qwen-vl-max"]
    early, ramping, full = qwen[:500], qwen[500:650], qwen[800:1100]
    assert refusal_rate(early) == 0
    assert 0.05 < refusal_rate(ramping) < 0.35
    assert refusal_rate(full) == pytest.approx(0.6, abs=0.07)


def test_final_answer_line_is_what_extract_answer_reads(default_stream) -> None:
    for events in default_stream.values():
        for e in events[::7]:
            if e.labels is None:
                continue
            assert e.output.splitlines()[-1] == f"Final answer: {e.answer}"
            assert extract_answer(e.output) == e.answer == answer_string(e.labels)


# --- change points, CLI ---------------------------------------------------------------------

def test_change_points_follow_the_schedule_and_the_cut() -> None:
    scenario = load_scenario("default")
    points = change_points(scenario)
    assert [(p["teacher"], p["kind"], p["sample_index"]) for p in points] == [
        ("glm-4.5v", "accuracy", 800), ("grok-4", "verbosity", 1000),
        ("moonshot", "refusal", 1000), ("qwen-vl-max", "accuracy", 1200)]
    assert all(p["event_index_of_teacher"] == p["sample_index"] for p in points)
    assert points[2]["params"] == {"rate": 0.4}
    assert [p["teacher"] for p in change_points(scenario.with_samples(1000))] == ["glm-4.5v"]


def test_cli_simulate_writes_events_and_change_point_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(SCENARIO_TOML)
    out = tmp_path / "run" / "sim.jsonl.gz"
    result = CliRunner().invoke(main, ["simulate", "--scenario", str(path), "--seed", "4",
                                       "--samples", "80", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "160 events" in result.output
    scenario = load_scenario(path).with_samples(80)
    assert list(read_jsonl_gz(out)) == [e.to_json_bytes() for e in generate(scenario, seed=4)]
    sidecar = json.loads(changepoints_path(out).read_text())
    assert sidecar == change_points(scenario) == [
        {"teacher": "a", "kind": "refusal", "sample_index": 50, "event_index_of_teacher": 50,
         "over": 0, "params": {"rate": 0.5}}]
    # the sidecar's index is where the teacher's events change: teacher a's first refusal
    events = [decode_event(line) for line in read_jsonl_gz(out)]
    a_events = [e for e in events if e.teacher == "a"]
    assert next(i for i, e in enumerate(a_events) if e.labels is None) in range(50, 56)
    assert all(e.labels is not None for e in events if e.teacher == "b")


def test_cli_bad_scenario_exits_2_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(SCENARIO_TOML.replace("rate = 0.5", "rate = -1"))
    result = CliRunner().invoke(main, ["simulate", "--scenario", str(path),
                                       "--out", str(tmp_path / "x.jsonl.gz")])
    assert result.exit_code == 2
    assert "drift[0].params.rate" in result.output
    assert not (tmp_path / "x.jsonl.gz").exists()


def test_cli_needs_exactly_one_destination() -> None:
    result = CliRunner().invoke(main, ["simulate"])
    assert result.exit_code == 2
    assert "exactly one of --out" in result.output


# --- through the real broker ---------------------------------------------------------------

def consume_all(bootstrap_servers: str, topic: str, want: int) -> dict[int, list]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers.split(","),
                             enable_auto_commit=False, consumer_timeout_ms=10_000)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    got: dict[int, list] = defaultdict(list)
    for message in consumer:
        got[message.partition].append(message)
        if sum(map(len, got.values())) >= want:
            break
    consumer.close()
    return got


@pytest.mark.broker
def test_produce_to_broker_round_trips_events_keyed_by_sample(
        kafka_settings: KafkaSettings, topic: str) -> None:
    ensure_topics(kafka_settings, {topic: 3})
    events = list(generate(load_scenario("default").with_samples(30), seed=2))
    sink = KafkaSink(kafka_settings, **PRODUCER_TUNING)
    began = time.monotonic()
    assert produce(events, sink, topic, rate=2000) == 210
    assert time.monotonic() - began >= 209 / 2000  # paced, not as fast as possible
    sink.close()
    got = consume_all(kafka_settings.bootstrap_servers, topic, 210)
    decoded = {p: [decode_event(m.value) for m in ms] for p, ms in got.items()}
    assert sorted(e.event_id for es in decoded.values() for e in es) == \
        sorted(e.event_id for e in events)
    assert {e.event_id: e for es in decoded.values() for e in es} == \
        {e.event_id: e for e in events}
    partitions_of_sample: dict[str, set[int]] = defaultdict(set)
    for p, ms in got.items():
        for m in ms:
            assert m.key == json.loads(m.value)["sample_id"].encode()
            partitions_of_sample[m.key.decode()].add(p)
    assert all(len(ps) == 1 for ps in partitions_of_sample.values())
    assert len({p for ps in partitions_of_sample.values() for p in ps}) > 1
    for es in decoded.values():  # per partition, the generator's order is kept
        index = {e.event_id: i for i, e in enumerate(events)}
        assert [index[e.event_id] for e in es] == sorted(index[e.event_id] for e in es)


@pytest.mark.broker
def test_cli_simulate_to_topic(bootstrap_servers: str, topic: str, tmp_path: Path) -> None:
    cps = tmp_path / "cps.json"
    result = CliRunner().invoke(main, [
        "simulate", "--scenario", "harsh", "--samples", "10", "--topic", topic,
        "--bootstrap-servers", bootstrap_servers, "--partitions", "2",
        "--changepoints", str(cps)])
    assert result.exit_code == 0, result.output
    got = consume_all(bootstrap_servers, topic, 70)
    assert sum(map(len, got.values())) == 70
    assert json.loads(cps.read_text()) == []  # the harsh drifts start after sample 10


# --- confusion matrices and blocs ----------------------------------------------------------

def _wrong(events: list[TeacherEvent]) -> list[list[bool]]:
    return [[e.labels is not None and e.labels[f] != e.ground_truth[f] for f in FINDINGS]
            for e in events]


def _error_correlation(a: list[TeacherEvent], b: list[TeacherEvent]) -> float:
    """Mean over findings of the correlation of the two teachers' error indicators (per
    finding: accuracies differ by finding, which alone would correlate pooled errors)."""
    wa, wb = _wrong(a), _wrong(b)
    return statistics.fmean(
        statistics.correlation([float(r[k]) for r in wa], [float(r[k]) for r in wb])
        for k in range(len(FINDINGS)))


def test_confusion_matrix_decides_the_wrong_label() -> None:
    events = by_teacher(list(generate(load_scenario("confusion").with_samples(400), seed=2)))
    swaps = [(e.ground_truth[f], e.labels[f]) for e in events["sonnet-4"] for f in FINDINGS
             if e.labels[f] != e.ground_truth[f] and e.ground_truth[f] != "stable"]
    assert len(swaps) > 100  # sonnet reads the direction backwards when wrong
    assert all({t, s} == {"improving", "worsening"} for t, s in swaps)


def test_bloc_members_err_on_the_same_cases_with_the_same_label() -> None:
    events = by_teacher(list(generate(load_scenario("collusion").with_samples(1000), seed=4)))
    before, after = slice(0, 600), slice(600, 1000)
    qwen, grok, gpt = events["qwen-vl-max"], events["grok-4"], events["gpt-5"]
    assert _error_correlation(qwen[after], grok[after]) > 0.5
    assert abs(_error_correlation(qwen[before], grok[before])) < 0.1
    assert abs(_error_correlation(qwen[after], gpt[after])) < 0.1
    both = [(a.ground_truth[f], a.labels[f], b.labels[f])
            for a, b in zip(qwen[after], grok[after], strict=True)
            for f in FINDINGS if a.labels[f] != a.ground_truth[f] != b.labels[f]]
    assert len(both) > 100 and all(x == y for _, x, y in both)  # the shared wrong draw
    assert all(x == "stable" for t, x, _ in both if t != "stable")


def test_bloc_with_an_unknown_teacher_names_the_field() -> None:
    data = {"samples": 10, "teachers": [
        {"name": n, "version": "v", "profile": "terse",
         "accuracy": dict.fromkeys(FINDINGS, 0.5)} for n in ("a", "b")],
        "blocs": [{"name": "x", "teachers": ["a", "c"]}]}
    with pytest.raises(ScenarioInvalid) as info:
        scenario_from_dict(data, name="x")
    assert info.value.field == "blocs[0].teachers"
