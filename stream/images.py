"""Images by reference: a URI plus the SHA-256 of the bytes, never the pixels themselves.

An event carries ``images``: a list of ``{"uri": ..., "sha256": ...}`` objects. A 1.5 MB
radiograph inlined as base64 would break the producer and the message limit; a reference
is a hundred bytes. The monitor checks the FORM only (this module never opens a file):

* :func:`parse_image_refs` -- the JSON shape: a short list, each URI a non-empty string
  without ``..`` segments, each hash 64 hex digits. A bad shape is ``bad_image``.
* :func:`confine` -- the URI lies under one of the configured image roots: a relative
  path is taken under the FIRST root; ``file://`` and absolute paths must fall under a
  local root; ``scheme://bucket/key`` (an object store, opened through fsspec by whoever
  reads the bytes) must start with a root of the same scheme. Outside every root is
  ``image_outside_roots``; both reasons end in the dead-letter topic.

The trainer opens the bytes (:func:`read_image_bytes`), checks the hash, and fails only
that group when the file is missing or changed.

>>> refs = parse_image_refs([{"uri": "case-1.png", "sha256": "ab" * 32}])
>>> refs[0].uri
'case-1.png'
>>> parse_image_refs([{"uri": "../etc/passwd", "sha256": "ab" * 32}]).reason
'bad_image'
>>> confine(refs[0], ["/data/cxr"])
'/data/cxr/case-1.png'
>>> confine(ImageRef("/tmp/x.png", "ab" * 32), ["/data/cxr"]).reason
'image_outside_roots'
>>> confine(ImageRef("s3://bucket/cxr/a.png", "ab" * 32), ["s3://bucket/cxr"])
's3://bucket/cxr/a.png'
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from stream.events import Invalid

MAX_IMAGES = 8  # references per event; a case has a handful of studies, not hundreds
MAX_URI_CHARS = 2048
IMAGE_REASONS = ("bad_image", "image_outside_roots")  # dead-letter reasons of this module
LOAD_FAILURES = ("image_missing", "image_hash_mismatch", "image_outside_roots",
                 "image_unreadable")  # why the trainer could not use a group's image
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ImageRef:
    """Where an image is and what its bytes hash to (lower-case hex SHA-256)."""

    uri: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"uri": self.uri, "sha256": self.sha256}


def image_ref(path: str | Path, uri: str | None = None) -> ImageRef:
    """A reference to a local file, hashing its bytes; ``uri`` defaults to the path."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return ImageRef(uri if uri is not None else str(path), digest)


def _bad(detail: str) -> Invalid:
    return Invalid("bad_image", detail)


def _has_dotdot(uri: str) -> bool:
    path = urlsplit(uri).path if _SCHEME.match(uri) else uri
    return ".." in unquote(path).replace("\\", "/").split("/")


def parse_image_refs(value: Any) -> tuple[ImageRef, ...] | Invalid:
    """The ``images`` field of an event as references, or ``Invalid("bad_image")``."""
    if not isinstance(value, list):
        return _bad(f"images: expected a list, got {type(value).__name__}")
    if len(value) > MAX_IMAGES:
        return _bad(f"images: {len(value)} references > limit {MAX_IMAGES}")
    refs = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            return _bad(f"images[{i}]: expected an object with uri and sha256")
        uri, digest = item.get("uri"), item.get("sha256")
        if not isinstance(uri, str) or not uri.strip() or len(uri) > MAX_URI_CHARS:
            return _bad(f"images[{i}].uri: a non-empty string of at most {MAX_URI_CHARS}")
        if not isinstance(digest, str) or not _SHA256.match(digest.lower()):
            return _bad(f"images[{i}].sha256: 64 hexadecimal digits")
        if _has_dotdot(uri):
            return _bad(f"images[{i}].uri: '..' segments are not allowed")
        refs.append(ImageRef(uri, digest.lower()))
    return tuple(refs)


def _local(uri: str) -> str | None:
    """The local path of ``uri`` (plain path or ``file://``), or None for other schemes."""
    m = _SCHEME.match(uri)
    if m is None:
        return uri
    if m.group(1).lower() != "file":
        return None
    return unquote(urlsplit(uri).path)


def _local_roots(roots: Sequence[str | Path]) -> list[str]:
    """The roots that are local directories (plain paths or ``file://``), normalised."""
    return [posixpath.normpath(p) for p in (_local(str(r)) for r in roots) if p is not None]


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root if root.endswith("/") else root + "/")


def confine(ref: ImageRef, roots: Sequence[str | Path]) -> str | Invalid:
    """The location ``ref`` resolves to under ``roots``, or ``Invalid("image_outside_roots")``.

    Pure string work on normalised paths: no file is touched, so a symlink inside a root
    is only caught when the bytes are read (:func:`read_image_bytes` resolves it).
    """
    if not roots:
        return Invalid("image_outside_roots", "no image roots are configured")
    uri = ref.uri
    local = _local(uri)
    if local is None:  # an object store: the same scheme and a root's prefix
        for root in map(str, roots):
            if _SCHEME.match(root) and _under(uri, root):
                return uri
        return Invalid("image_outside_roots", f"{uri[:200]} is under no image root")
    local_roots = _local_roots(roots)
    if not posixpath.isabs(local):
        if not local_roots:
            return Invalid("image_outside_roots", "relative path and no local image root")
        return posixpath.normpath(posixpath.join(local_roots[0], local))
    path = posixpath.normpath(local)
    if any(_under(path, r) for r in local_roots):
        return path
    return Invalid("image_outside_roots", f"{path[:200]} is under no image root")


def confine_all(refs: Sequence[ImageRef], roots: Sequence[str | Path]) -> Invalid | None:
    """The first reference outside the roots as an ``Invalid``; None when all are inside."""
    for ref in refs:
        where = confine(ref, roots)
        if isinstance(where, Invalid):
            return where
    return None


@dataclass(frozen=True, slots=True)
class ImageUnavailable:
    """Why an image could not be used; ``reason`` is one of :data:`LOAD_FAILURES`."""

    reason: str
    detail: str = ""

    def __bool__(self) -> bool:
        return False


def read_image_bytes(ref: ImageRef, roots: Sequence[str | Path]) -> bytes | ImageUnavailable:
    """The bytes of ``ref`` with their hash checked; object stores through fsspec.

    Local paths are resolved (symlinks followed) and must still lie under a root.
    """
    where = confine(ref, roots)
    if isinstance(where, Invalid):
        return ImageUnavailable("image_outside_roots", where.detail)
    try:
        if _SCHEME.match(where):
            import fsspec  # the optional `multimodal` extra; only object-store URIs need it

            with fsspec.open(where, "rb") as fh:
                data: bytes = fh.read()
        else:
            real = Path(where).resolve()
            roots_real = [Path(r).resolve() for r in _local_roots(roots)]
            if not any(real == r or r in real.parents for r in roots_real):
                return ImageUnavailable("image_outside_roots", f"{where} leaves the roots")
            data = real.read_bytes()
    except FileNotFoundError:
        return ImageUnavailable("image_missing", where[:200])
    except OSError as exc:
        return ImageUnavailable("image_unreadable", f"{where[:200]}: {exc}"[:300])
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        return ImageUnavailable("image_hash_mismatch", where[:200])
    return data
