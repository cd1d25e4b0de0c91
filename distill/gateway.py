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
        self._lock = threading.Lock()  # one send+flush at a time: a flush covers only its sends

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
            self._send(events)
        except Exception as exc:  # the broker did not acknowledge: the client must retry
            log.warning("events not acknowledged: %s", exc)
            return 503, {"error": "broker did not acknowledge", "detail": str(exc)[:200]}
        self.accepted += len(events)
        return 200, {"accepted": len(events), "event_ids": [e.event_id for e in events]}

    def _send(self, events: list[TeacherEvent]) -> None:
        with self._lock:
            for event in events:
                self.sink.send(self.topic, event.to_json_bytes(), key=event.sample_id.encode())
            self.sink.flush()


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
