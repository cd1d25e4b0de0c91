"""Detector-bank cost per event against bare River ADWIN on one signal, in one process.

Signals are computed beforehand (not timed): this measures the detectors and the bank's
routing, fed in monitor order (each event's own signals, then at group close its
peer-relative signals). Printed, each with its ratio to River ADWIN on log length:

- ``univariate[length]``: the per-signal bank with only the length signal;
- ``univariate[all]``: one detector per signal, every signal;
- ``mmd[all]``: the default joint bank (own and peer MMD tests), embeddings off;
- ``mmd[all+emb]``: the same with the content embeddings (``embedding`` and
  ``peer_distance``) of the distilled all-MiniLM-L6-v2 (:mod:`distill.monitor.embeddings`,
  the ``embeddings`` extra), the vectors computed beforehand: the bank alone;
- ``encode``: the static model encoding the outputs, in batches of a poll (256) and
  one output per call;
- ``mmd[all+emb]+encode``: the bank with embeddings plus the batched encoding, what the
  monitor spends per event with embeddings on.

The embedding rows need the extra and the distilled model (built once into
``--embedding-cache``, 1-2 min of CPU the first time); without the extra they are skipped.

Run: ``.venv/bin/python benchmarks/bench_detect.py [--samples 1000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from itertools import groupby
from pathlib import Path
from typing import Any

from river import drift

from detectors import BankConfig, DetectorBank
from distill.monitor.embeddings import DEFAULT_DIM, Embedder, load_embedder
from stream.events import TeacherEvent
from stream.signals import event_signals, leave_one_out_agreement, peer_signals
from stream.simulator import generate, load_scenario

POLL = 256  # outputs encoded per call, as the pipeline batches them


def _events(samples: int) -> list[TeacherEvent]:
    scenario = load_scenario("default")
    scenario = scenario.model_copy(update={"samples": samples})
    return list(generate(scenario, seed=0))


def _updates(events: list[TeacherEvent], embedder: Embedder | None = None
             ) -> list[tuple[str, dict[str, Any]]]:
    """(teacher, signals) in monitor order: each event, then the group's peer signals."""
    vecs = iter(_encode(embedder, [e.output for e in events]) if embedder else [])
    embed = embedder is not None
    out: list[tuple[str, dict[str, Any]]] = []
    for _, group in groupby(events, key=lambda e: e.sample_id):
        answers, lengths, embeddings = {}, {}, {}
        for event in group:
            signals: dict[str, Any] = dict(event_signals(event))
            if embed:
                signals["embedding"] = embeddings[event.teacher] = next(vecs)
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


def _encode(embedder: Embedder, texts: list[str], batch: int = POLL) -> list[tuple[float, ...]]:
    out: list[tuple[float, ...]] = []
    for i in range(0, len(texts), batch):
        out.extend(tuple(v.tolist()) for v in embedder.encode(texts[i:i + batch]))
    return out


def _discard(_: Any) -> None:
    return None


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
    parser.add_argument("--embedding-cache", type=Path, default=Path("state/models"),
                        help="where the distilled embedding model is kept (built if missing)")
    parser.add_argument("--embedding-dim", type=int, default=DEFAULT_DIM)
    args = parser.parse_args()
    stream = _events(args.samples)
    embedder = load_embedder("auto", args.embedding_dim, args.embedding_cache)
    updates = _updates(stream)
    with_emb = _updates(stream, embedder) if embedder else []
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
    }
    texts = [e.output for e in stream]
    if embedder is not None:
        runs["mmd[all+emb]"] = bank(BankConfig(embedding_dim=embedder.dim), with_emb)
        runs[f"encode[batch {POLL}]"] = lambda: _discard(_encode(embedder, texts))
        runs["encode[1 per call]"] = lambda: _discard(_encode(embedder, texts, 1))
    t_adwin = _best(adwin, args.repeat)
    us = 1e6
    print(f"events {n} ({args.samples} samples x {n // args.samples} teachers), "
          f"best of {args.repeat}, CPU time per event (signals computed beforehand); "
          f"embeddings: {embedder.name if embedder else 'off (extra not installed)'}")
    print(f"{'River ADWIN[length]':28s} {t_adwin / n * us:8.2f} us/event")
    times = {}
    for name, fn in runs.items():
        t = times[name] = _best(fn, args.repeat)
        label = name if name.startswith("encode") else "bank " + name
        print(f"{label:28s} {t / n * us:8.2f} us/event   ratio {t / t_adwin:6.1f}x")
    if embedder is not None:
        t = times["mmd[all+emb]"] + times[f"encode[batch {POLL}]"]
        print(f"{'bank mmd[all+emb]+encode':28s} {t / n * us:8.2f} us/event   "
              f"ratio {t / t_adwin:6.1f}x")


if __name__ == "__main__":
    main()
