"""Detector-bank cost per event against bare River ADWIN on one signal, in one process.

Signals are computed beforehand (not timed): this measures the detectors and the bank's
routing, fed in monitor order (each event's own signals, then at group close its
peer-relative signals). Printed, each with its ratio to River ADWIN on log length:

- ``univariate[length]``: the per-signal bank with only the length signal;
- ``univariate[all]``: one detector per signal, every signal;
- ``mmd[all]``: the default joint bank (own and peer MMD tests), embeddings off;
- ``mmd[all+emb]``: the same with a 256-d ``embedding`` signal and ``peer_distance``
  (random unit vectors standing in for a static embedder's output: the embedder's own
  cost is not included).

Run: ``.venv/bin/python benchmarks/bench_detect.py [--samples 1000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from itertools import groupby
from typing import Any

import numpy as np
from river import drift

from detectors import BankConfig, DetectorBank
from stream.signals import event_signals, leave_one_out_agreement, peer_signals
from stream.simulator import generate, load_scenario

EMBEDDING_DIM = 256  # model2vec's default output dimension


def _updates(samples: int, embed: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """(teacher, signals) in monitor order: each event, then the group's peer signals."""
    scenario = load_scenario("default")
    scenario = scenario.model_copy(update={"samples": samples}) if hasattr(
        scenario, "model_copy") else scenario
    rng = np.random.default_rng(0)
    out: list[tuple[str, dict[str, Any]]] = []
    for _, group in groupby(generate(scenario, seed=0), key=lambda e: e.sample_id):
        answers, lengths, embeddings = {}, {}, {}
        for event in group:
            signals: dict[str, Any] = dict(event_signals(event))
            if embed:
                v = rng.standard_normal(EMBEDDING_DIM)
                signals["embedding"] = embeddings[event.teacher] = tuple(v / np.linalg.norm(v))
            answers[event.teacher] = signals["answer"]
            lengths[event.teacher] = signals["length"]
            out.append((event.teacher, signals))
        relative = peer_signals(lengths, embeddings if embed else None)
        for teacher, agrees in leave_one_out_agreement(answers).items():
            peer = {"agreement": agrees, **relative[teacher]}
            if not embed:
                peer.pop("peer_distance")
            out.append((teacher, peer))
    return out


def _best(fn: Callable[[], None], repeat: int) -> float:
    """Best CPU time of ``repeat`` runs (CPU, not wall: the figure must not depend on
    what else the machine runs)."""
    best = math.inf
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    updates = _updates(args.samples)
    with_emb = _updates(args.samples, embed=True)
    events = [(t, s) for t, s in updates if "length" in s]
    lengths = [(t, math.log1p(s["length"])) for t, s in events]
    n = len(lengths)

    def adwin() -> None:
        dets: dict[str, Any] = {}
        for teacher, x in lengths:
            det = dets.get(teacher)
            if det is None:
                det = dets[teacher] = drift.ADWIN()
            det.update(x)

    def bank(config: BankConfig, feed: list[tuple[str, dict[str, Any]]]) -> Callable[[], None]:
        def run() -> None:
            b = DetectorBank(config)
            for teacher, signals in feed:
                b.update(teacher, signals)
        return run

    length_only = [(t, {"length": s["length"]}) for t, s in events]
    runs = {
        "univariate[length]": bank(BankConfig(test="univariate", signals=("length",)),
                                   length_only),
        "univariate[all]": bank(BankConfig(test="univariate"), updates),
        "mmd[all]": bank(BankConfig(), updates),
        "mmd[all+emb]": bank(BankConfig(embedding_dim=EMBEDDING_DIM), with_emb),
    }
    t_adwin = _best(adwin, args.repeat)
    us = 1e6
    print(f"events {n} ({args.samples} samples x {n // args.samples} teachers), "
          f"best of {args.repeat}, CPU time per event (signals computed beforehand)")
    print(f"{'River ADWIN[length]':22s} {t_adwin / n * us:8.2f} us/event")
    for name, fn in runs.items():
        t = _best(fn, args.repeat)
        print(f"{'bank ' + name:22s} {t / n * us:8.2f} us/event   ratio {t / t_adwin:6.1f}x")


if __name__ == "__main__":
    main()
