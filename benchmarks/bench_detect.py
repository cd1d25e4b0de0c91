"""Detector-bank cost per update against bare River ADWIN, measured in one process.

The target (issue 3) is a bank cost per update of at most 3x River's ADWIN. Signals are
computed beforehand (not timed): this measures the detectors and the bank's routing.
Three ratios are printed:

- ``bank[length]``: the bank with only the length signal vs ADWIN on the same values;
- ``bank[all] per signal update``: every signal, cost divided by the values it consumed;
- ``bank[all] per event``: every signal, against one ADWIN update per event.

Run: ``.venv/bin/python benchmarks/bench_detect.py [--samples 2000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from itertools import groupby
from typing import Any

from river import drift

from detectors import BankConfig, DetectorBank
from stream.signals import event_signals, leave_one_out_agreement
from stream.simulator import generate, load_scenario


def _updates(samples: int) -> list[tuple[str, dict[str, Any]]]:
    """(teacher, signals) in monitor order: each event, then the group's agreement."""
    scenario = load_scenario("default")
    scenario = scenario.model_copy(update={"samples": samples}) if hasattr(
        scenario, "model_copy") else scenario
    out: list[tuple[str, dict[str, Any]]] = []
    for _, group in groupby(generate(scenario, seed=0), key=lambda e: e.sample_id):
        answers = {}
        for event in group:
            signals = event_signals(event)
            answers[event.teacher] = signals["answer"]
            out.append((event.teacher, signals))
        for teacher, agrees in leave_one_out_agreement(answers).items():
            out.append((teacher, {"agreement": agrees}))
    return out


def _best(fn: Callable[[], None], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    updates = _updates(args.samples)
    events = [(t, s) for t, s in updates if "length" in s]
    lengths = [(t, math.log1p(s["length"])) for t, s in events]
    values = sum(1 for _, s in updates for v in s.values() if v is not None)

    def adwin() -> None:
        dets: dict[str, Any] = {}
        for teacher, x in lengths:
            det = dets.get(teacher)
            if det is None:
                det = dets[teacher] = drift.ADWIN()
            det.update(x)

    def bank_length() -> None:
        bank = DetectorBank(BankConfig(signals=("length",), length_log=False))
        for teacher, x in lengths:
            bank.update(teacher, {"length": x})

    def bank_all() -> None:
        bank = DetectorBank()
        for teacher, signals in updates:
            bank.update(teacher, signals)

    t_adwin = _best(adwin, args.repeat)
    t_len = _best(bank_length, args.repeat)
    t_all = _best(bank_all, args.repeat)
    n = len(lengths)
    us = 1e6
    print(f"events {n}, signal values {values}, best of {args.repeat}")
    print(f"River ADWIN          {t_adwin / n * us:7.2f} us/update")
    print(f"bank[length]         {t_len / n * us:7.2f} us/update   ratio {t_len / t_adwin:5.2f}x")
    print(f"bank[all] per value  {t_all / values * us:7.2f} us/update   "
          f"ratio {t_all / values / (t_adwin / n):5.2f}x")
    print(f"bank[all] per event  {t_all / n * us:7.2f} us/event    ratio {t_all / t_adwin:5.2f}x")
    print(f"bank[all] throughput {n / t_all:9.0f} events/s")
    print("per detector, alone (us/update):")
    config = BankConfig()
    for signal in ("length", "refusal", "answer", "vocab"):
        xs = [s[signal] for _, s in updates if s.get(signal) is not None]
        if signal == "length":
            xs = [math.log1p(x) for x in xs]

        def feed(signal: str = signal, xs: list = xs) -> None:
            det = config.make(signal)
            for x in xs:
                det.update(x)

        print(f"  {signal:8s} {config.kind_of(signal):10s} "
              f"{_best(feed, args.repeat) / len(xs) * us:7.2f}")


if __name__ == "__main__":
    main()
