"""Consensus over teacher answers: plain majority vote, or a vote weighted per teacher.

Weighted voting is how drift-aware consensus down-weights teachers the detectors flag.
Ties are recorded, not hidden: the winner of a tie is the smallest answer string, so the
result is deterministic.

>>> majority({"a": "yes", "b": "yes", "c": "no", "d": None})
Consensus(answer='yes', support=2, tie=False, labels=None)
>>> majority({"a": "yes", "b": "no"})
Consensus(answer='no', support=1, tie=True, labels=None)
>>> weighted_vote({"a": "yes", "b": "no", "c": "no"}, {"b": 0.2, "c": 0.2})
Consensus(answer='yes', support=1, tie=False, labels=None)
>>> label_majority({"a": {"x": "up", "y": "flat"}, "b": {"x": "up", "y": "down"},
...                 "c": {"x": "down", "y": "down"}, "d": None})
{'x': 'up', 'y': 'down'}
>>> label_agreement({"a": {"x": "up"}, "b": {"x": "up"}, "c": {"x": "down"}})
{'a': None, 'b': None, 'c': 0.0}
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from distill.groups import Consensus


def majority(answers: Mapping[str, str | None],
             labels: dict[str, str] | None = None) -> Consensus:
    """Majority over the teachers that gave an answer; ``labels``, the per-key majority of
    structured answers, is carried along."""
    counts = Counter(a for a in answers.values() if a is not None)
    if not counts:
        return Consensus(None, support=0, tie=False, labels=labels)
    top = max(counts.values())
    winners = sorted(a for a, c in counts.items() if c == top)
    return Consensus(winners[0], support=top, tie=len(winners) > 1, labels=labels)


def weighted_vote(answers: Mapping[str, str | None],
                  weights: Mapping[str, float]) -> Consensus:
    """Vote where teacher ``t`` counts ``weights.get(t, 1.0)``; support is the raw count."""
    score: dict[str, float] = defaultdict(float)
    for teacher, answer in answers.items():
        if answer is not None:
            score[answer] += weights.get(teacher, 1.0)
    if not score:
        return Consensus(None, support=0, tie=False)
    top = max(score.values())
    winners = sorted(a for a, s in score.items() if abs(s - top) < 1e-12)
    support = sum(1 for a in answers.values() if a == winners[0])
    return Consensus(winners[0], support=support, tie=len(winners) > 1)


def label_majority(labels: Mapping[str, Mapping[str, str] | None]) -> dict[str, str] | None:
    """Per-key majority over structured answers (e.g. one label per finding); a tied key
    takes the smallest label so the result is deterministic."""
    return LabelVotes(labels).majority()


def label_agreement(labels: Mapping[str, Mapping[str, str] | None]) -> dict[str, float | None]:
    """Per teacher, the fraction of its labels that equal the strict plurality of the OTHER
    teachers' labels for the same key (keys where the others tie are left out); None when
    no key can be judged. The structured form of leave-one-out agreement: with five
    findings, whole answers rarely have a plurality, single findings almost always do."""
    return LabelVotes(labels).agreement()


class LabelVotes:
    """The label counts of one group, counted once for both the majority and the
    leave-one-out agreement (this runs once per group on the monitor's hot path)."""

    __slots__ = ("counts", "labels")

    def __init__(self, labels: Mapping[str, Mapping[str, str] | None]) -> None:
        self.labels: dict[str, dict[str, str] | None] = {}
        # key -> label -> count; plain dicts (a Counter's __missing__ is a Python call)
        self.counts: dict[str, dict[str, int]] = {}
        for teacher, answer in labels.items():
            if not answer:
                self.labels[teacher] = None
                continue
            mine = self.labels[teacher] = {}
            for key, raw in answer.items():
                value = mine[key] = raw if type(raw) is str else str(raw)
                per_key = self.counts.get(key)
                if per_key is None:
                    self.counts[key] = {value: 1}
                else:
                    per_key[value] = per_key.get(value, 0) + 1

    def majority(self) -> dict[str, str] | None:
        if not self.counts:
            return None
        out = {}
        for key in sorted(self.counts):
            counts = self.counts[key]
            top = max(counts.values())
            out[key] = min(v for v, c in counts.items() if c == top)
        return out

    def agreement(self) -> dict[str, float | None]:
        # the others' strict plurality depends only on (key, own value): one per pair
        others_top: dict[tuple[str, str], str | None] = {}
        for key, counts in self.counts.items():
            for value in counts:
                counts[value] -= 1
                others_top[key, value] = _strict_top(counts)
                counts[value] += 1
        out: dict[str, float | None] = {}
        for teacher, mine in self.labels.items():
            hits, judged = 0, 0
            for key, value in (mine or {}).items():
                top = others_top[key, value]
                if top is not None:
                    judged += 1
                    hits += top == value
            out[teacher] = hits / judged if judged else None
        return out


def _strict_top(counts: dict[str, int]) -> str | None:
    """The value with the strictly highest positive count, or None on a tie or when empty."""
    best, best_n, tied = None, 0, False
    for value, n in counts.items():
        if n > best_n:
            best, best_n, tied = value, n, False
        elif n == best_n and n > 0:
            tied = True
    return None if tied else best


# --- reliability-weighted online consensus -------------------------------------------------

RELIABILITY_STATE_VERSION = 2
OPEN_KEY_CLASSES = 101.0  # prior for an open key: a wrong number rarely matches another's
MAX_CLASSES_EFF = 1000.0  # cap on the effective number of answers of a key
RENORMALISE_BELOW = 1e-150
REFRESH_EVERY = 20  # questions between recomputations of the agreement accuracies
_EMPTY: dict[str, Any] = {}
ANSWER_KEY = "answer"  # the question of a group's whole answer; structured labels add one per key


@dataclass(frozen=True)
class ReliabilityConfig:
    """Priors and memory of :class:`ReliabilityConsensus`. Chosen from principles, not tuned:
    an unseen teacher is believed right a bit more often than not (``prior_accuracy``) on the
    strength of a few cases; evidence fades over ``memory`` questions so a slow change is
    followed; a key with more than ``max_classes`` distinct answers (numbers, free text) has
    no per-class rows, only the one-coin accuracy."""

    prior_accuracy: float = 0.7
    prior_strength: float = 4.0  # pseudo-cases behind prior_accuracy
    class_strength: float = 50.0  # pseudo-cases tying a per-class row to the one-coin accuracy
    correlation_strength: float = 10.0  # pseudo-errors behind "no excess agreement"
    memory: int = 2000
    max_classes: int = 12
    min_teachers: int = 4  # fewer answers: the plurality decides, reliability breaks its ties
    correlation: bool = True

    def __post_init__(self) -> None:
        checks = {"prior_accuracy": 0.0 < self.prior_accuracy < 1.0,
                  "prior_strength": self.prior_strength > 0,
                  "class_strength": self.class_strength > 0,
                  "correlation_strength": self.correlation_strength > 0,
                  "memory": self.memory >= 1, "max_classes": self.max_classes >= 2,
                  "min_teachers": self.min_teachers >= 1}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"reliability.{name}: invalid value {getattr(self, name)!r}")


class _KeyModel:
    """What is known about one question key: per teacher its soft hit count and per-class
    confusion rows, the class prior, and per ordered teacher pair how often the second says
    the same thing when the first is (by the posterior) wrong (the first's wrong mass counts
    questions the second skipped too: a slight underestimate of the overlap, never more).

    Counts fade by a factor per question; rather than touching every count each time, they
    are stored divided by ``scale`` (the product of the factors so far) and renormalised
    when ``scale`` gets small, so an update costs only what it adds."""

    __slots__ = ("acc_cache", "agree", "class_counts", "classes", "closed", "conf", "cross",
                 "hits", "prev", "same", "scale", "since", "wrong")

    def __init__(self) -> None:
        self.classes: list[str] = []  # distinct values seen while the key is closed
        self.closed = True
        self.class_counts: dict[str, float] = {}
        self.hits: dict[str, list[float]] = {}  # teacher -> [cases, soft hits]
        # teacher -> true -> said -> weight; the row total under the key "" (not a label)
        self.conf: dict[str, dict[str, dict[str, float]]] = {}
        self.wrong: dict[str, float] = {}  # teacher -> mass of its answers called wrong
        self.same: dict[str, dict[str, float]] = {}  # u -> v -> of that, v said the same
        self.agree: dict[str, dict[str, list[float]]] = {}  # u < v -> [both answered, agreed]
        # any two teachers' answers to consecutive questions: [pairs, equal] (chance agreement)
        self.cross = [0.0, 0.0]
        self.prev: dict[str, str] = {}  # the previous question's answers
        self.scale = 1.0
        self.acc_cache: dict[str, float] | None = None  # from agreement; None: to compute
        self.since = 0  # questions since acc_cache was computed

    def renormalise(self) -> None:
        """Fold ``scale`` into every stored count (keeps floats far from underflow)."""
        k = self.scale
        for c in self.class_counts:
            self.class_counts[c] *= k
        for counts in self.hits.values():
            counts[0] *= k
            counts[1] *= k
        for u in self.wrong:
            self.wrong[u] *= k
        for row in self.same.values():
            for v in row:
                row[v] *= k
        for pairs in self.agree.values():
            for counts in pairs.values():
                counts[0] *= k
                counts[1] *= k
        self.cross[0] *= k
        self.cross[1] *= k
        for rows in self.conf.values():
            for row in rows.values():
                for said in row:
                    row[said] *= k
        self.scale = 1.0

    def to_state(self) -> dict[str, Any]:
        self.renormalise()
        return {"classes": self.classes, "closed": self.closed,
                "class_counts": self.class_counts, "hits": self.hits, "conf": self.conf,
                "wrong": self.wrong, "same": self.same, "agree": self.agree,
                "cross": self.cross, "prev": self.prev,
                "acc_cache": self.acc_cache, "since": self.since}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> _KeyModel:
        m = cls()
        m.classes, m.closed = list(d["classes"]), bool(d["closed"])
        m.class_counts = dict(d["class_counts"])
        m.hits = {k: list(v) for k, v in d["hits"].items()}
        m.conf = {t: {c: dict(row) for c, row in rows.items()} for t, rows in d["conf"].items()}
        m.wrong = dict(d["wrong"])
        m.same = {u: dict(row) for u, row in d["same"].items()}
        m.agree = {u: {v: list(c) for v, c in row.items()} for u, row in d["agree"].items()}
        # a version-1 state has no chance-agreement counts: they start empty
        m.cross, m.prev = list(d.get("cross", (0.0, 0.0))), dict(d.get("prev", {}))
        cache = d["acc_cache"]
        m.acc_cache, m.since = (None if cache is None else dict(cache)), int(d["since"])
        return m


class ReliabilityConsensus:
    """Online consensus that learns each teacher's reliability from agreement alone.

    Dawid-Skene in spirit, one online EM step per question: the posterior over the answers
    given is the class prior times each teacher's likelihood of what it said under each
    candidate truth (its per-class confusion row, shrunk to its one-coin accuracy), and that
    posterior then updates the counts it was computed from. No gold is read.

    Two guards: :meth:`forget` drops what is known about a teacher (the monitor calls it
    when a detector flags the teacher on its own history: length, vocabulary, answers,
    format, refusals; not on agreement, which is this model's own view); and teachers that
    agree on what the posterior calls wrong more often than independent teachers would are
    counted as partly one voter (each voter's weight is divided by one plus its excess
    agreement with the others voting the same way), so a colluding bloc does not outvote
    reliable dissenters by numbers alone.

    >>> import random
    >>> rng, rc = random.Random(0), ReliabilityConsensus()
    >>> def say(truth, accuracy):
    ...     return truth if rng.random() < accuracy else {"yes": "no", "no": "yes"}[truth]
    >>> for i in range(600):  # "g" is right 95% of the time, "x", "y", "z" 60%
    ...     truth = rng.choice(["yes", "no"])
    ...     _ = rc.decide({"g": say(truth, 0.95), **{t: say(truth, 0.6) for t in "xyz"}})
    >>> round(rc.accuracy("answer", "g"), 1), round(rc.accuracy("answer", "x"), 1)
    (0.9, 0.6)
    >>> majority({"g": "yes", "x": "no", "y": "no", "z": "yes"}).answer  # a tie: smallest
    'no'
    >>> rc.decide({"g": "yes", "x": "no", "y": "no", "z": "yes"}).answer
    'yes'
    >>> rc.forget("g"); rc.accuracy("answer", "g")  # back to the prior
    0.7
    """

    def __init__(self, config: ReliabilityConfig | None = None) -> None:
        self.config = config or ReliabilityConfig()
        self.keys: dict[str, _KeyModel] = {}
        self._keep = 1.0 - 1.0 / self.config.memory

    # -- the decision --------------------------------------------------------------------

    def decide(self, answers: Mapping[str, str | None],
               labels: Mapping[str, Mapping[str, Any] | None] | None = None) -> Consensus:
        """The consensus of one group, then one update of the model with it."""
        posterior = self.observe(ANSWER_KEY, answers)
        out_labels: dict[str, str] | None = None
        if labels:
            per_key: dict[str, dict[str, str]] = {}
            for teacher, lab in labels.items():
                for key, value in (lab or {}).items():
                    if value is not None:
                        per_key.setdefault(str(key), {})[teacher] = str(value)
            out_labels = {}
            for key in sorted(per_key):
                best = self._pick(self.observe(f"label:{key}", per_key[key]), per_key[key])
                if best is not None:
                    out_labels[key] = best[0]
            out_labels = out_labels or None
        best = self._pick(posterior, answers)
        if best is None:
            return Consensus(None, support=0, tie=False, labels=out_labels)
        answer, tie = best
        support = sum(1 for a in answers.values() if a == answer)
        return Consensus(answer, support=support, tie=tie, labels=out_labels)

    def _pick(self, posterior: Mapping[str, float],
              answers: Mapping[str, str | None]) -> tuple[str, bool] | None:
        """The decision: the most probable answer; with fewer than ``min_teachers`` answers
        only among the plurality's (three teachers identify a one-coin model exactly, with
        no redundancy to notice two of them erring together, which real teachers do)."""
        given = [a for a in answers.values() if a]
        if len(given) >= self.config.min_teachers or not posterior:
            return _best(posterior)
        counts = Counter(given)
        top = max(counts.values())
        return _best({a: p for a, p in posterior.items() if counts[a] == top})

    def observe(self, key: str, answers: Mapping[str, str | None]) -> dict[str, float]:
        """Posterior over the values given for ``key``, then the EM update with it."""
        said = {t: a for t, a in answers.items() if a}  # "" is no answer (and a row key)
        if not said:
            return {}
        model = self.keys.get(key)
        if model is None:
            model = self.keys[key] = _KeyModel()
        self._note_classes(model, said.values())
        posterior = self.posterior(model, said)
        self._update(model, said, posterior)
        return posterior

    def posterior(self, model: _KeyModel, said: Mapping[str, str]) -> dict[str, float]:
        cands = sorted(set(said.values()))
        if len(cands) == 1:
            return {cands[0]: 1.0}
        k_eff = self._k_eff(model)
        acc = {t: self._accuracy(model, t) for t in said}
        discount = self._discounts(model, said, acc, k_eff)
        scale, b = model.scale, self.config.class_strength
        total = sum(model.class_counts.values()) * scale
        logp = {}
        for c in cands:
            lp = (math.log((model.class_counts.get(c, 0.0) * scale + 1.0) / (total + k_eff))
                  if model.closed else 0.0)
            for teacher, s in said.items():
                a = acc[teacher]
                base = a if s == c else (1.0 - a) / (k_eff - 1.0)
                if model.closed:
                    row = model.conf.get(teacher, _EMPTY).get(c, _EMPTY)
                    base = ((row.get(s, 0.0) * scale + b * base)
                            / (row.get("", 0.0) * scale + b))
                lp += discount[teacher] * math.log(max(base, 1e-12))
            logp[c] = lp
        top = max(logp.values())
        z = sum(math.exp(v - top) for v in logp.values())
        return {c: math.exp(v - top) / z for c, v in logp.items()}

    def accuracy(self, key: str, teacher: str) -> float:
        """The teacher's current one-coin accuracy estimate for ``key`` (prior if unseen)."""
        model = self.keys.get(key)
        return self._accuracy(model, teacher) if model else self.config.prior_accuracy

    def forget(self, teacher: str) -> None:
        """Drop everything known about ``teacher`` (a new version starts from the prior)."""
        for model in self.keys.values():
            model.hits.pop(teacher, None)
            model.conf.pop(teacher, None)
            model.wrong.pop(teacher, None)
            model.same.pop(teacher, None)
            model.agree.pop(teacher, None)
            for same_row in model.same.values():
                same_row.pop(teacher, None)
            for agree_row in model.agree.values():
                agree_row.pop(teacher, None)
            model.acc_cache = None

    # -- the parts -----------------------------------------------------------------------

    def _note_classes(self, model: _KeyModel, values: Iterable[str]) -> None:
        if not model.closed:
            return
        for v in values:
            if v not in model.classes:
                model.classes.append(v)
        if len(model.classes) > self.config.max_classes:
            model.closed, model.classes, model.conf, model.class_counts = False, [], {}, {}

    def _k_eff(self, model: _KeyModel) -> float:
        """Effective number of answers, ``1 / r`` for the rate ``r`` at which two teachers'
        answers to two different questions are equal (chance agreement: the inverse Simpson
        index of what they say). Counting distinct values instead would let a few stray
        words turn ten options into an "open" key, and treat "0", "1", "2" as rare numbers."""
        prior = float(max(len(model.classes), 2)) if model.closed else OPEN_KEY_CLASSES
        pairs, equal = model.cross
        strength = self.config.prior_strength
        rate = (equal * model.scale + strength / prior) / (pairs * model.scale + strength)
        return min(MAX_CLASSES_EFF, max(2.0, 1.0 / rate))

    def _accuracy(self, model: _KeyModel, teacher: str) -> float:
        """From pairwise agreement (:meth:`_agreement_accuracies`) where three or more
        teachers overlap, else from the EM soft hits; both shrunk to the prior."""
        cache = model.acc_cache
        if cache is None or model.since >= REFRESH_EVERY:
            cache = model.acc_cache = self._agreement_accuracies(model)
            model.since = 0
        cached = cache.get(teacher)
        if cached is not None:
            return cached
        counts = model.hits.get(teacher)
        a = self.config.prior_strength
        if counts is None:
            return self.config.prior_accuracy
        return (counts[1] * model.scale + a * self.config.prior_accuracy) / (
            counts[0] * model.scale + a)

    def _agreement_accuracies(self, model: _KeyModel) -> dict[str, float]:
        """One-coin accuracies from pairwise agreement alone (the triplet method of moments
        for the one-coin Dawid-Skene model): for independent teachers with centred accuracies
        c = (K a - 1) / (K - 1), the centred agreement of i and j is c_i c_j, so
        c_i^2 = m_ij m_ik / m_jk for any two others j, k; summing numerators and
        denominators over all (j, k) first keeps weak pairs (m near 0) from blowing it up.
        No posterior feeds back into it: an online EM step judges each case with the
        parameters of its time, lags, and settles where the early majority put it."""
        r = 1.0 / self._k_eff(model)  # chance agreement
        p0, a0 = self.config.prior_accuracy, self.config.prior_strength
        c0 = (p0 - r) / (1.0 - r)
        teachers = sorted(model.hits)
        m: dict[tuple[str, str], float] = {}
        for i, u in enumerate(teachers):
            row = model.agree.get(u, _EMPTY)
            for v in teachers[i + 1:]:
                n, same = row.get(v, (0.0, 0.0))
                rate = (same * model.scale + a0 * (r + (1.0 - r) * c0 * c0)) / (
                    n * model.scale + a0)
                m[u, v] = m[v, u] = (rate - r) / (1.0 - r)
        out = {}
        for u in teachers:
            others = [t for t in teachers if t != u]
            num = den = 0.0
            for x, j in enumerate(others):
                for k in others[x + 1:]:
                    num += m[u, j] * m[u, k]
                    den += m[j, k]
            if den <= 0.0:
                continue
            c = math.sqrt(min(1.0, max(0.0, num / den)))
            a = r + (1.0 - r) * c
            n = model.hits[u][0] * model.scale
            out[u] = (n * a + a0 * p0) / (n + a0)
        return out

    def _excess(self, model: _KeyModel, u: str, v: str, acc_v: float, k_eff: float) -> float:
        """How much more often ``v`` repeats ``u``'s errors than an independent teacher."""
        same: float | None = model.same.get(u, _EMPTY).get(v)
        if same is None:
            return 0.0
        rate = same / (model.wrong.get(u, 0.0) + self.config.correlation_strength / model.scale)
        chance = (1.0 - acc_v) / (k_eff - 1.0)
        return min(1.0, max(0.0, (rate - chance) / (1.0 - chance)))

    def _discounts(self, model: _KeyModel, said: Mapping[str, str], acc: Mapping[str, float],
                   k_eff: float) -> dict[str, float]:
        out = dict.fromkeys(said, 1.0)
        if not self.config.correlation or not model.same:
            return out
        voters: dict[str, list[str]] = {}
        for t, s in said.items():
            voters.setdefault(s, []).append(t)
        for group in voters.values():
            for i, u in enumerate(group):
                for v in group[i + 1:]:
                    excess = 0.5 * (self._excess(model, u, v, acc[v], k_eff)
                                    + self._excess(model, v, u, acc[u], k_eff))
                    out[u] += excess
                    out[v] += excess
        return {t: 1.0 / x for t, x in out.items()}

    def _update(self, model: _KeyModel, said: Mapping[str, str],
                posterior: Mapping[str, float]) -> None:
        model.since += 1
        model.scale *= self._keep
        if model.scale < RENORMALISE_BELOW:
            model.renormalise()
        inc = 1.0 / model.scale  # one unit of today's evidence in stored units
        for teacher, s in said.items():
            counts = model.hits.get(teacher)
            if counts is None:
                counts = model.hits[teacher] = [0.0, 0.0]
            counts[0] += inc
            counts[1] += inc * posterior.get(s, 0.0)
            if model.closed:
                rows = model.conf.setdefault(teacher, {})
                for c, p in posterior.items():
                    row = rows.get(c)
                    if row is None:
                        row = rows[c] = {}
                    row[s] = row.get(s, 0.0) + inc * p
                    row[""] = row.get("", 0.0) + inc * p
        if model.closed:
            for c, p in posterior.items():
                model.class_counts[c] = model.class_counts.get(c, 0.0) + inc * p
        ordered = sorted(said)
        for i, u in enumerate(ordered):
            pairs = model.agree.setdefault(u, {})
            for v in ordered[i + 1:]:
                counts = pairs.get(v)
                if counts is None:
                    counts = pairs[v] = [0.0, 0.0]
                counts[0] += inc
                if said[u] == said[v]:
                    counts[1] += inc
        self._note_chance(model, said, inc)
        if self.config.correlation and len(said) > 1:
            voters: dict[str, list[str]] = {}
            for t, s in said.items():
                voters.setdefault(s, []).append(t)
            for s, group in voters.items():
                wrong = inc * (1.0 - posterior.get(s, 0.0))
                for u in group:
                    model.wrong[u] = model.wrong.get(u, 0.0) + wrong
                    if len(group) > 1:
                        row = model.same.setdefault(u, {})
                        for v in group:
                            if v != u:
                                row[v] = row.get(v, 0.0) + wrong

    @staticmethod
    def _note_chance(model: _KeyModel, said: Mapping[str, str], inc: float) -> None:
        """Compare this question's answers with the previous question's, teacher with
        other teacher: how often two answers agree with nothing in common but chance."""
        prev = model.prev
        if prev:
            last: dict[str, int] = {}
            for s in prev.values():
                last[s] = last.get(s, 0) + 1
            pairs = equal = 0
            for t, s in said.items():
                mine = prev.get(t)
                pairs += len(prev) - (mine is not None)
                equal += last.get(s, 0) - (mine == s)
            model.cross[0] += inc * pairs
            model.cross[1] += inc * equal
        model.prev = dict(said)

    # -- checkpointing -------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {"version": RELIABILITY_STATE_VERSION,
                "keys": {k: m.to_state() for k, m in self.keys.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("version") not in (1, RELIABILITY_STATE_VERSION):
            raise ValueError(f"consensus state version {state.get('version')!r}, expected "
                             f"{RELIABILITY_STATE_VERSION}")
        self.keys = {k: _KeyModel.from_state(m) for k, m in state["keys"].items()}


def _best(posterior: Mapping[str, float]) -> tuple[str, bool] | None:
    """The most probable value (ties: the smallest string) and whether it was tied."""
    if not posterior:
        return None
    top = max(posterior.values())
    winners = sorted(c for c, p in posterior.items() if top - p < 1e-9)
    return winners[0], len(winners) > 1
