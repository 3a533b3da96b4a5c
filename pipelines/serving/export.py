"""Export: a trained model as a versioned SavedModel that stock TensorFlow Serving can load.

The SavedModel holds standard TensorFlow ops only (no ScaNN, no Python); its signatures and the
layout of a version directory are in ``version``. A version is written under a hidden temporary
name and renamed into place, so readers (and TF Serving, which only looks at integer names) never
see half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from tfcroloss.pipelines.files import atomic_directory, atomic_write_text
from tfcroloss.pipelines.serving.version import (
    EMBEDDINGS_PATH,
    EXTRA_DIR,
    FORMAT_VERSION,
    METADATA_PATH,
    SIGNATURE_TOP_K,
    SIGNATURE_USER,
    TOKENS_FILE,
    WARMUP_PATH,
    fingerprint,
    list_versions,
)


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
    with atomic_directory(root / str(version)) as staging, tempfile.TemporaryDirectory() as scratch:
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
    return root / str(version)


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

