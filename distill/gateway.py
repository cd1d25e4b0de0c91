"""`POST /v1/events`: teacher events over HTTP into the input topic, with the monitor's checks.

The body is one event (a JSON object) or a batch (an array, or ``{"events": [...]}``), in our
event format; times may be epoch numbers and ``event_id`` may be left out, as with
``distill ingest`` (:func:`stream.formats.normalise`). A batch is all or nothing: if any event
is invalid nothing is sent and the 422 reply names each rejected event's index and reason; a
200 reply means the broker acknowledged every event (``acks=all``), a 503 that it did not (send
again: event ids make that idempotent).

This runs as its own process (``distill gateway``) rather than inside ``distill serve``: it is
stateless and can sit beside the application that calls the teachers, scale on its own, and
a slow broker acknowledgement or a burst of requests never competes with the monitor's loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import orjson

from stream.events import Invalid, TeacherEvent
from stream.kafka import Sink
from stream.producer import check

log = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"
MAX_BATCH = 10_000


class EventsEndpoint:
    """The POST handler: parse, validate every event, send keyed by sample_id, flush."""

    def __init__(self, sink: Sink, topic: str, max_message_bytes: int) -> None:
        self.sink = sink
        self.topic = topic
        self.max_message_bytes = max_message_bytes
        self.accepted = 0
        self.rejected = 0
        self._commit = _GroupCommit(sink, topic)

    def __call__(self, body: bytes) -> tuple[int, Mapping[str, Any]]:
        items = _events_of(body)
        if isinstance(items, Invalid):
            self.rejected += 1
            return 400, {"error": items.reason, "detail": items.detail}
        checked = [check(item, self.max_message_bytes) if isinstance(item, dict)
                   else Invalid("not_object", f"event is {type(item).__name__}")
                   for item in items]
        bad = [{"index": i, "reason": c.reason, "detail": c.detail}
               for i, c in enumerate(checked) if isinstance(c, Invalid)]
        if bad:
            self.rejected += len(bad)
            return 422, {"accepted": 0, "rejected": bad}
        events = [c for c in checked if isinstance(c, TeacherEvent)]
        try:
            self._commit.submit(events)
        except Exception as exc:  # the broker did not acknowledge: the client must retry
            log.warning("events not acknowledged: %s", exc)
            return 503, {"error": "broker did not acknowledge", "detail": str(exc)[:200]}
        self.accepted += len(events)
        return 200, {"accepted": len(events), "event_ids": [e.event_id for e in events]}


class _Batch:
    """The requests whose events one flush covers; they succeed or fail together."""

    def __init__(self) -> None:
        self.done = False
        self.error: Exception | None = None


class _GroupCommit:
    """Send each request's events, then acknowledge them with a flush shared by every request
    that arrived meanwhile (one flush per request would cap a burst at one broker round trip
    per request). No send happens during a flush, so a flush covers exactly its batch."""

    def __init__(self, sink: Sink, topic: str) -> None:
        self.sink = sink
        self.topic = topic
        self._open = _Batch()
        self._send_lock = threading.Lock()
        self._flush_lock = threading.Lock()

    def submit(self, events: list[TeacherEvent]) -> None:
        """Returns once the broker acknowledged ``events``; raises if it did not."""
        with self._send_lock:
            for event in events:
                self.sink.send(self.topic, event.to_json_bytes(), key=event.sample_id.encode())
            batch = self._open
        with self._flush_lock:
            if not batch.done:  # nobody flushed it yet: it is the open batch, flush it
                with self._send_lock:
                    self._open = _Batch()
                    try:
                        self.sink.flush()
                    except Exception as exc:
                        batch.error = exc
                    finally:
                        batch.done = True
        if batch.error is not None:
            raise batch.error


def _events_of(body: bytes) -> list[Any] | Invalid:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return Invalid("not_json", str(exc)[:200])
    if isinstance(doc, dict) and isinstance(doc.get("events"), list):
        doc = doc["events"]
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        return Invalid("empty", "no events in the body")
    if len(items) > MAX_BATCH:
        return Invalid("too_large", f"{len(items)} events > {MAX_BATCH} per request")
    return items
