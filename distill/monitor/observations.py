"""What the ingest stage tells the detect stage: per-teacher observations and watermarks.

An :class:`Observation` is one bank update of one teacher: an event's signals, or the
``agreement`` a closed group gave it. The detect stage feeds them to the bank in
:attr:`Observation.key` order (event time, sample, kind, teacher, event), which depends on
the stream only, never on how many input partitions carried it or how the records
interleaved. A :class:`Watermark` from input partition ``source`` promises that every
later observation of that partition has ``time >= watermark``; the detect stage releases an
observation once every input partition's watermark has passed it.

``source``, ``offset`` and ``seq`` say which input record produced a message, so the detect
stage can drop the copies an ingest partition re-sends after it restarted from its
checkpoint (it re-processes the records after the checkpointed offset, in the same order).

On Kafka both travel as JSON on the internal observations topic: observations in batches
(one message per input batch and observations partition, at most :data:`BATCH` each: a
Kafka message per observation costs more than the detectors), each teacher always to the
partition :func:`partition_of` names; watermarks to every partition, after the batch.
An ``embedding`` signal travels as the base64 of its float16 values (:func:`pack_vector`:
~2.7 bytes per dimension instead of ~20 as JSON numbers); the values are float16 already,
so the round trip is exact and every path feeds the bank the same numbers.

>>> o = Observation("gpt", 10.0, "s1", EVENT, "e1", {"length": 3}, 0, 7, 0)
>>> decode(encode_batch([o])) == [o], o.key
(True, (10.0, 's1', 0, 'gpt', 'e1'))
>>> e = Observation("gpt", 10.0, "s1", EVENT, "e1", {"embedding": (0.5, -0.25)}, 0, 7, 0)
>>> decode(encode_batch([e])) == [e], e.to_doc()["sig"]
(True, {'embedding': 'ADgAtA=='})
>>> w = Watermark(source=1, sources=4, time=float("inf"))
>>> decode(encode(w)) == w
True
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

BATCH = 200  # observations per message: ~250 KB, well under Kafka's 1 MiB default
EVENT, AGREEMENT = 0, 1  # an event's own signals sort before its sample's agreement
FLUSH_SEQ = 1 << 20  # seq of observations a flush emits after a partition's last record


@dataclass(frozen=True, slots=True)
class Observation:
    teacher: str
    time: float  # event time (s): the event's, or when the group's answers were all in
    sample_id: str
    kind: int  # EVENT or AGREEMENT
    event_id: str  # "" for AGREEMENT
    signals: dict[str, Any]
    source: int = 0  # input partition
    offset: int = -1  # input record that produced it
    seq: int = 0  # its position among that record's observations

    @property
    def key(self) -> tuple[float, str, int, str, str]:
        """The canonical order: the same for any partitioning of the input."""
        return (self.time, self.sample_id, self.kind, self.teacher, self.event_id)

    @property
    def position(self) -> tuple[int, int]:
        return (self.offset, self.seq)

    def to_doc(self) -> dict[str, Any]:
        return {"k": "o", "t": self.teacher, "at": self.time, "s": self.sample_id,
                "r": self.kind, "e": self.event_id, "sig": _packed(self.signals),
                "src": self.source,
                "off": self.offset, "seq": self.seq}


@dataclass(frozen=True, slots=True)
class Watermark:
    """Input partition ``source`` (of ``sources``) will send nothing earlier than ``time``;
    ``inf`` once the stream was declared finished (``--idle-exit``)."""

    source: int
    sources: int
    time: float

    def to_doc(self) -> dict[str, Any]:
        return {"k": "w", "src": self.source, "n": self.sources,
                "at": None if math.isinf(self.time) else self.time}


def partition_of(teacher: str, partitions: int) -> int:
    """The observations partition that owns ``teacher`` (stable across processes)."""
    return zlib.crc32(teacher.encode()) % partitions


def encode(message: Observation | Watermark) -> bytes:
    return orjson.dumps(message.to_doc())


def encode_batch(observations: list[Observation]) -> bytes:
    return orjson.dumps({"k": "b", "o": [o.to_doc() for o in observations]})


def decode(raw: bytes | None) -> list[Observation] | Watermark:
    """The observations or the watermark of one message, or ValueError naming what is wrong
    (the topic is internal: a bad record means a foreign writer; the caller dead-letters
    it)."""
    try:
        d = orjson.loads(raw or b"")
        if d["k"] == "w":
            at = d["at"]
            return Watermark(int(d["src"]), int(d["n"]), math.inf if at is None else float(at))
        docs = d["o"] if d["k"] == "b" else [d]
        return [Observation(o["t"], float(o["at"]), o["s"], int(o["r"]), o["e"],
                            _unpacked(o["sig"]), int(o["src"]), int(o["off"]), int(o["seq"]))
                for o in docs]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not an observation: {type(exc).__name__}: {exc}") from exc


def from_doc(d: dict[str, Any]) -> Observation:
    return Observation(d["t"], d["at"], d["s"], d["r"], d["e"], _unpacked(d["sig"]), d["src"],
                       d["off"], d["seq"])


def pack_vector(vec: Sequence[float]) -> str:
    """A vector as the base64 of its float16 values (exact for float16 input)."""
    return base64.b64encode(np.asarray(vec, dtype="<f2").tobytes()).decode("ascii")


def unpack_vector(text: str) -> tuple[float, ...]:
    """The inverse of :func:`pack_vector`; ValueError on a malformed string."""
    raw = base64.b64decode(text, validate=True)
    if len(raw) % 2:
        raise ValueError(f"embedding of {len(raw)} bytes: not float16 values")
    return tuple(np.frombuffer(raw, dtype="<f2").astype(float).tolist())


def _packed(signals: dict[str, Any]) -> dict[str, Any]:
    vec = signals.get("embedding")
    if vec is None or isinstance(vec, str):
        return signals
    return {**signals, "embedding": pack_vector(vec)}


def _unpacked(signals: dict[str, Any]) -> dict[str, Any]:
    vec = signals.get("embedding")
    if not isinstance(vec, str):
        return signals
    return {**signals, "embedding": unpack_vector(vec)}
