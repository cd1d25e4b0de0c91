"""`TeacherProducer`: send teacher answers to the input topic the way the monitor needs them.

Every event is checked by the monitor's own decoder before it is sent (a bad one raises
:class:`InvalidEvent` naming the reason, instead of landing in the dead-letter topic later),
keyed by ``sample_id`` (so all teachers' answers to a case reach the same partition and join),
and given a deterministic ``event_id`` when none is passed (re-sending is idempotent through
the monitor's dedup). Sends are batched by the Kafka client; ``flush`` waits until the broker
acknowledged every message, and leaving the ``with`` block (or the interpreter) flushes.

>>> from stream.producer import prepare
>>> ev = prepare({"teacher": "gpt-4o", "sample_id": "s1", "output": "Final answer: yes",
...               "produced_at": 1767225600})
>>> ev.produced_at.isoformat(), ev.event_id.startswith("ev-")
('2026-01-01T00:00:00+00:00', True)
>>> prepare({"teacher": "gpt-4o", "sample_id": "s1", "output": 3, "produced_at": "2026-01-01"})
Traceback (most recent call last):
...
stream.producer.InvalidEvent: bad_type:output: expected string, got int
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from stream.events import DEFAULT_MAX_MESSAGE_BYTES, Invalid, TeacherEvent, decode_event
from stream.formats import normalise
from stream.kafka import KafkaSettings, Sink, ensure_topics, open_sink

DEFAULT_TOPIC = "teacher-outputs"


class InvalidEvent(ValueError):
    """The event would be dead-lettered by the monitor; ``reason`` is the dead-letter reason."""

    def __init__(self, invalid: Invalid) -> None:
        super().__init__(f"{invalid.reason}: {invalid.detail}" if invalid.detail
                         else invalid.reason)
        self.reason = invalid.reason
        self.detail = invalid.detail


def prepare(event: Mapping[str, Any] | TeacherEvent,
            max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> TeacherEvent:
    """Normalise (times, event id) and validate with the monitor's decoder; raises InvalidEvent."""
    decoded = check(event, max_bytes)
    if isinstance(decoded, Invalid):
        raise InvalidEvent(decoded)
    return decoded


def check(event: Mapping[str, Any] | TeacherEvent,
          max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> TeacherEvent | Invalid:
    """:func:`prepare` without raising: the event, or the :class:`Invalid` with its reason."""
    if isinstance(event, TeacherEvent):
        raw = event.to_json_bytes()
    else:
        doc = normalise(dict(event))
        if doc.get("event_id") in (None, ""):  # not derivable: report what stopped it instead
            doc["event_id"] = "-"
            found = _encode_and_decode(doc, max_bytes)
            return found if isinstance(found, Invalid) else Invalid("missing_field:event_id")
        return _encode_and_decode(doc, max_bytes)
    return decode_event(raw, max_bytes)


def _encode_and_decode(doc: dict[str, Any], max_bytes: int) -> TeacherEvent | Invalid:
    import orjson

    try:
        raw = orjson.dumps(doc)
    except TypeError as exc:  # a value JSON cannot carry (a set, an object ...)
        return Invalid("not_json", str(exc)[:200])
    return decode_event(raw, max_bytes)


class TeacherProducer:
    """Validate, key by ``sample_id`` and produce teacher events; a context manager.

    ``bootstrap_servers`` may be a :class:`KafkaSettings` for TLS/SASL or the librdkafka client;
    ``partitions`` creates the topic with that many partitions when it does not exist; ``tuning``
    goes to the Kafka producer (``linger_ms``, ``compression_type`` ...).
    """

    def __init__(self, bootstrap_servers: str | KafkaSettings, topic: str = DEFAULT_TOPIC,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 partitions: int | None = None, sink: Sink | None = None,
                 **tuning: Any) -> None:
        settings = (bootstrap_servers if isinstance(bootstrap_servers, KafkaSettings)
                    else KafkaSettings(bootstrap_servers, client_id="distill-producer"))
        if partitions:
            ensure_topics(settings, {topic: partitions})
        self.topic = topic
        self.max_message_bytes = max_message_bytes
        self.sent = 0
        self._sink = sink if sink is not None else open_sink(settings, **tuning)
        self._lock = threading.Lock()
        self._closed = False
        # runs when the producer is garbage-collected or, at the latest, at interpreter exit
        self._finalizer = weakref.finalize(self, _flush_quietly, self._sink)

    def send(self, teacher: str, sample_id: str, output: str,
             produced_at: datetime | str | float | None = None, **optional: Any) -> TeacherEvent:
        """Send one answer; ``produced_at`` defaults to now; optional fields by name
        (``event_id``, ``teacher_version``, ``prompt``, ``image``, ``answer``, ``labels``,
        ``meta``, ...). Returns the event as sent; raises InvalidEvent before sending."""
        stamp = produced_at if produced_at is not None else datetime.now(UTC)
        if isinstance(stamp, datetime):
            stamp = stamp.isoformat()
        return self.send_event({**optional, "teacher": teacher, "sample_id": sample_id,
                                "output": output, "produced_at": stamp})

    def send_event(self, event: Mapping[str, Any] | TeacherEvent) -> TeacherEvent:
        """Send one event dict (our format) or TeacherEvent; raises InvalidEvent before sending."""
        valid = prepare(event, self.max_message_bytes)
        self._send(valid)
        return valid

    def _send(self, event: TeacherEvent) -> None:
        if self._closed:
            raise RuntimeError("TeacherProducer is closed")
        with self._lock:
            self._sink.send(self.topic, event.to_json_bytes(), key=event.sample_id.encode())
            self.sent += 1

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until the broker acknowledged everything sent; raises if anything was not."""
        with self._lock:
            self._sink.flush(timeout)

    def close(self) -> None:
        """Flush and close. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._finalizer.detach()
            self._sink.close()

    def __enter__(self) -> TeacherProducer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _flush_quietly(sink: Sink) -> None:
    """At interpreter exit: deliver what is still buffered (a producer nobody closed)."""
    try:
        sink.flush(10.0)
        sink.close()
    except Exception:  # exiting anyway; the caller's own flush would have raised
        pass
