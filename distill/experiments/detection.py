"""Detection benchmark on real version switches: the bank as the monitor runs it, scored
like Cerqueira et al. (KDD 2026, the definitions CapyMOA uses), against River baselines.

Scoring, per chain (change points are the watched teacher's event indices):

- a change is detected when the watched teacher's first alarm at or after it falls
  within ``delta_max`` events (and before the next change); delay = alarm - change;
- every other alarm on the watched teacher is a false alarm;
- every alarm on a peer (a stable teacher) is a false alarm;
- a chain that cannot be built fails the run (:class:`ChainUnbuildable`) unless skips are
  allowed; its switches then count as misses of every method.

The ``oracle`` column is what the data allows offline: a permutation MMD test
(:func:`detectors.mmd.mmd_permutation_test`) on the bank's own joint vectors of the watched
teacher, ``ORACLE_WINDOW`` events before against as many after each change (fewer when a
segment is shorter), at ``ORACLE_ALPHA``; its controls are two adjacent windows of the
first version, where any flag is a false positive.

>>> s = score_alarms([120, 130, 900], [100, 600], n_events=1000, delta_max=300)
>>> s.detected, s.delays, s.false_alarms
(1, [20], 2)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detectors.bank import BankConfig, joint_vector
from detectors.mmd import mmd_permutation_test
from stream.datapack import DriftStream, build_drift_stream, load_chains, read_pack
from stream.signals import event_signals, leave_one_out_agreement, peer_signals

BASELINES = ("river_adwin_length", "river_kswin_length")
ORACLE_WINDOW = 200
ORACLE_ALPHA = 0.01


class ChainUnbuildable(ValueError):
    """A chain of the chains file cannot be built from its pack (skips not allowed)."""


@dataclass
class Score:
    """Alarms of one teacher (or one chain's watched teacher) against its change points."""

    changes: int = 0
    detected: int = 0
    delays: list[int] = field(default_factory=list)
    false_alarms: int = 0
    events: int = 0
    per_change: list[int | None] = field(default_factory=list)  # delay, None if missed


def score_alarms(alarms: Iterable[int], change_points: list[int], n_events: int,
                 delta_max: int) -> Score:
    """Score alarm indices against change points (an empty list scores a stable teacher)."""
    alarms = sorted(alarms)
    used: set[int] = set()
    per_change: list[int | None] = []
    bounds = [*change_points, n_events]
    for k, cp in enumerate(change_points):
        end = min(cp + delta_max, bounds[k + 1])
        first = next((i for i, a in enumerate(alarms) if a >= cp), None)
        if first is not None and alarms[first] < end:
            used.add(first)
            per_change.append(alarms[first] - cp)
        else:
            per_change.append(None)
    delays = [d for d in per_change if d is not None]
    return Score(changes=len(change_points), detected=len(delays), delays=delays,
                 false_alarms=len(alarms) - len(used), events=n_events, per_change=per_change)


@dataclass
class ChainResult:
    """One method on one chain."""

    chain: str
    method: str
    watched: Score
    peers: Score
    seconds: float
    updates: int
    change_points: list[int]
    alarms: list[int]
    signals: list[str]
    peers_names: list[str]

    def row(self) -> dict[str, Any]:
        d = {"chain": self.chain, "method": self.method, "watched": asdict(self.watched),
             "peers": asdict(self.peers), "seconds": self.seconds,
             "updates_per_s": self.updates / self.seconds if self.seconds else None,
             "change_points": self.change_points, "alarms": self.alarms,
             "alarm_signals": self.signals, "peer_teachers": self.peers_names}
        return d


def chain_id(entry: Mapping[str, Any]) -> str:
    return " -> ".join(entry["chain"]) + f" [{entry.get('task', '*')}]"


def run_bank(stream: DriftStream, config: BankConfig, partitions: int = 1,
             embedder: Any = None) -> tuple[dict[str, list[int]], dict[str, list[str]], float]:
    """Alarm indices per teacher from the monitor's ingest and detect stages (signals, join,
    agreement, embeddings where ``config.embedding_dim``), the stream spread over
    ``partitions`` input partitions as ``serve`` does."""
    from distill.monitor.pipeline import PartitionedPipeline, PipelineConfig

    pipe = PartitionedPipeline(PipelineConfig(
        bank=config, expected_teachers=(stream.watched, *stream.peers), embedder=embedder),
        partitions)
    alarms: dict[str, list[int]] = {t: [] for t in (stream.watched, *stream.peers)}
    signals: dict[str, list[str]] = {t: [] for t in alarms}
    t0 = time.perf_counter()
    out = pipe.run(stream.events)
    seconds = time.perf_counter() - t0
    for rec in out.alerts:
        alarms[rec.teacher].append(rec.index)
        signals[rec.teacher].append(rec.signal)
    return alarms, signals, seconds


def run_baseline(stream: DriftStream, method: str, seed: int) -> tuple[dict[str, list[int]], float]:
    """River ADWIN or KSWIN with defaults on each teacher's raw length (words)."""
    from river import drift

    make: Callable[[], Any] = (drift.ADWIN if method == "river_adwin_length"
                               else lambda: drift.KSWIN(seed=seed))
    dets: dict[str, Any] = {}
    counts: dict[str, int] = {}
    alarms: dict[str, list[int]] = {t: [] for t in (stream.watched, *stream.peers)}
    t0 = time.perf_counter()
    for ev in stream.events:
        det = dets.get(ev.teacher)
        if det is None:
            det = dets[ev.teacher] = make()
        i = counts[ev.teacher] = counts.get(ev.teacher, -1) + 1
        det.update(len(ev.output.split()))
        if det.drift_detected:
            alarms[ev.teacher].append(i)
    return alarms, time.perf_counter() - t0


def _result(stream: DriftStream, name: str, method: str, alarms: dict[str, list[int]],
            signals: dict[str, list[str]] | None, seconds: float, delta_max: int) -> ChainResult:
    n_per = len(stream.events) // (1 + len(stream.peers))
    watched = score_alarms(alarms[stream.watched], stream.change_points, n_per, delta_max)
    peers = Score()
    for p in stream.peers:
        s = score_alarms(alarms[p], [], n_per, delta_max)
        peers.false_alarms += s.false_alarms
        peers.events += s.events
    return ChainResult(name, method, watched, peers, seconds, len(stream.events),
                       stream.change_points, alarms[stream.watched],
                       (signals or {}).get(stream.watched, []), list(stream.peers))


def run_benchmark(data: Path, chains_file: Path, config: BankConfig, seed: int = 0,
                  delta_max: int = 300, baselines: bool = True, oracle: bool = True,
                  allow_skip: bool = False,
                  progress: Callable[[str], None] | None = None,
                  partitions: int = 1, embedder: Any = None) -> dict[str, Any]:
    """Every chain through the bank, the baselines and the oracle; rows plus skipped
    chains, whose switches count as misses in the aggregate. ``embedder`` (its dimension
    is ``config.embedding_dim``) adds the content embeddings, to the oracle's vectors too."""
    if bool(config.embedding_dim) != (embedder is not None):
        raise ValueError("config.embedding_dim needs an embedder of that dimension")
    rows: list[ChainResult] = []
    skipped: list[dict[str, Any]] = []
    oracles: list[dict[str, Any]] = []
    packs: dict[str, list[dict[str, Any]]] = {}
    for entry in load_chains(chains_file):
        name = chain_id(entry)
        path = data / entry["file"]
        if progress:
            progress(name)
        try:
            if not path.exists():
                raise ValueError(f"file not found: {path}")
            if entry["file"] not in packs:
                packs[entry["file"]] = list(read_pack(path))
            stream = build_drift_stream(packs[entry["file"]], entry, seed=seed)
        except ValueError as exc:
            if not allow_skip:
                raise ChainUnbuildable(f"chain {name}: {exc}") from exc
            skipped.append({"chain": name, "reason": str(exc),
                            "changes": max(0, len(entry.get("chain", [])) - 1)})
            continue
        alarms, signals, seconds = run_bank(stream, config, partitions, embedder)
        rows.append(_result(stream, name, "bank", alarms, signals, seconds, delta_max))
        for method in BASELINES if baselines else ():
            b_alarms, b_seconds = run_baseline(stream, method, seed)
            rows.append(_result(stream, name, method, b_alarms, None, b_seconds, delta_max))
        if oracle:
            oracles.append({"chain": name, **run_oracle(stream, config, seed, embedder)})
    methods = ["bank", *(BASELINES if baselines else ())]
    missed = sum(s["changes"] for s in skipped)
    return {
        "seed": seed, "delta_max": delta_max, "partitions": partitions,
        "embedder": getattr(embedder, "name", None),
        "config": asdict(config), "rows": [r.row() for r in rows],
        "aggregate": {m: aggregate([r for r in rows if r.method == m], missed)
                      for m in methods},
        "paired": {m: paired(rows, m) for m in methods[1:]},
        "oracle": oracle_aggregate(oracles, missed) if oracle else None,
        "oracle_rows": oracles,
        "skipped": skipped,
    }


def watched_vectors(stream: DriftStream, config: BankConfig, embedder: Any = None
                    ) -> np.ndarray:
    """The watched teacher's joint vectors in its event order: the bank's ``own`` vector
    and its ``peer`` vector for the same sample, side by side."""
    by_sample: dict[str, dict[str, dict[str, Any]]] = {}
    order: list[str] = []
    vecs = (embedder.encode([ev.output for ev in stream.events]) if embedder is not None
            else None)
    for i, ev in enumerate(stream.events):
        sig: dict[str, Any] = dict(event_signals(ev, config.hist_bins))
        if vecs is not None:
            sig["embedding"] = tuple(vecs[i].tolist())
        by_sample.setdefault(ev.sample_id, {})[ev.teacher] = sig
        if ev.teacher == stream.watched:
            order.append(ev.sample_id)
    rows = []
    for sid in order:
        group = by_sample[sid]
        agree = leave_one_out_agreement({t: s["answer"] for t, s in group.items()})
        rel = peer_signals({t: s["length"] for t, s in group.items()},
                           {t: s.get("embedding") for t, s in group.items()})
        mine = group[stream.watched]
        peer = {"agreement": agree.get(stream.watched), **rel[stream.watched]}
        rows.append(joint_vector(config, "own", mine) + joint_vector(config, "peer", peer))
    return np.asarray(rows, dtype=float)


def run_oracle(stream: DriftStream, config: BankConfig, seed: int, embedder: Any = None
               ) -> dict[str, Any]:
    """The offline permutation test on fixed windows around each change, and controls."""
    x = watched_vectors(stream, config, embedder)
    blocks = [d for key in ("own", "peer") for _, d in config.blocks(key)]
    weights = np.repeat([1 / np.sqrt(d) for d in blocks], blocks)
    bounds = [0, *stream.change_points, len(x)]
    flags, controls = [], []
    for k, cp in enumerate(stream.change_points):
        w = min(ORACLE_WINDOW, cp - bounds[k], bounds[k + 2] - cp)
        p, _ = mmd_permutation_test(x[cp - w:cp], x[cp:cp + w], weights, ORACLE_ALPHA,
                                    seed=seed + k)
        flags.append(p <= ORACLE_ALPHA)
    w = min(ORACLE_WINDOW, (bounds[1] - bounds[0]) // 2)
    if w >= 20:
        p, _ = mmd_permutation_test(x[:w], x[w:2 * w], weights, ORACLE_ALPHA, seed=seed + 99)
        controls.append(p <= ORACLE_ALPHA)
    return {"detected": flags, "controls_flagged": controls}


def oracle_aggregate(rows: list[dict[str, Any]], missed: int = 0) -> dict[str, Any]:
    changes = sum(len(r["detected"]) for r in rows) + missed
    detected = sum(sum(r["detected"]) for r in rows)
    controls = [c for r in rows for c in r["controls_flagged"]]
    return {"changes": changes, "detected": detected,
            "detection_rate": detected / changes if changes else None,
            "controls": len(controls), "controls_flagged": sum(controls)}


def paired(rows: list[ChainResult], baseline: str) -> dict[str, Any]:
    """Delays on the changes that both the bank and a baseline detected."""
    bank = {r.chain: r.watched.per_change for r in rows if r.method == "bank"}
    ours, theirs = [], []
    for r in rows:
        if r.method != baseline:
            continue
        for a, b in zip(bank.get(r.chain, []), r.watched.per_change, strict=False):
            if a is not None and b is not None:
                ours.append(a)
                theirs.append(b)
    med = statistics.median
    return {"both_detected": len(ours),
            "bank_median_delay": med(ours) if ours else None,
            "baseline_median_delay": med(theirs) if theirs else None,
            "bank_faster": sum(a < b for a, b in zip(ours, theirs, strict=True)),
            "baseline_faster": sum(b < a for a, b in zip(ours, theirs, strict=True))}


def aggregate(rows: list[ChainResult], missed: int = 0) -> dict[str, Any]:
    """Detection rate, delays, false alarms per 10k events (watched, peers), updates/s;
    ``missed`` switches of chains that were skipped count as undetected."""
    changes = sum(r.watched.changes for r in rows) + missed
    delays = [d for r in rows for d in r.watched.delays]
    w_fa = sum(r.watched.false_alarms for r in rows)
    w_ev = sum(r.watched.events for r in rows)
    p_fa = sum(r.peers.false_alarms for r in rows)
    p_ev = sum(r.peers.events for r in rows)
    secs = sum(r.seconds for r in rows)
    return {
        "chains": len(rows), "changes": changes, "detected": len(delays),
        "detection_rate": len(delays) / changes if changes else None,
        "median_delay": statistics.median(delays) if delays else None,
        "mean_delay": statistics.fmean(delays) if delays else None,
        "false_alarms_watched": w_fa, "events_watched": w_ev,
        "fa_per_10k_watched": 1e4 * w_fa / w_ev if w_ev else None,
        "false_alarms_peers": p_fa, "events_peers": p_ev,
        "fa_per_10k_peers": 1e4 * p_fa / p_ev if p_ev else None,
        "fa_per_10k_all": 1e4 * (w_fa + p_fa) / (w_ev + p_ev) if w_ev + p_ev else None,
        "updates_per_s": sum(r.updates for r in rows) / secs if secs else None,
    }
