"""The exported version: the on-disk contract between export and everything that serves it.

``saved_models/NAME/<version>/`` holds standard TensorFlow ops only (no ScaNN, no Python), and::

    saved_model.pb, variables/     the graph: raw item ids -> user embedding, and exact top-K
    assets/item_tokens.txt         raw item ids, one a line (line i: item id i + 1)
    assets.extra/export.json       version, maxlen, dim, tau, num_items, fingerprint, source run
    assets.extra/item_embeddings.npy            float32 [num_items, dim], L2-normalised (row i: id i+1)
    assets.extra/tf_serving_warmup_requests     TFRecord of PredictionLog, replayed by TF Serving on load
    index/                         optional ScaNN index, added later by ``serving.index.build_version_index``:
        build.json                 the embeddings' fingerprint, the parameters, agreement@k with exact
        searcher/                  a ``retrieval`` index directory

Signatures (see docs/serving.md for the REST requests):

- ``serving_default``: ``history`` string [B, L] -> ``user_embedding`` float32 [B, dim] and
  ``history_item_ids`` int64 [B, L] (the item id of each history entry; 0 where unknown or "").
- ``top_k``: ``history`` string [B, L], ``k`` int32 scalar -> ``item_ids`` string [B, k] and
  ``scores`` float32 [B, k] (tau * cosine, exact, over the whole exported catalog).

Unknown ids and "" (to pad ragged batches) are ignored; of the rest, the most recent ``maxlen``
(the last ones) form the history, zero-padded at the end as in training.

A version is written under a hidden temporary name and renamed into place, so readers (and TF
Serving, which only looks at integer names) never see half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

SIGNATURE_USER = "serving_default"
SIGNATURE_TOP_K = "top_k"
TOKENS_FILE = "item_tokens.txt"
TOKENS_PATH = Path("assets") / TOKENS_FILE
EXTRA_DIR = Path("assets.extra")
METADATA_PATH = EXTRA_DIR / "export.json"
EMBEDDINGS_PATH = EXTRA_DIR / "item_embeddings.npy"
WARMUP_PATH = EXTRA_DIR / "tf_serving_warmup_requests"
INDEX_DIR = "index"
FORMAT_VERSION = 1
BUILD_FILE = "build.json"
SEARCHER_DIR = "searcher"


class FingerprintMismatch(ValueError):
    """An index and a model that were not built from the same item embeddings."""


def fingerprint(embeddings: np.ndarray) -> str:
    """``sha256:<hex>`` of the shape and float32 bytes of an embedding table."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    digest = hashlib.sha256(repr(embeddings.shape).encode())
    digest.update(embeddings.tobytes())
    return f"sha256:{digest.hexdigest()}"


def list_versions(model_root: str | os.PathLike) -> list[int]:
    """The exported versions under ``model_root``, ascending (only integer-named directories)."""
    root = Path(model_root)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and p.is_dir())


def version_number(version_dir: str | os.PathLike, metadata: dict[str, Any]) -> int:
    """A version's number: the name of its folder, as TF Serving reads it (a version exported as
    1 and copied to ``NAME/2`` is version 2); ``export.json``'s ``version`` only for a folder
    whose name is not a number."""
    name = Path(version_dir).name
    return int(name) if name.isdigit() else int(metadata["version"])


def resolve_version(path: str | os.PathLike) -> Path:
    """A version directory: ``path`` itself if it is one, else the latest version under it."""
    path = Path(path)
    if (path / METADATA_PATH).is_file():
        return path
    versions = list_versions(path)
    if not versions:
        raise FileNotFoundError(f"{path} is neither an exported version nor a directory of versions")
    return path / str(versions[-1])


def read_metadata(version_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``export.json`` of a version directory."""
    path = Path(version_dir) / METADATA_PATH
    if not path.is_file():
        raise FileNotFoundError(f"{version_dir} is not an exported version: {METADATA_PATH} is missing")
    return json.loads(path.read_text())


def read_signature_defs(version_dir: str | os.PathLike) -> dict[str, Any]:
    """The SignatureDefs of the version's two signatures, as JSON (TF Serving's metadata
    answer), read from its ``saved_model.pb``."""
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((Path(version_dir) / "saved_model.pb").read_bytes())
    return {
        key: json_format.MessageToDict(value, preserving_proto_field_name=True)
        for key, value in saved_model.meta_graphs[0].signature_def.items()
        if key in (SIGNATURE_USER, SIGNATURE_TOP_K)
    }


def version_state(version_dir: str | os.PathLike) -> tuple[tuple[str, int, int], ...]:
    """(relative path, size, mtime in ns) of every file of a version, hidden entries left out
    (an index being built is a hidden ``.index.tmp-*``): it changes when a file is added,
    replaced or still being copied, e.g. an ``index/`` rebuilt with ``--overwrite``."""
    root = Path(version_dir)
    state = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = os.path.join(directory, name)
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # removed while listing
                continue
            state.append((os.path.relpath(path, root), stat.st_size, stat.st_mtime_ns))
    return tuple(state)


def load_embeddings(version_dir: str | os.PathLike, metadata: dict[str, Any]) -> np.ndarray:
    """The version's item embeddings, checked against the fingerprint in ``export.json``."""
    embeddings = np.load(Path(version_dir) / EMBEDDINGS_PATH)
    if fingerprint(embeddings) != metadata["fingerprint"]:
        raise FingerprintMismatch(
            f"{version_dir}: {EMBEDDINGS_PATH} does not match the fingerprint in {METADATA_PATH}"
        )
    return embeddings
