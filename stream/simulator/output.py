"""Where simulated events go: a ``.jsonl.gz`` file (one event JSON per line) or a Kafka
topic, plus the ground-truth change points in a JSON sidecar next to the file.

The gzip header carries no file name and a zero mtime, so the same events always give the
same bytes.

>>> changepoints_path("runs/sim.jsonl.gz").as_posix()
'runs/sim.changepoints.json'
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypedDict

from stream.events import TeacherEvent

FLUSH_EVERY = 5000  # bound the producer's pending futures on long runs


class ProducerTuning(TypedDict):
    """Keyword options of :class:`stream.kafka.KafkaSink`, typed so ``**`` keeps their types."""

    compression_type: str
    batch_size: int
    linger_ms: int


#: KafkaSink options for simulated streams: events are ~1.7 KB and the 7 answers to a sample
#: repeat one prompt, so gzip-compressed large batches move several times more events/s.
PRODUCER_TUNING: ProducerTuning = {"compression_type": "gzip", "batch_size": 262144,
                                   "linger_ms": 20}


class Sink(Protocol):
    """What :func:`produce` needs; :class:`stream.kafka.KafkaSink` is one."""

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> None: ...

    def flush(self, timeout: float = 30.0) -> None: ...


def changepoints_path(out: str | Path) -> Path:
    """``X.jsonl.gz`` -> ``X.changepoints.json`` (any other name gets the suffix appended)."""
    out = Path(out)
    name = out.name
    for suffix in (".jsonl.gz", ".jsonl", ".gz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(f"{name}.changepoints.json")


def write_jsonl_gz(events: Iterable[TeacherEvent], path: str | Path,
                   on_event: Callable[[TeacherEvent], None] | None = None) -> int:
    """Write one ``TeacherEvent.to_json_bytes()`` per line, gzip-compressed; returns the count.

    Written to a temporary name first and renamed, so a reader never sees half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                               mtime=0, compresslevel=6) as gz:
        for event in events:
            gz.write(event.to_json_bytes() + b"\n")
            count += 1
            if on_event is not None:
                on_event(event)
    tmp.replace(path)
    return count


def read_jsonl_gz(path: str | Path) -> Iterable[bytes]:
    """The raw event lines of a file written by :func:`write_jsonl_gz`."""
    with gzip.open(path, "rb") as gz:
        for line in gz:
            if line.strip():
                yield line.rstrip(b"\n")


def write_changepoints(points: list[dict[str, Any]], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(points, indent=2, sort_keys=True) + "\n")


def produce(events: Iterable[TeacherEvent], sink: Sink, topic: str,
            rate: float | None = None,
            on_event: Callable[[TeacherEvent], None] | None = None) -> int:
    """Send each event to ``topic`` keyed by ``sample_id`` (one sample, one partition).

    ``rate`` paces sending at that many events per second (None: as fast as possible).
    Flushes every :data:`FLUSH_EVERY` events and at the end; a failed delivery raises
    :class:`stream.exceptions.ProducerFlushError` from the sink. Returns the count.
    """
    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0 events/s")
    began = time.monotonic()
    count = 0
    for event in events:
        if rate is not None:
            due = began + count / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # pacing the stream, not waiting for another thread
        sink.send(topic, event.to_json_bytes(), key=event.sample_id.encode())
        count += 1
        if on_event is not None:
            on_event(event)
        if count % FLUSH_EVERY == 0:
            sink.flush()
    sink.flush()
    return count
