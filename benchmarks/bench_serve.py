"""End-to-end monitor throughput against a raw consume, and memory over a long stream.

    python benchmarks/bench_serve.py [--events 50000] [--memory-events 1000000]
                                     [--bootstrap-servers HOST:PORT]
                                     [--client {kafka-python,librdkafka}] [--instances N]
                                     [--compare-python]
    (--events 0 or --memory-events 0 skips that part; run the memory part alone for a
    process that holds nothing but what serve holds)

Throughput: a fixed simulator stream is produced first; then, in this process, a raw
kafka-python consume of the topic (baseline), the same consume with serve's decode and
validation of each value (the ceiling of a monitor in the consuming process), a raw
confluent-kafka (librdkafka) consume (second baseline) and `distill serve` (MonitorService:
decode, validate, dedupe, signals, join, the observations topic, detectors, outputs,
checkpoints; on the Kafka client ``--client`` names) are each timed from their first record
to their last (serve: to the last observation its detect stage handled, the stream run to
its end as with ``--finish``). Ratios = serve / raw, against each baseline. CPU seconds per
event of serve's whole path are printed next to those of consume + decode, in the same run.

``--compare-python`` times serve once more on the pure-Python versions of its C parts (the
text scan, the KL window's histogram sums), in this process: what the compiler buys.

Scale-out (``--instances N``): the stream again on an N-partition topic, served by one
instance and then by N processes of one consumer group; the throughput ratio of the two.

Memory: the same per-record path as serve (decode + pipeline) over ``--memory-events``
events, RSS sampled every 10% of the run. The bounded join buffer and dedup window must
keep it flat.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer

from detectors import kl_window
from distill.config import Config, load_config
from distill.monitor.pipeline import MonitorPipeline
from distill.monitor.service import MonitorService, RunLimits, pipeline_config
from stream import signals
from stream.broker import EmbeddedBroker
from stream.events import decode_event
from stream.kafka import KafkaSettings, KafkaSink, ensure_topics
from stream.simulator import PRODUCER_TUNING, generate, load_scenario, produce


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_drain(poll: Callable[[], int], n: int) -> float:
    """Seconds from the first record to the n-th; ``poll`` returns how many records it got."""
    got, first = 0, None
    while got < n:
        k = poll()
        if first is None and k:
            first = time.perf_counter()
        got += k
    assert first is not None
    return time.perf_counter() - first


def cpu_s() -> float:
    """CPU seconds of this process, all threads (the Kafka clients' included)."""
    return time.process_time()


def raw_consume(bootstrap: str, topic: str, n: int, decode: bool = False) -> float:
    """Seconds from the first record to the n-th with a plain KafkaConsumer; with ``decode``
    each value also goes through serve's decode and validation (`decode_event`): the floor
    of any monitor that runs in the consuming process, whatever its pipeline costs."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=f"raw-{uuid.uuid4().hex[:6]}",
                             session_timeout_ms=6000, heartbeat_interval_ms=2000)

    def poll() -> int:
        batches = consumer.poll(timeout_ms=500).values()
        if decode:
            for batch in batches:
                for record in batch:
                    decode_event(record.value)
        return sum(map(len, batches))

    elapsed = timed_drain(poll, n)
    consumer.close()
    return elapsed


def raw_consume_librdkafka(bootstrap: str, topic: str, n: int) -> float:
    """Seconds from the first record to the n-th with a plain confluent-kafka Consumer."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "group.id": f"raw-{uuid.uuid4().hex[:6]}",
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 2000})
    consumer.subscribe([topic])
    elapsed = timed_drain(lambda: sum(m.error() is None for m in consumer.consume(
        num_messages=500, timeout=0.5)), n)
    consumer.close()
    return elapsed


def bench_config(bootstrap: str, topic: str, partitions: int, group: str, state_dir: Path | str,
                 client: str) -> Config:
    """Serve's config for a benchmark run: its own output topics, a free metrics port."""
    cfg = load_config(None, env={}, overrides={
        "kafka": {"bootstrap_servers": bootstrap, "input_topic": topic, "partitions": partitions,
                  "client": client, "group_id": group, "groups_topic": f"{topic}.groups",
                  "alerts_topic": f"{topic}.alerts", "dead_letter_topic": f"{topic}.dlq"},
        "serve": {"state_dir": str(state_dir), "metrics_address": "127.0.0.1:0"},
    })
    assert isinstance(cfg, Config), cfg
    return cfg


def serve_run(bootstrap: str, topic: str, n: int, state_dir: Path,
              client: str = "kafka-python") -> tuple[float, int, float]:
    """Serve over the topic as a finite stream (both stages, to the detectors' end): wall
    seconds from the first record to the last checkpoint, alerts, CPU seconds of the run
    (the 0.3 s idle wait that ends the stream is in the wall time, next to no CPU)."""
    cfg = bench_config(bootstrap, topic, 1, f"bench-{uuid.uuid4().hex[:6]}", state_dir, client)
    began = cpu_s()
    summary = MonitorService(cfg, limits=RunLimits(idle_exit_s=0.3, finish=True)).run()
    cpu = cpu_s() - began
    assert summary.first_record_at and summary.last_record_at and summary.records == n
    return summary.last_record_at - summary.first_record_at, summary.alerts_total, cpu


@contextmanager
def python_fallbacks() -> Iterator[None]:
    """Serve on the pure-Python versions of its C parts (the text scan, the KL window's
    histogram sums), as it runs where no compiler built them."""
    saved = signals._scan, kl_window._histogram_sums
    signals._scan, kl_window._histogram_sums = signals._scan_py, kl_window._histogram_sums_py
    try:
        yield
    finally:
        signals._scan, kl_window._histogram_sums = saved


def instance_run(bootstrap: str, topic: str, partitions: int, group: str, state_dir: str,
                 client: str, results: Any) -> None:
    """One `distill serve` instance of a scale-out run (a child process); it stops once the
    topic has been idle for 3 s and reports its first and last handled record."""
    cfg = bench_config(bootstrap, topic, partitions, group, state_dir, client)
    began = cpu_s()
    summary = MonitorService(cfg, limits=RunLimits(idle_exit_s=3.0)).run()
    results.put((summary.first_record_at, summary.last_record_at, summary.records,
                 cpu_s() - began))


def scale_out(events: list[Any], bootstrap: str, instances: int, client: str) -> None:
    """The same stream on a topic of ``instances`` partitions, served by 1 instance and then
    by ``instances`` instances of one consumer group (separate processes, one state dir).
    Rate = events / (last record handled by any instance - first record handled by any);
    the clock (CLOCK_MONOTONIC) is shared by the processes."""
    topic = f"bench-scale-{uuid.uuid4().hex[:8]}"
    ensure_topics(KafkaSettings(bootstrap), {topic: instances})
    sink = KafkaSink(KafkaSettings(bootstrap), **PRODUCER_TUNING)
    produce(events, sink, topic)
    sink.close()
    ctx = mp.get_context("spawn")  # no inherited client threads or sockets
    rates = {}
    for count in (1, instances):
        results = ctx.Queue()
        with tempfile.TemporaryDirectory() as tmp:
            group = f"bench-scale-{uuid.uuid4().hex[:6]}"
            procs = [ctx.Process(target=instance_run, args=(
                bootstrap, topic, instances, group, tmp, client, results))
                for _ in range(count)]
            for proc in procs:
                proc.start()
            got = [results.get(timeout=600) for _ in procs]
            for proc in procs:
                proc.join()
        spans = [(a, b) for a, b, _, _ in got if a is not None and b is not None]
        span = max(b for _, b in spans) - min(a for a, _ in spans)
        handled = sum(r for _, _, r, _ in got)
        cpu = sum(c for _, _, _, c in got)
        rates[count] = len(events) / span
        print(f"serve, {count} instance(s) on {instances} partitions: {rates[count]:10.0f} "
              f"events/s ({span:.2f} s; records handled {handled}, replays after a "
              f"rebalance included; {1e6 * cpu / len(events):.0f} CPU us/event over all "
              f"instances, 3 s idle exit included)")
    print(f"scale-out: {rates[instances] / rates[1]:.2f}x with {instances} instances "
          f"on {os.cpu_count()} cpus")


def memory_run(total: int) -> list[tuple[int, float]]:
    """RSS while the serve per-record path runs over ``total`` simulator events, generated
    lazily so the benchmark holds no stream of its own in memory."""
    cfg = load_config(None, env={})
    assert isinstance(cfg, Config)
    pipeline = MonitorPipeline(pipeline_config(cfg))
    scenario = load_scenario("default")
    scenario = scenario.with_samples(-(-total // len(scenario.teachers)))
    samples, step = [], max(1, total // 10)
    for i, ev in enumerate(generate(scenario, seed=0), 1):
        pipeline.process(decode_event(ev.to_json_bytes()))  # type: ignore[arg-type]
        if i % step == 0:
            samples.append((i, rss_mb()))
        if i >= total:
            break
    return samples


def throughput(n: int, bootstrap_servers: str | None, client: str = "kafka-python",
               instances: int = 1, compare_python: bool = False) -> None:
    with EmbeddedBroker() as broker:
        bootstrap = bootstrap_servers or broker.bootstrap_servers
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        ensure_topics(KafkaSettings(bootstrap), {topic: 1})
        scenario = load_scenario("default")
        events = list(generate(scenario.with_samples(-(-n // len(scenario.teachers))),
                               seed=0))[:n]
        sink = KafkaSink(KafkaSettings(bootstrap), **PRODUCER_TUNING)
        produce(events, sink, topic)
        sink.close()
        raw_s = raw_consume(bootstrap, topic, len(events))
        began = cpu_s()
        floor_s = raw_consume(bootstrap, topic, len(events), decode=True)
        floor_cpu = cpu_s() - began
        rd_s = raw_consume_librdkafka(bootstrap, topic, len(events))
        with tempfile.TemporaryDirectory() as tmp:
            serve_s, alerts, serve_cpu = serve_run(bootstrap, topic, len(events), Path(tmp),
                                                   client)
        raw_rate, serve_rate = len(events) / raw_s, len(events) / serve_s
        rd_rate = len(events) / rd_s
        mean_bytes = sum(len(e.to_json_bytes()) for e in events) / len(events)
        print(f"events: {len(events)} (mean {mean_bytes:.0f} bytes), cpus: {os.cpu_count()}")
        print(f"raw kafka-python consume: {raw_rate:10.0f} events/s ({raw_s:.2f} s)")
        print(f"raw librdkafka consume:   {rd_rate:10.0f} events/s ({rd_s:.2f} s)")
        print(f"raw kafka-python consume + decode_event: {len(events) / floor_s:10.0f} events/s "
              f"(ratio {raw_s / floor_s:.2f}: the ceiling of any in-process monitor on "
              f"kafka-python)")
        print(f"distill serve end to end: {serve_rate:10.0f} events/s ({serve_s:.2f} s, "
              f"{alerts} alerts, client {client})")
        print(f"ratio serve/raw: {serve_rate / raw_rate:.2f}  (target >= 0.8)")
        per = 1e6 / len(events)
        print(f"CPU per event: serve whole path (ingest + observations topic + detect + "
              f"outputs) {serve_cpu * per:.0f} us, consume + decode {floor_cpu * per:.0f} us "
              f"(ratio {serve_cpu / floor_cpu:.2f})")
        print(f"ratio serve/raw librdkafka: {serve_rate / rd_rate:.2f}")
        if compare_python:
            with tempfile.TemporaryDirectory() as tmp, python_fallbacks():
                py_s, py_alerts, _ = serve_run(bootstrap, topic, len(events), Path(tmp), client)
            assert py_alerts == alerts, (py_alerts, alerts)
            print(f"distill serve, pure Python: {len(events) / py_s:10.0f} events/s "
                  f"({py_s:.2f} s); C parts speed-up {py_s / serve_s:.2f}x")
        if instances > 1:
            scale_out(events, bootstrap, instances, client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--memory-events", type=int, default=1_000_000)
    parser.add_argument("--bootstrap-servers", default=None)
    parser.add_argument("--client", choices=["kafka-python", "librdkafka"],
                        default="kafka-python", help="Kafka client of the serve run")
    parser.add_argument("--instances", type=int, default=1,
                        help="also time N serve processes of one group on N partitions")
    parser.add_argument("--compare-python", action="store_true",
                        help="also time serve on the pure-Python versions of its C parts")
    args = parser.parse_args()

    if args.events:
        throughput(args.events, args.bootstrap_servers, args.client, args.instances,
                   args.compare_python)
    if args.memory_events:
        print(f"\nmemory over {args.memory_events} events (decode + pipeline, as serve):")
        start = rss_mb()
        samples = memory_run(args.memory_events)
        for i, mb in samples:
            print(f"  {i:>9} events: RSS {mb:7.1f} MB")
        print(f"start {start:.1f} MB, peak {max(mb for _, mb in samples):.1f} MB, "
              f"growth over the last half {samples[-1][1] - samples[len(samples) // 2][1]:+.1f} MB")


if __name__ == "__main__":
    main()
