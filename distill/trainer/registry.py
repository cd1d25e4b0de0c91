"""Model registry: which student versions exist, which one serves, and how each was made.

Layout under ``root``::

    registry.json          versions, runs, history, current and reference pointers
    registry.lock          flock held while registry.json is read-modified-written
    models/v0001/          a complete model directory (MANIFEST.json written last)
    models/.staging-*/     a model being written; removed on start if its owner died

A model is written into a staging directory, every file is fsynced, ``MANIFEST.json``
(names and sizes) is written and fsynced, and only then the directory is renamed to
``models/vNNNN`` and registry.json is replaced (temp file, fsync, rename, fsync of the
directory) under the lock. A kill at any instant therefore leaves registry.json pointing
only at complete directories; a renamed directory the registry never recorded is an
orphan and is removed on the next open.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> reg = Registry(root)
>>> with reg.staging() as d:
...     _ = (d / "weights.bin").write_bytes(b"0" * 8)
...     v1 = reg.commit(d, status="reference", metrics={}, parent=None)
>>> with reg.staging() as d:
...     _ = (d / "weights.bin").write_bytes(b"1" * 8)
...     v2 = reg.commit(d, status="promoted", metrics={"score": 0.5}, parent=v1.version)
>>> reg.current().version, reg.reference().version, reg.verify(v2.version)
('v0002', 'v0001', True)
>>> reg.rollback().version
'v0001'
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from distill.statedir import REGISTRY_FILE, StateDir
from distill.trainer.exceptions import RegistryCorruptError, UnknownVersionError
from stream.durable import fsync_dir, lock_held, write_bytes_atomic

FORMAT = 1
MANIFEST = "MANIFEST.json"
_VERSION_RE = re.compile(r"^v(\d{4,})$")
VersionStatus = Literal["reference", "promoted", "rejected"]
HISTORY_MAX = 1000
RUNS_MAX = 1000


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Version:
    """One registered model. ``path`` is None for a rejected candidate whose weights were
    not kept."""

    version: str
    status: VersionStatus
    parent: str | None
    created_at: str
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    trigger: str | None = None
    path: str | None = None  # relative to the registry root
    model_subdir: str = ""  # where the HF model lies inside the version directory
    pruned: bool = False  # weights deleted by the retention policy

    @property
    def number(self) -> int:
        return int(self.version[1:])


def fsync_tree(path: Path) -> None:
    """fsync every file and directory under ``path`` (the directory entries too)."""
    for dirpath, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def _manifest(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_size
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST
            and not p.name.startswith(".owner")}


class Registry:
    """Versions, runs and pointers of one trainer state directory (safe across processes)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.models = self.root / "models"
        self.models.mkdir(parents=True, exist_ok=True)
        self._file = self.root / REGISTRY_FILE
        self._owned: dict[Path, int] = {}
        with self._locked() as data:
            self._cleanup(data)

    # -- locking and the file ----------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, write: bool = False) -> Iterator[dict[str, Any]]:
        """Hold the registry lock; yield the parsed registry; write it back if ``write``."""
        with open(self.root / "registry.lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            data = self._read()
            yield data
            if write:
                write_bytes_atomic(self._file, json.dumps(data, indent=1, sort_keys=True).encode())

    def _read(self) -> dict[str, Any]:
        if not self._file.exists():
            return {"format": FORMAT, "current": None, "reference": None, "versions": {},
                    "runs": {}, "history": []}
        try:
            data: dict[str, Any] = json.loads(self._file.read_bytes())
        except (OSError, ValueError) as exc:
            raise RegistryCorruptError(f"{self._file}: {exc}") from exc
        if data.get("format") != FORMAT:
            raise RegistryCorruptError(f"{self._file}: unknown format {data.get('format')!r}")
        return data

    def _cleanup(self, data: dict[str, Any]) -> None:
        """Remove staging dirs whose owner died and version dirs the registry never
        recorded (killed between rename and registry write)."""
        known = {v["path"] for v in data["versions"].values() if v.get("path")}
        for entry in self.models.iterdir():
            rel = f"models/{entry.name}"
            if entry.name.startswith(".staging-"):
                if not self._owner_alive(entry):
                    shutil.rmtree(entry, ignore_errors=True)
            elif _VERSION_RE.match(entry.name) and rel not in known:
                shutil.rmtree(entry, ignore_errors=True)
        for tmp in self.root.glob(".registry.json.*.tmp"):
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _owner_alive(staging: Path) -> bool:
        return lock_held(staging / ".owner.lock")

    # -- writing models ----------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh directory to write a model into; removed on exit unless committed."""
        path = self.models / f".staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with self._locked():  # so a concurrent cleanup never sees it without its owner lock
            path.mkdir()
            fd = os.open(path / ".owner.lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
        self._owned[path] = fd
        try:
            yield path
        finally:
            os.close(self._owned.pop(path))
            shutil.rmtree(path, ignore_errors=True)

    def commit(self, staging: Path, *, status: VersionStatus, metrics: dict[str, float],
               parent: str | None, run_id: str | None = None, trigger: str | None = None,
               model_subdir: str = "", keep_weights: bool = True) -> Version:
        """Register the model in ``staging``. ``reference`` and ``promoted`` become current
        (the first ``reference`` also becomes the frozen reference); ``rejected`` is recorded
        and its weights dropped unless ``keep_weights``."""
        keep = keep_weights or status != "rejected"
        if keep:
            manifest = _manifest(staging)
            write_bytes_atomic(staging / MANIFEST, json.dumps(manifest, indent=1).encode())
            fsync_tree(staging)
        with self._locked(write=True) as data:
            number = 1 + max((int(v[1:]) for v in data["versions"]), default=0)
            name = f"v{number:04d}"
            rel = None
            if keep:
                os.rename(staging, self.models / name)
                fsync_dir(self.models)
                (self.models / name / ".owner.lock").unlink(missing_ok=True)
                rel = f"models/{name}"
            version = Version(name, status, parent, now_iso(), dict(metrics), run_id, trigger,
                              rel, model_subdir)
            data["versions"][name] = asdict(version)
            if status == "reference" and data["reference"] is None:
                data["reference"] = name
            if status in ("reference", "promoted"):
                self._move_current(data, name, "promote" if status == "promoted" else "bootstrap")
            else:
                self._log(data, "keep", name, data["current"])
        return version

    # -- pointers ----------------------------------------------------------------------

    def rollback(self, version: str | None = None) -> Version:
        """Make ``version`` (default: the current version's parent) current again."""
        with self._locked(write=True) as data:
            cur = data["current"]
            target = version or (data["versions"][cur]["parent"] if cur else None)
            if target is None or target not in data["versions"]:
                raise UnknownVersionError(f"no version {target!r} to roll back to")
            if not data["versions"][target].get("path"):
                raise UnknownVersionError(f"{target} has no weights (rejected or pruned)")
            self._move_current(data, target, "rollback")
            return Version(**data["versions"][target])

    @staticmethod
    def _move_current(data: dict[str, Any], name: str, action: str) -> None:
        Registry._log(data, action, name, data["current"])
        data["current"] = name

    @staticmethod
    def _log(data: dict[str, Any], action: str, version: str, previous: str | None) -> None:
        data["history"].append({"at": now_iso(), "action": action, "version": version,
                                "previous": previous})
        del data["history"][:-HISTORY_MAX]

    def prune(self, keep: int) -> list[str]:
        """Delete the weights of all but the ``keep`` newest versions that have them; the
        current and the reference version are always kept. Entries stay (``path`` None,
        ``pruned`` True) so the history still reads. The registry is written first, so a
        kill midway leaves only unrecorded directories, which the next open removes."""
        if keep < 1:
            raise ValueError("keep must be >= 1")
        with self._locked(write=True) as data:
            protected = {data["current"], data["reference"]}
            with_weights = sorted(k for k, v in data["versions"].items() if v.get("path"))
            victims = [k for k in with_weights[:-keep] if k not in protected]
            dirs = []
            for name in victims:
                entry = data["versions"][name]
                dirs.append(self.root / entry["path"])
                entry.update(path=None, pruned=True)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        return victims

    # -- runs (idempotency of rounds) --------------------------------------------------

    def start_run(self, run_id: str, info: dict[str, Any]) -> None:
        """Record a run as running; only the newest :data:`RUNS_MAX` runs are remembered."""
        with self._locked(write=True) as data:
            runs = data["runs"]
            runs[run_id] = {"status": "running", "started_at": now_iso(), "pid": os.getpid(),
                            **info}
            for old in sorted(runs, key=lambda r: runs[r].get("started_at", ""))[:-RUNS_MAX]:
                del runs[old]

    def finish_run(self, run_id: str, result: dict[str, Any]) -> None:
        with self._locked(write=True) as data:
            run = data["runs"].setdefault(run_id, {})
            run.update(result, finished_at=now_iso())

    def note_run(self, run_id: str, **fields: Any) -> None:
        """Add fields to a running run (what it selected), so a run that dies can still be
        finished from the registry by :meth:`recover_run`."""
        with self._locked(write=True) as data:
            data["runs"].setdefault(run_id, {}).update(fields)

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self._locked() as data:
            run: dict[str, Any] | None = data["runs"].get(run_id)
            return run

    def abandon_running(self) -> list[str]:
        """Mark every run still ``running`` as ``abandoned``; call it holding the round lock,
        when no live process can be running a round."""
        with self._locked(write=True) as data:
            dead = [rid for rid, r in data["runs"].items() if r.get("status") == "running"]
            for rid in dead:
                data["runs"][rid].update(status="abandoned", finished_at=now_iso(),
                                         reason="the process running it died")
        return dead

    def recover_run(self, run_id: str) -> dict[str, Any] | None:
        """Finish the record of a run whose model was committed but whose process died
        before the run was recorded (the version names its run id); None when no version
        of that run was promoted or rejected."""
        with self._locked(write=True) as data:
            made = [v for v in data["versions"].values()
                    if v.get("run_id") == run_id and v["status"] in ("promoted", "rejected")]
            if not made:
                return None
            v = made[-1]
            run = data["runs"].setdefault(run_id, {})
            run.update(status="promoted" if v["status"] == "promoted" else "kept",
                       version=v["version"], current=data["current"], metrics=v["metrics"],
                       trigger=v.get("trigger") or run.get("trigger", "manual"),
                       reason="recorded after a restart: the process died after the "
                              "registry commit", finished_at=now_iso())
            return dict(run)

    def watermark(self) -> int:
        """Highest buffer sequence number a finished round trained on (0 if none)."""
        with self._locked() as data:
            return max((r.get("upto_seq", 0) for r in data["runs"].values()
                        if r.get("status") in ("promoted", "kept")), default=0)

    # -- reading -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._locked() as data:
            return data

    def get(self, version: str) -> Version:
        with self._locked() as data:
            if version not in data["versions"]:
                raise UnknownVersionError(f"no version {version!r}")
            return Version(**data["versions"][version])

    def current(self) -> Version | None:
        data = self.snapshot()
        return Version(**data["versions"][data["current"]]) if data["current"] else None

    def reference(self) -> Version | None:
        data = self.snapshot()
        return Version(**data["versions"][data["reference"]]) if data["reference"] else None

    def versions(self) -> list[Version]:
        return [Version(**v) for _, v in sorted(self.snapshot()["versions"].items())]

    def model_dir(self, version: Version) -> Path:
        """The directory to load with ``from_pretrained``."""
        if version.path is None:
            raise UnknownVersionError(f"{version.version} has no weights")
        return self.root / version.path / version.model_subdir

    def verify(self, version: str) -> bool:
        """True when the version's directory holds every file of its manifest, same sizes."""
        v = self.get(version)
        if v.path is None:
            return False
        directory = self.root / v.path
        try:
            manifest: dict[str, int] = json.loads((directory / MANIFEST).read_bytes())
        except (OSError, ValueError):
            return False
        return manifest == _manifest(directory)


def registry_summary(state_dir: str | Path, last: int = 10) -> dict[str, Any]:
    """What ``distill status`` shows of the trainer: pointers, recent versions and runs.

    Reads without creating anything: a state dir with no trainer gives ``{"present": False}``.
    """
    path = StateDir(Path(state_dir)).registry_file
    if not path.exists():
        return {"present": False}
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        return {"present": True, "error": f"unreadable registry: {exc}"}
    versions = [data["versions"][k] for k in sorted(data["versions"])]
    lock_free = round_lock_free(StateDir(Path(state_dir)).round_lock)
    runs = sorted(data["runs"].items(), key=lambda kv: kv[1].get("started_at", ""))
    return {
        "present": True,
        "current": data["current"],
        "reference": data["reference"],
        "versions_total": len(versions),
        "versions": [{k: v.get(k) for k in ("version", "status", "parent", "created_at",
                                           "metrics", "run_id", "trigger")}
                     for v in versions[-last:]],
        "runs_total": len(runs),
        "runs": [{"run_id": rid, **{k: r.get(k) for k in (
            "status", "trigger", "version", "started_at", "finished_at", "seconds",
            "groups", "reason")}, **_liveness(r, lock_free)} for rid, r in runs[-last:]],
        "last_success": max((r.get("finished_at", "") for _, r in runs
                             if r.get("status") in ("promoted", "kept")), default=None),
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                    time.gmtime(path.stat().st_mtime)),
    }


def round_lock_free(lock: Path) -> bool:
    """True when no process holds the round lock (or it does not exist): a run recorded
    as ``running`` then belongs to a process that died."""
    return not lock_held(lock)


def _liveness(run: dict[str, Any], lock_free: bool) -> dict[str, Any]:
    """A ``running`` run whose process died shows as ``abandoned`` (the next round writes
    that down; reading the status changes nothing on disk)."""
    if run.get("status") == "running" and lock_free:
        return {"status": "abandoned", "reason": "the process running it died"}
    return {}
