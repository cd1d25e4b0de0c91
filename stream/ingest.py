"""Read JSONL teacher records (files, directories, stdin), convert, validate and produce them.

Each line is decoded, converted by :mod:`stream.formats`, validated by the monitor's decoder
and sent keyed by ``sample_id``; a line that fails any step is written to the rejects file
with its reason (never dropped) and counted per reason. The caller owns the producer and the
progress display; :func:`ingest_lines` only reports each line's outcome through ``on_line``.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from stream.events import DEFAULT_MAX_MESSAGE_BYTES, Invalid, TeacherEvent
from stream.formats import FormatError, to_event
from stream.producer import check

SUFFIXES = (".jsonl", ".ndjson", ".json")


@dataclass
class IngestReport:
    """What one ingest did: lines read, events sent, and rejections per reason."""

    lines: int = 0
    sent: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass(frozen=True)
class Line:
    """One input line and where it came from (``file:line`` in reject records)."""

    source: str
    number: int
    text: bytes


def input_files(paths: Iterable[str | Path]) -> list[Path | None]:
    """Expand directories to their JSONL files (sorted); ``-`` is stdin (None)."""
    out: list[Path | None] = []
    for item in paths:
        if str(item) == "-":
            out.append(None)
            continue
        path = Path(item)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES
                              and p.is_file()))
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return out


def read_lines(files: Iterable[Path | None], stdin: IO[bytes] | None = None) -> Iterator[Line]:
    """Non-blank lines of every file, in order; gzip (``.gz``) files are read transparently."""
    for path in files:
        if path is None:
            yield from _lines("<stdin>", stdin or sys.stdin.buffer)
            continue
        if path.suffix == ".gz":
            import gzip

            with gzip.open(path, "rb") as fh:
                yield from _lines(str(path), fh)
        else:
            with open(path, "rb") as fh:
                yield from _lines(str(path), fh)


def _lines(name: str, fh: Iterable[bytes]) -> Iterator[Line]:
    for number, text in enumerate(fh, 1):
        text = text.strip()
        if text:
            yield Line(name, number, text)


def convert(line: Line, fmt: str, mapping: Mapping[str, str],
            max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> TeacherEvent | Invalid:
    """One line as a valid event, or the :class:`Invalid` saying why not."""
    try:
        record = orjson.loads(line.text)
    except orjson.JSONDecodeError as exc:
        return Invalid("not_json", str(exc)[:200])
    try:
        event = to_event(record, fmt, mapping)
    except FormatError as exc:
        return Invalid(exc.reason, exc.detail)
    return check(event, max_bytes)


def ingest_lines(lines: Iterable[Line], send: Callable[[TeacherEvent], object],
                 rejects: IO[bytes] | None, fmt: str = "auto",
                 mapping: Mapping[str, str] | None = None,
                 max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 on_line: Callable[[Line], None] | None = None) -> IngestReport:
    """Convert and send every line (what ``send`` returns is ignored); rejects go to
    ``rejects`` as JSONL with their reason."""
    report = IngestReport()
    for line in lines:
        report.lines += 1
        result = convert(line, fmt, mapping or {}, max_bytes)
        if isinstance(result, Invalid):
            report.rejected[result.reason] += 1
            if rejects is not None:
                rejects.write(reject_record(line, result) + b"\n")
        else:
            send(result)
            report.sent += 1
        if on_line is not None:
            on_line(line)
    return report


def reject_record(line: Line, invalid: Invalid) -> bytes:
    """The rejects-file line: reason, detail, origin and the original text (as text)."""
    doc: dict[str, Any] = {"reason": invalid.reason, "detail": invalid.detail,
                           "source": f"{line.source}:{line.number}",
                           "line": line.text.decode("utf-8", "replace")}
    return orjson.dumps(doc)
