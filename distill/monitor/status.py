"""What the monitor holds, read from its durable checkpoints (never from a live process).

``distill status`` shows exactly what a restart would resume from: per teacher the events
processed, each signal's estimate and detections and the last alert; the groups completed
and timed out; and each partition's checkpointed offset.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from detectors.bank import DetectorBank
from distill.exceptions import CheckpointUnreadable
from distill.statedir import StateDir
from stream.checkpoint import CHECKPOINT_VERSION, OFFSET_RESETS
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
    """Every partition checkpoint; :class:`CheckpointUnreadable` names a file that cannot be
    read or parsed, and a missing state dir."""
    if not Path(state_dir).is_dir():
        raise CheckpointUnreadable(f"{state_dir}: no such state directory")
    folder = StateDir(Path(state_dir)).checkpoints
    docs = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            docs.append(read_json(path))
        except (OSError, ValueError) as exc:
            raise CheckpointUnreadable(f"{path}: {getattr(exc, 'strerror', None) or exc}"
                                       ) from exc
    return [d for d in docs if d and d.get("version") == CHECKPOINT_VERSION]


def monitor_status(state_dir: Path) -> dict[str, Any]:
    """The machine-readable status document (what ``distill status --json`` prints)."""
    docs = load_checkpoints(state_dir)
    teachers: dict[str, dict[str, Any]] = {}
    totals = {"groups_completed": 0, "groups_timed_out": 0, "groups_open": 0,
              "duplicates": 0, "join_overflow": 0, "dedup_overflow": 0,
              "teacher_overflow": 0, "stray_answers": 0}
    rejected: dict[str, int] = {}
    summaries = []
    for doc in docs:
        state = doc["state"]
        counters = state["counters"]
        for key in totals:
            totals[key] += counters.get(key, 0)
        for reason, n in counters.get("rejected", {}).items():
            rejected[reason] = rejected.get(reason, 0) + n
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
        "offset_resets": _offset_resets(Path(state_dir)),
        "rejected": dict(sorted(rejected.items())),
        "checkpoints": [{"topic": d["topic"], "partition": d["partition"],
                         "offset": d["offset"], "written_at": d["written_at"]} for d in docs],
        "teachers": dict(sorted(teachers.items())),
        **totals,
    }


def _offset_resets(state_dir: Path, last: int = 20) -> list[dict[str, Any]]:
    """The latest checkpointed offsets serve found outside their log (broker data lost)."""
    path = state_dir / OFFSET_RESETS
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines()[-last:]
    return [orjson.loads(line) for line in lines if line.strip()]
