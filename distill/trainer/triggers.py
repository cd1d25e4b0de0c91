"""When the continual trainer starts a round: every K new groups, every T seconds, or on alert.

A pure policy over three numbers (new groups since the last round, seconds since the last
round, whether an alert is pending), so it is tested without a broker or a model. A
round never starts with fewer than ``min_groups`` new groups: a timer or an alert with
nothing new to learn from waits until something arrives.

>>> p = TriggerPolicy(every_groups=100, every_s=60.0, on_alert=True, min_groups=4)
>>> p.due(new_groups=99, idle_s=10.0, alert_pending=False) is None
True
>>> p.due(new_groups=100, idle_s=10.0, alert_pending=False)
'count'
>>> p.due(new_groups=5, idle_s=10.0, alert_pending=True)
'alert'
>>> p.due(new_groups=5, idle_s=61.0, alert_pending=False)
'interval'
>>> p.due(new_groups=3, idle_s=61.0, alert_pending=True) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from distill.config import DEFAULTS

Trigger = Literal["count", "interval", "alert", "manual", "webhook"]
"""Why a retrain round ran: the policy's three, a round by hand, an Alertmanager webhook."""

TRIGGERS: tuple[Trigger, ...] = get_args(Trigger)
"""Every trigger name; the ``trigger`` label values of ``distill_retrain_runs_total``."""


@dataclass(frozen=True, slots=True)
class TriggerPolicy:
    """Parameters
    ----------
    every_groups : a round after this many new training groups.
    every_s : a round after this many seconds since the last one (if anything is new).
    on_alert : a drift alert starts a round (if anything is new).
    min_groups : the fewest new groups any trigger needs.
    """

    every_groups: int = DEFAULTS.train.trigger_every_groups
    every_s: float = DEFAULTS.train.trigger_every_s
    on_alert: bool = DEFAULTS.train.trigger_on_alert
    min_groups: int = 1

    def __post_init__(self) -> None:
        if self.every_groups <= 0 or self.every_s <= 0 or self.min_groups <= 0:
            raise ValueError("every_groups, every_s and min_groups must be positive")

    def due(self, new_groups: int, idle_s: float, alert_pending: bool) -> Trigger | None:
        """The trigger that fires now, or None. Groups win over alerts, alerts over time."""
        if new_groups < self.min_groups:
            return None
        if new_groups >= self.every_groups:
            return "count"
        if self.on_alert and alert_pending:
            return "alert"
        if idle_s >= self.every_s:
            return "interval"
        return None
