"""The sample join: completion, timeouts, the learned teacher set, bounds, state."""

from __future__ import annotations

from stream.join import SampleJoiner


def feed(j: SampleJoiner, rows: list[tuple[str, str, float]]) -> list[tuple[str, str, int]]:
    out = []
    for sample, teacher, at in rows:
        out += [(s.sample_id, s.status, len(s.answers)) for s in j.add(sample, teacher, {}, at)]
    return out


def test_learned_teachers_do_not_cut_the_first_groups_short() -> None:
    j = SampleJoiner(timeout_s=100)
    rows = [(f"s{i}", t, 10.0 * i) for i in range(30) for t in ("a", "b", "c")]
    closed = feed(j, rows)
    assert all(n == 3 for _, _, n in closed)  # no group closed before hearing from all three
    assert [s for s, status, _ in closed if status == "complete"] == [f"s{i}" for i in range(30)]


def test_group_times_out_when_a_teacher_stops() -> None:
    j = SampleJoiner(expected=["a", "b"], timeout_s=50)
    closed = feed(j, [("s0", "a", 0.0), ("s1", "a", 10.0), ("s1", "b", 11.0), ("s2", "a", 60.0)])
    assert closed == [("s1", "complete", 2), ("s0", "timeout", 1)]


def test_overflow_closes_the_oldest_and_is_counted() -> None:
    j = SampleJoiner(expected=["a", "b"], timeout_s=1e9, max_open=2)
    closed = feed(j, [("s0", "a", 0.0), ("s1", "a", 1.0), ("s2", "a", 2.0)])
    assert closed == [("s0", "timeout", 1)] and j.overflow == 1 and j.open_count == 2


def test_state_round_trip_continues_identically() -> None:
    rows = [(f"s{i // 2}", "ab"[i % 2], float(i)) for i in range(40)]
    a = SampleJoiner(timeout_s=5)
    first = feed(a, rows[:17])
    b = SampleJoiner(timeout_s=5)
    b.load_state(a.to_state())
    assert first + feed(b, rows[17:]) == feed(SampleJoiner(timeout_s=5), rows)
