"""What the monitor holds, read from its durable checkpoints (never from a live process).

``distill status`` shows exactly what a restart would resume from: per teacher the events
processed, each signal's estimate and detections and the last alert; the groups completed
and timed out; and each partition's checkpointed offset.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from detectors.bank import DetectorBank
from distill.statedir import StateDir
from stream.checkpoint import CHECKPOINT_VERSION
from stream.durable import read_json

SUMMED = ("n", "detections")


def merge_summaries(
        summaries: Iterable[dict[str, dict[str, dict[str, Any]]]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Merge per-partition bank summaries: counts add up, other fields come from the
    partition that saw the most updates of that (teacher, signal)."""
    merged: dict[str, dict[str, dict[str, Any]]] = {}
    for summary in summaries:
        for teacher, signals in summary.items():
            for signal, entry in signals.items():
                have = merged.setdefault(teacher, {}).get(signal)
                if have is None:
                    merged[teacher][signal] = dict(entry)
                    continue
                base = dict(entry) if (entry.get("n") or 0) > (have.get("n") or 0) else have
                for key in SUMMED:
                    base[key] = (have.get(key) or 0) + (entry.get(key) or 0)
                merged[teacher][signal] = base
    return merged


def load_checkpoints(state_dir: Path) -> list[dict[str, Any]]:
    folder = StateDir(Path(state_dir)).checkpoints
    docs = [read_json(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return [d for d in docs if d and d.get("version") == CHECKPOINT_VERSION]


def monitor_status(state_dir: Path) -> dict[str, Any]:
    """The machine-readable status document (what ``distill status --json`` prints)."""
    docs = load_checkpoints(state_dir)
    teachers: dict[str, dict[str, Any]] = {}
    totals = {"groups_completed": 0, "groups_timed_out": 0, "groups_open": 0,
              "duplicates": 0, "join_overflow": 0, "dedup_overflow": 0}
    summaries = []
    for doc in docs:
        state = doc["state"]
        counters = state["counters"]
        for key in totals:
            totals[key] += counters.get(key, 0)
        for teacher, n in counters["events"].items():
            teachers.setdefault(teacher, {"events": 0})["events"] += n
        for teacher, alert in state.get("last_alert", {}).items():
            entry = teachers.setdefault(teacher, {"events": 0})
            if entry.get("last_alert") is None or alert["time"] > entry["last_alert"]["time"]:
                entry["last_alert"] = alert
        summaries.append(DetectorBank.from_state(state["bank"]).summary())
    for teacher, signals in merge_summaries(summaries).items():
        teachers.setdefault(teacher, {"events": 0})["signals"] = signals
    return {
        "state_dir": str(state_dir),
        "checkpoints": [{"topic": d["topic"], "partition": d["partition"],
                         "offset": d["offset"], "written_at": d["written_at"]} for d in docs],
        "teachers": dict(sorted(teachers.items())),
        **totals,
    }
