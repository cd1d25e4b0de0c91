"""The continual trainer loop behind ``distill train --follow``.

It consumes the groups topic (and the alerts topic) in its own consumer group, so it never
moves the monitor's offsets. Per poll, in order:

1. decode each group (a record that is not a group is logged, counted and skipped);
2. add the groups to the SQLite buffer in one durable transaction, and mark a pending
   alert in the same store;
3. commit the offsets of everything polled: an offset is committed only once the groups it
   covers are on disk (a crash in between re-delivers them; inserts are idempotent);
4. if no round is running, take a round `distill retrain` handed over
   (:mod:`distill.trainer.handoff`) or ask the trigger policy; a due round runs in a
   worker thread on the same code path as ``distill retrain``
   (:func:`distill.trainer.round.run_round`), so polling (and the consumer-group
   heartbeat) goes on while the model trains.

A failed poll is retried with the daemons' exponential backoff (:mod:`distill.retry`).
``stop()`` (from a signal handler) ends polling and asks a running round to stop at its
next step boundary (it is recorded as ``interrupted``); the loop waits for it, then closes.
``run(timeout_s=..., max_rounds=..., until_idle=...)`` lets a test run the real loop.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError

from distill.config import DEFAULTS
from distill.groups import TeacherGroup
from distill.retry import Backoff
from distill.trainer.buffer import GroupBuffer
from distill.trainer.exceptions import RoundBusyError
from distill.trainer.handoff import FollowerLock, take_request
from distill.trainer.progress import RoundControl, View
from distill.trainer.registry import Registry
from distill.trainer.round import (
    Engine,
    RoundOutcome,
    RoundSettings,
    TrainerPaths,
    run_round,
)
from distill.trainer.triggers import TriggerPolicy
from stream.exceptions import FatalClientError, StreamError

log = logging.getLogger(__name__)

ALERT_META = "alert_pending"
#: Alertmanager alerts whose firing webhook queues a round (`distill train --retrain-webhook`).
RETRAIN_ALERTS = frozenset({"DriftDetected", "DriftSustained", "SeveralTeachersDrifting",
                            "StudentRegressed", "RetrainStale"})
BUSY_RETRY_S = 5.0
TRANSIENT = (KafkaError, StreamError)
"""Poll errors retried with backoff, as in `distill serve` (a FatalClientError stops)."""


@dataclass(frozen=True)
class FollowSettings:
    groups_topic: str = DEFAULTS.kafka.groups_topic
    alerts_topic: str | None = DEFAULTS.kafka.alerts_topic
    group_id: str = DEFAULTS.train.group_id
    policy: TriggerPolicy = field(default_factory=TriggerPolicy)
    round: RoundSettings = field(default_factory=RoundSettings)
    buffer_max_groups: int = DEFAULTS.train.buffer_max_groups
    probe_fraction: float = DEFAULTS.train.probe_fraction
    min_group_answers: int = DEFAULTS.train.min_group_answers
    poll_timeout_ms: int = 500
    retry_after_failure_s: float = 60.0


class Follower:
    """The loop; ``source`` is a :class:`stream.kafka.KafkaSource` (or anything with
    ``poll``/``commit``/``assignment``/``close``)."""

    def __init__(self, paths: TrainerPaths, settings: FollowSettings, source: Any,
                 student: Path | None = None, metrics: Any = None,
                 engine: Engine | None = None,
                 on_round: Callable[[RoundOutcome], None] | None = None,
                 view: View | None = None) -> None:
        self.paths, self.settings, self.source = paths, settings, source
        self.student, self.metrics, self.engine = student, metrics, engine
        self.on_round, self.view = on_round, view
        self._request: dict[str, Any] | None = None  # a round handed over by retrain
        self._backoff = Backoff()
        self.buffer = GroupBuffer(paths.buffer, settings.buffer_max_groups,
                                  settings.probe_fraction, settings.min_group_answers)
        self.registry = Registry(paths.registry)
        self.outcomes: list[RoundOutcome] = []
        self.bad_records = 0
        self.broker_up = True
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._last_round = time.monotonic()
        self._hold_until = 0.0
        self._lock = threading.Lock()
        self._finished: RoundOutcome | None = None
        self._buffered = self.buffer.counts().train  # read by /healthz from another thread
        self._webhook = threading.Event()  # set by the HTTP thread, read by the loop
        self._refresh_gauges()

    def _refresh_gauges(self) -> None:
        """Serving version (a `distill retrain --rollback` elsewhere moves it) and buffer size."""
        if self.metrics is None:
            return
        current = self.registry.current()
        if current is not None:
            self.metrics.student_version.set(current.number)
        self.metrics.buffer_groups.set(self._buffered)

    # -- control -----------------------------------------------------------------------

    def stop(self) -> None:
        """Safe from a signal handler: only sets a flag (polling ends, and a running round
        ends at its next step boundary)."""
        self._stop.set()

    def health(self) -> tuple[bool, dict[str, Any]]:
        current = self.registry.current()
        last = self.outcomes[-1] if self.outcomes else None
        return self.broker_up, {
            "broker": "up" if self.broker_up else "down",
            "round": "running" if self.round_running else "idle",
            "current": current.version if current else None,
            "last_round": last.status if last else None,
            "buffer_groups": self._buffered,
        }

    @property
    def round_running(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    # -- the loop ----------------------------------------------------------------------

    def run(self, timeout_s: float | None = None, max_rounds: int | None = None,
            until_idle: bool = False, idle_s: float = 2.0) -> list[RoundOutcome]:
        """Poll until stopped, ``timeout_s`` passes, ``max_rounds`` rounds finished, or (with
        ``until_idle``) nothing arrived for ``idle_s`` since partitions were assigned and no
        round is running or due."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        active = None  # last time a record arrived (or partitions were first assigned)
        info = {"groups_topic": self.settings.groups_topic,
                "alerts_topic": self.settings.alerts_topic, "group_id": self.settings.group_id}
        lock = FollowerLock(self.paths, info)
        try:
            lock.__enter__()
            while not self._stop.is_set():
                if self._poll_once() or (active is None and self.source.assignment()):
                    active = time.monotonic()
                self._maybe_start_round()
                if max_rounds is not None and len(self.outcomes) >= max_rounds:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if (until_idle and active is not None and time.monotonic() - active >= idle_s
                        and not self.round_running and self._due() is None):
                    break
        finally:
            if self._worker is not None:
                self._worker.join()
            self._collect()
            self.source.close()
            self.buffer.close()
            lock.__exit__()
        return self.outcomes

    def _poll_once(self) -> int:
        try:
            records = self.source.poll(self.settings.poll_timeout_ms)
            self.broker_up = True
            self._backoff.succeeded()
        except FatalClientError:
            raise
        except TRANSIENT as exc:
            delay = self._backoff.failed()
            log.warning("poll failed (%s); retrying in %.1fs", exc, delay)
            self.broker_up = False
            self._stop.wait(delay)
            return 0
        if not records:
            return 0
        groups, alerts = self._decode(records)
        self.buffer.add(groups)  # durable (synchronous=FULL) before the commit below
        if alerts:
            self.buffer.set_meta(ALERT_META, "1")
        offsets: dict[tuple[str, int], int] = {}
        for r in records:
            key = (r.topic, r.partition)
            offsets[key] = max(offsets.get(key, 0), r.offset + 1)
        self.source.commit(offsets)
        self._buffered = self.buffer.counts().train
        return len(records)

    def _decode(self, records: list[Any]) -> tuple[list[TeacherGroup], int]:
        groups: list[TeacherGroup] = []
        alerts = 0
        for r in records:
            if r.topic == self.settings.alerts_topic:
                alerts += 1
                continue
            try:
                groups.append(TeacherGroup.from_json(r.value or b""))
            except (ValueError, KeyError, TypeError) as exc:
                self.bad_records += 1
                log.warning("skipping a record that is not a group at %s[%d]@%d: %s",
                            r.topic, r.partition, r.offset, exc)
        return groups, alerts

    # -- rounds ------------------------------------------------------------------------

    def webhook(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Take an Alertmanager webhook: a firing drift or regression alert queues a round
        (trigger ``webhook``) on the same path as `distill retrain`; anything else is
        acknowledged and ignored."""
        try:
            payload = json.loads(body or b"{}")
            alerts = payload.get("alerts", [])
            names = {a["labels"]["alertname"] for a in alerts if a.get("status") == "firing"}
        except (ValueError, TypeError, KeyError, AttributeError):
            return 400, {"error": "not an Alertmanager webhook payload"}
        wanted = sorted(names & RETRAIN_ALERTS)
        if wanted:
            self._webhook.set()
            log.info("webhook queued a round for %s", ", ".join(wanted))
        return 202, {"queued": bool(wanted), "alerts": wanted}

    def _due(self) -> str | None:
        if time.monotonic() < self._hold_until:
            return None
        request = take_request(self.paths)
        if request is not None:
            log.info("running round %s handed over by distill retrain", request["run_id"])
            self._request = request
            return "manual"
        new = self.buffer.count_new(self.registry.watermark())
        if self._webhook.is_set() and new >= self.settings.policy.min_groups:
            self._webhook.clear()  # a queued webhook waits until there is something to train
            return "webhook"
        alert = self.buffer.get_meta(ALERT_META) == "1"
        return self.settings.policy.due(new, time.monotonic() - self._last_round, alert)

    def _maybe_start_round(self) -> None:
        if self.round_running:
            return
        self._collect()
        self._refresh_gauges()
        if self._stop.is_set():
            return
        trigger = self._due()
        if trigger is None:
            return
        log.info("starting a round: trigger=%s", trigger)
        request, self._request = self._request or {}, None
        self._worker = threading.Thread(target=self._round, args=(trigger, request),
                                        name="distill-round", daemon=True)
        self._worker.start()

    def _round(self, trigger: str, request: dict[str, Any]) -> None:
        control = RoundControl(self.view, stop_event=self._stop)
        try:
            outcome = run_round(self.paths, self.settings.round, trigger=trigger,
                                run_id=request.get("run_id"), since_ts=request.get("since_ts"),
                                student=self.student, engine=self.engine, metrics=self.metrics,
                                control=control)
        except RoundBusyError as exc:  # a `distill retrain` holds the lock; try again later
            log.info("%s; retrying in %.0f s", exc, BUSY_RETRY_S)
            self._hold_until = time.monotonic() + BUSY_RETRY_S
            return
        with self._lock:
            self._finished = outcome

    def _collect(self) -> None:
        with self._lock:
            outcome, self._finished = self._finished, None
        if outcome is None:
            return
        self.outcomes.append(outcome)
        self._last_round = time.monotonic()
        if outcome.ok:
            self.buffer.set_meta(ALERT_META, "0")
        elif outcome.status == "failed":
            self._hold_until = time.monotonic() + self.settings.retry_after_failure_s
        log.info("round %s: %s %s", outcome.run_id, outcome.status, outcome.reason)
        if self.on_round is not None:
            self.on_round(outcome)

