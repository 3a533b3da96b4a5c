"""Export: a trained run as a versioned SavedModel that stock TensorFlow Serving can load.

``saved_models/NAME/<version>/`` holds standard TensorFlow ops only (no ScaNN, no Python), and::

    saved_model.pb, variables/     the graph: raw item ids -> user embedding, and exact top-K
    assets/item_tokens.txt         raw item ids, one a line (line i: item id i + 1)
    assets.extra/export.json       version, maxlen, dim, tau, num_items, fingerprint, source run
    assets.extra/item_embeddings.npy            float32 [num_items, dim], L2-normalised (row i: id i+1)
    assets.extra/tf_serving_warmup_requests     TFRecord of PredictionLog, replayed by TF Serving on load
    index/                         optional ScaNN index, added later by ``serving.build_version_index``

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
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from tfcroloss.pipelines.files import atomic_write_text

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


class _ServingModule(tf.Module):
    """The exported graph: raw ids -> ids -> user tower; catalog scores and top-K."""

    def __init__(self, model: Any, catalog: np.ndarray, tokens_file: str, maxlen: int, tau: float):
        super().__init__(name="tfcroloss_retrieval")
        self._user_embeddings = model.user_embeddings  # a bound method: not saved itself
        self.maxlen = maxlen
        # Tracked so that the SavedModel holds every weight the user tower reads.
        self.tower_weights = [*model.item_embedding.variables, *model.user_tower.variables]
        self.catalog = tf.Variable(catalog, trainable=False, name="item_embeddings")
        self.tau = tf.constant(tau, tf.float32)
        self.token_to_id = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                tokens_file, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
            ),
            default_value=-1,
        )
        self.id_to_token = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                tokens_file, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
            ),
            default_value="",
        )

    def _encode(self, history: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        ids = self.token_to_id.lookup(history) + 1  # line i is item id i + 1; unknown -> 0
        known = tf.ragged.boolean_mask(ids, ids > 0)[:, -self.maxlen :]
        padded = tf.cast(known.to_tensor(default_value=0, shape=[None, self.maxlen]), tf.int32)
        return self._user_embeddings(padded), ids

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history")])
    def user_embedding(self, history: tf.Tensor) -> dict[str, tf.Tensor]:
        users, ids = self._encode(history)
        return {"user_embedding": users, "history_item_ids": ids}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.string, name="history"),
            tf.TensorSpec([], tf.int32, name="k"),
        ]
    )
    def top_k(self, history: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        users, _ = self._encode(history)
        scores = self.tau * tf.matmul(users, self.catalog, transpose_b=True)
        values, rows = tf.math.top_k(scores, tf.minimum(k, tf.shape(self.catalog)[0]))
        return {"item_ids": self.id_to_token.lookup(tf.cast(rows, tf.int64)), "scores": values}


def export_model(
    model: Any,
    item_tokens: np.ndarray,
    model_root: str | os.PathLike,
    *,
    maxlen: int,
    source: dict[str, Any] | None = None,
    version: int | None = None,
) -> Path:
    """Exports a two-tower model as ``model_root/<version>`` and returns that directory.

    ``model`` needs ``user_embeddings(int32 [B, maxlen])``, ``catalog_embeddings()``,
    ``item_embedding``, ``user_tower`` and ``temperature_scale`` (``TwoTowerModel`` has them);
    ``item_tokens[i]`` is the raw id of item id i (``item_tokens[0]`` is padding). ``version``
    defaults to the latest existing one plus 1.
    """
    catalog = np.ascontiguousarray(model.catalog_embeddings(), dtype=np.float32)
    tokens = [str(token) for token in item_tokens]
    _check_tokens(tokens, num_items=len(catalog))
    root = Path(model_root)
    existing = list_versions(root)
    version = (existing[-1] + 1 if existing else 1) if version is None else int(version)
    if version < 1 or version in existing:
        raise FileExistsError(f"{root / str(version)}: version must be a new positive integer")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".export-{version}-", dir=root))
    try:
        with tempfile.TemporaryDirectory() as scratch:
            tokens_file = Path(scratch) / TOKENS_FILE
            tokens_file.write_text("\n".join(tokens[1:]) + "\n")
            module = _ServingModule(model, catalog, str(tokens_file), maxlen, model.temperature_scale)
            tf.saved_model.save(
                module,
                str(staging),
                signatures={
                    SIGNATURE_USER: module.user_embedding.get_concrete_function(),
                    SIGNATURE_TOP_K: module.top_k.get_concrete_function(),
                },
            )
        (staging / EXTRA_DIR).mkdir()
        np.save(staging / EMBEDDINGS_PATH, catalog)
        _write_warmup(staging / WARMUP_PATH, tokens[1 : 1 + 2 * maxlen], maxlen)
        metadata = {
            "format": FORMAT_VERSION,
            "version": version,
            "num_items": len(catalog),
            "dim": int(catalog.shape[1]),
            "maxlen": int(maxlen),
            "tau": float(model.temperature_scale),
            "fingerprint": fingerprint(catalog),
            "signatures": [SIGNATURE_USER, SIGNATURE_TOP_K],
            "source": source or {},
        }
        atomic_write_text(staging / METADATA_PATH, json.dumps(metadata, indent=2) + "\n")
        staging.rename(root / str(version))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root / str(version)


def export_run(run_dir: str | os.PathLike, model_root: str | os.PathLike, *, version: int | None = None) -> Path:
    """Exports the best weights of a trained run (see ``export_model``)."""
    from tfcroloss.pipelines.train import load_run

    run = load_run(run_dir)
    source = {"run": str(Path(run_dir).resolve()), "data": str(run.config.data.path)}
    return export_model(
        run.model, run.dataset.item_tokens, model_root,
        maxlen=run.config.data.maxlen, source=source, version=version,
    )


def _check_tokens(tokens: list[str], num_items: int) -> None:
    if len(tokens) != num_items + 1 or tokens[0] != "":
        raise ValueError(
            f"item_tokens must hold '' (padding) and then one raw id per item ({num_items + 1} in all), "
            f"got {len(tokens)} starting with {tokens[:1]!r}"
        )
    bad = next((t for t in tokens[1:] if not t or "\n" in t or "\r" in t), None)
    if bad is not None:
        raise ValueError(f"raw item ids must be non-empty and hold no line breaks, got {bad!r}")
    if len(set(tokens)) != len(tokens):
        raise ValueError("raw item ids must be unique")


def _write_warmup(path: Path, sample_tokens: list[str], maxlen: int) -> None:
    """TF Serving's warm-up file: a few Predict requests of each signature and batch size."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch_size in (1, 8):
            history = np.array([sample_tokens[:maxlen]] * batch_size, dtype=object)
            for signature in (SIGNATURE_USER, SIGNATURE_TOP_K):
                request = predict_pb2.PredictRequest()
                request.model_spec.signature_name = signature
                request.inputs["history"].CopyFrom(tf.make_tensor_proto(history, dtype=tf.string))
                if signature == SIGNATURE_TOP_K:
                    request.inputs["k"].CopyFrom(tf.make_tensor_proto(10, dtype=tf.int32))
                log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())
