"""An on-disk archive of JSON lines in rotated, gzip-compressed segments.

One archive per (topic, partition) so it moves with the partition's state. The open
segment is plain ``NAME-SEQ.jsonl``; at a checkpoint past ``segment_records`` lines it is
compressed to ``NAME-SEQ.jsonl.gz`` (temp file, fsync, rename) and a new segment opens.
The checkpoint records :meth:`position`; :meth:`restore` truncates to it, so lines written
after the last checkpoint (a crash before it) are dropped and written again on replay:
the archive never holds a line twice.

>>> import json, tempfile
>>> d = Path(tempfile.mkdtemp())
>>> a = SegmentArchive(d, "groups-0", segment_records=2)
>>> for i in range(3):
...     a.append(b'{"i": %d}' % i)
>>> a.checkpoint_position()  # segment 0 (3 lines) was full: compressed, segment 1 opened
{'seq': 1, 'bytes': 0, 'records': 0}
>>> a.after_checkpoint(); sorted(p.name for p in d.iterdir())
['groups-0-00000000.jsonl.gz', 'groups-0-00000001.jsonl']
>>> [json.loads(line)["i"] for line in read_archive(d)]
[0, 1, 2]
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from stream.durable import fsync_dir

_SEGMENT = re.compile(r"^(?P<name>.+)-(?P<seq>\d{8})\.jsonl(?P<gz>\.gz)?$")


class SegmentArchive:
    def __init__(self, directory: Path, name: str, segment_records: int = 50_000) -> None:
        self.directory = Path(directory)
        self.name = name
        self.segment_records = segment_records
        self.directory.mkdir(parents=True, exist_ok=True)
        self.seq = 0
        self.records = 0
        self._fh: IO[bytes] | None = None

    def _plain(self, seq: int) -> Path:
        return self.directory / f"{self.name}-{seq:08d}.jsonl"

    def _open(self) -> IO[bytes]:
        if self._fh is None:
            self._fh = open(self._plain(self.seq), "ab")  # noqa: SIM115
        return self._fh

    def append(self, line: bytes) -> None:
        fh = self._open()
        fh.write(line.rstrip(b"\n"))  # two writes, not a copy of a ~10 KB line
        fh.write(b"\n")
        self.records += 1

    def sync(self) -> None:
        """Make every appended line durable (before the checkpoint that covers it)."""
        fh = self._open()
        fh.flush()
        os.fsync(fh.fileno())

    def checkpoint_position(self) -> dict[str, Any]:
        """Rotate if full, make everything durable, and say where the archive stands."""
        self.rotate_if_full()
        self.sync()
        fh = self._open()
        return {"seq": self.seq, "bytes": fh.tell(), "records": self.records}

    def rotate_if_full(self) -> bool:
        """Compress the open segment once it is full; call it before taking the position."""
        if self.records < self.segment_records:
            return False
        self.sync()
        self.close()
        compress_segment(self._plain(self.seq))
        self.seq += 1
        self.records = 0
        return True

    def after_checkpoint(self) -> None:
        """Delete plain files already compressed (call after the checkpoint is durable)."""
        for seq, path, gz in self._segments():
            if not gz and seq < self.seq and path.with_suffix(".jsonl.gz").exists():
                path.unlink()

    def restore(self, position: dict[str, Any] | None) -> None:
        """Return to a checkpointed position, undoing anything written after it."""
        self.close()
        pos = position or {"seq": 0, "bytes": 0, "records": 0}
        self.seq, self.records = pos["seq"], pos["records"]
        for seq, path, gz in self._segments():
            if seq > self.seq or (seq == self.seq and gz):
                path.unlink()  # written after the checkpoint, or a rotation it did not cover
            elif seq < self.seq and not gz:
                gz_path = path.with_suffix(".jsonl.gz")
                if not gz_path.exists():
                    compress_segment(path)
                path.unlink(missing_ok=True)
        plain = self._plain(self.seq)
        with open(plain, "ab") as fh:
            fh.truncate(pos["bytes"])
            os.fsync(fh.fileno())
        fsync_dir(self.directory)

    def _segments(self) -> list[tuple[int, Path, bool]]:
        out = []
        for path in self.directory.iterdir():
            m = _SEGMENT.match(path.name)
            if m and m["name"] == self.name:
                out.append((int(m["seq"]), path, bool(m["gz"])))
        return sorted(out, key=lambda s: (s[0], s[2]))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def compress_segment(plain: Path) -> Path:
    """gzip ``plain`` next to itself atomically; the plain file is left for the caller."""
    target = plain.with_suffix(".jsonl.gz")
    tmp = target.with_name(target.name + ".tmp")
    with open(plain, "rb") as src, open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            shutil.copyfileobj(src, gz)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, target)
    fsync_dir(plain.parent)
    return target


def list_segments(directory: Path, name: str | None = None,
                  recursive: bool = False) -> list[Path]:
    """The segment files of the archives in ``directory`` (of one archive when ``name``,
    in sub-folders too when ``recursive``), oldest first per archive. A segment present both
    plain and compressed (a stop between compressing and removing) counts once, compressed."""
    directory = Path(directory)
    found: dict[tuple[Path, str, int], Path] = {}
    for path in sorted(directory.rglob("*") if recursive else directory.iterdir()):
        m = _SEGMENT.match(path.name)
        if not m or (name is not None and m["name"] != name):
            continue
        key = (path.parent, m["name"], int(m["seq"]))
        if m["gz"] or key not in found:  # prefer the compressed copy when both exist
            found[key] = path
    return [found[key] for key in sorted(found)]


def read_archive(directory: Path, name: str | None = None) -> Iterator[bytes]:
    """Every line of every segment in ``directory`` (one archive, or all), oldest first."""
    for path in list_segments(directory, name):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    yield line.rstrip(b"\n")
