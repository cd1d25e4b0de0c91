"""Detection benchmark on real version switches: the bank as the monitor runs it, scored
like Cerqueira et al. (KDD 2026, the definitions CapyMOA uses), against River baselines.

Scoring, per chain (change points are the watched teacher's event indices):

- a change is detected when the watched teacher's first alarm at or after it falls
  within ``delta_max`` events (and before the next change); delay = alarm - change;
- every other alarm on the watched teacher is a false alarm;
- every alarm on a peer (a stable teacher) is a false alarm.

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

from detectors.bank import BankConfig
from stream.datapack import DriftStream, build_drift_stream, load_chains, read_pack

BASELINES = ("river_adwin_length", "river_kswin_length")


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


def run_bank(stream: DriftStream, config: BankConfig, partitions: int = 1
             ) -> tuple[dict[str, list[int]], dict[str, list[str]], float]:
    """Alarm indices per teacher from the monitor's ingest and detect stages (signals, join,
    agreement), the stream spread over ``partitions`` input partitions as ``serve`` does."""
    from distill.monitor.pipeline import PartitionedPipeline, PipelineConfig

    pipe = PartitionedPipeline(PipelineConfig(
        bank=config, expected_teachers=(stream.watched, *stream.peers)), partitions)
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
                  delta_max: int = 300, baselines: bool = True,
                  progress: Callable[[str], None] | None = None,
                  partitions: int = 1) -> dict[str, Any]:
    """Every chain through the bank and the baselines; rows plus skipped chains."""
    rows: list[ChainResult] = []
    skipped: list[dict[str, str]] = []
    packs: dict[str, list[dict[str, Any]]] = {}
    for entry in load_chains(chains_file):
        name = chain_id(entry)
        path = data / entry["file"]
        if progress:
            progress(name)
        if not path.exists():
            skipped.append({"chain": name, "reason": f"file not found: {path}"})
            continue
        if entry["file"] not in packs:
            packs[entry["file"]] = list(read_pack(path))
        try:
            stream = build_drift_stream(packs[entry["file"]], entry, seed=seed)
        except ValueError as exc:
            skipped.append({"chain": name, "reason": str(exc)})
            continue
        alarms, signals, seconds = run_bank(stream, config, partitions)
        rows.append(_result(stream, name, "bank", alarms, signals, seconds, delta_max))
        for method in BASELINES if baselines else ():
            b_alarms, b_seconds = run_baseline(stream, method, seed)
            rows.append(_result(stream, name, method, b_alarms, None, b_seconds, delta_max))
    methods = ["bank", *(BASELINES if baselines else ())]
    return {
        "seed": seed, "delta_max": delta_max, "partitions": partitions,
        "config": asdict(config), "rows": [r.row() for r in rows],
        "aggregate": {m: aggregate([r for r in rows if r.method == m]) for m in methods},
        "paired": {m: paired(rows, m) for m in methods[1:]},
        "skipped": skipped,
    }


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


def aggregate(rows: list[ChainResult]) -> dict[str, Any]:
    """Detection rate, delays, false alarms per 10k events (watched, peers), updates/s."""
    changes = sum(r.watched.changes for r in rows)
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
