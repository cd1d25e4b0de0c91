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


def test_label_agreement_equals_the_leave_one_out_definition() -> None:
    import random
    from collections import Counter

    from distill.consensus import label_agreement

    rng = random.Random(0)
    for _ in range(300):
        labels = {f"t{i}": ({f"k{j}": rng.choice(["a", "b", "c", 1]) for j in range(5)
                             if rng.random() < 0.8}  # some teachers leave keys out
                            if rng.random() < 0.9 else None) for i in range(7)}
        got = label_agreement(labels)
        for teacher, mine in labels.items():
            hits = judged = 0
            for key, value in (mine or {}).items():
                others = [str(o[key]) for t, o in labels.items()
                          if t != teacher and o and key in o]
                top = Counter(others).most_common(2)
                if top and not (len(top) > 1 and top[1][1] == top[0][1]):
                    judged += 1
                    hits += top[0][0] == str(value)
            assert got[teacher] == (hits / judged if judged else None)
