"""Per-event text signals: the C scan (stream/_textscan.c) against the Python scan it replaces.

    python benchmarks/bench_signals.py [--events 20000] [--jsonl PATH ...]

Both scans run in this process over the same lower-cased outputs (simulator events, or the
``output`` fields of JSON-lines files such as the real data packs), best of 5 repeats; the
results are checked equal before anything is timed. Prints microseconds per event and the
speed-up, and the same for the whole `event_signals` call (which adds the answer).
"""

from __future__ import annotations

import argparse
import gzip
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
from bench_serve import python_fallbacks  # a sibling script: benchmarks/ is on sys.path

from stream import signals
from stream.signals import (
    _FORMATS,
    _REFUSAL_HEAD,
    _REFUSALS,
    MAX_VOCAB_TOKENS,
    _scan_py,
    event_signals,
)
from stream.simulator import generate, load_scenario


def outputs_from(paths: list[str], limit: int) -> Iterator[str]:
    """The ``output`` (or the data packs' ``output_text``) strings of JSON-lines files, plain
    or gzipped."""
    n = 0
    for path in paths:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(Path(path), "rb") as fh:
            for line in fh:
                doc = orjson.loads(line)
                text = doc.get("output") or doc.get("output_text") if isinstance(doc, dict) \
                    else None
                if isinstance(text, str):
                    yield text
                    n += 1
                    if n >= limit:
                        return


def best_of(fn: Callable[[], object], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--jsonl", nargs="*", default=[],
                        help="read outputs from these JSON-lines files instead of the simulator")
    args = parser.parse_args()
    if signals.SCANNER != "c":
        raise SystemExit("the C scan is not in use: build it (pip install -e . with a C compiler) "
                         "and leave DISTILL_NO_C_EXT unset")
    from stream._textscan import scan

    scenario = load_scenario("default")
    events = list(generate(scenario.with_samples(-(-args.events // len(scenario.teachers))),
                           seed=0))[:args.events]
    texts = list(outputs_from(args.jsonl, args.events)) if args.jsonl else \
        [e.output for e in events]
    lows = [t.lower() for t in texts]
    rest = (64, _REFUSAL_HEAD, MAX_VOCAB_TOKENS, _REFUSALS, _FORMATS)
    mismatches = sum(scan(low, *rest) != _scan_py(low, *rest) for low in lows)
    assert mismatches == 0, f"{mismatches} outputs scan differently in C and Python"

    c_s = best_of(lambda: [scan(low, *rest) for low in lows])
    py_s = best_of(lambda: [_scan_py(low, *rest) for low in lows])
    mean_chars = sum(map(len, texts)) / len(texts)
    print(f"outputs: {len(texts)} (mean {mean_chars:.0f} characters), "
          f"source: {', '.join(args.jsonl) or 'simulator'}")
    print(f"python scan: {py_s / len(lows) * 1e6:7.2f} us/event")
    print(f"C scan:      {c_s / len(lows) * 1e6:7.2f} us/event")
    print(f"speed-up C/python: {py_s / c_s:.1f}x")

    full_c = best_of(lambda: [event_signals(e) for e in events])
    with python_fallbacks():
        full_py = best_of(lambda: [event_signals(e) for e in events])
    print(f"event_signals (simulator events): {full_py / len(events) * 1e6:.2f} -> "
          f"{full_c / len(events) * 1e6:.2f} us/event ({full_py / full_c:.1f}x)")


if __name__ == "__main__":
    main()
