"""The ScaNN index of an exported version: built beside the model, checked against its embeddings.

It lives in ``<version>/index/`` (see ``version``). Its settings are checked against the catalog
before anything is loaded; the build measures its agreement with exact top-k and refuses (writes
nothing) below ``MIN_AGREEMENT``; a reader refuses an index whose fingerprint is not the
version's, or whose recorded agreement is below the floor.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from tfcroloss.pipelines.files import atomic_directory, atomic_write_text
from tfcroloss.pipelines.retrieval import (
    RetrievalIndex,
    agreement,
    build_index,
    catalog_ids,
    check_k,
    load_index,
)
from tfcroloss.pipelines.retrieval.scann import scann_settings
from tfcroloss.pipelines.serving.version import (
    BUILD_FILE,
    INDEX_DIR,
    SEARCHER_DIR,
    FingerprintMismatch,
    load_embeddings,
    read_metadata,
)

MIN_AGREEMENT = 0.8
"""The least agreement@k with exact top-k an index may have: below it, it is not written (nor
read); the default settings stay well above it (docs/serving.md, "ScaNN's parameters")."""
DEFAULT_K = 100
"""The k an index is tuned and checked for unless told (the catalog size if smaller)."""


class LowAgreement(ValueError):
    """An index whose top-k agrees too little with exact top-k to be served."""


def build_version_index(
    version_dir: str | os.PathLike,
    *,
    k: int | None = None,
    sample_queries: int = 1000,
    overwrite: bool = False,
    seed: int = 0,
    **overrides: Any,
) -> dict[str, Any]:
    """Builds the ScaNN index of an exported version into ``<version>/index/`` and returns its
    ``build.json``.

    ``k`` is within the catalog (default ``DEFAULT_K``, or the catalog size if smaller).
    Parameters come from ``retrieval.scann.scann_parameters(num_items, k)``; ``overrides`` (e.g.
    ``num_leaves``, ``num_leaves_to_search``, ``reorder``, ``partition``, ``scoring``) replace them;
    both are checked against the catalog before the embeddings are read.
    ``agreement@k`` is measured against exact top-k on ``sample_queries`` catalog vectors
    (user and item vectors share one space); below ``MIN_AGREEMENT`` the index is refused
    (``LowAgreement``) and an existing one is left as it was. The index appears atomically.
    """
    if isinstance(sample_queries, bool) or not isinstance(sample_queries, int) or sample_queries < 1:
        raise ValueError(f"sample_queries must be an integer >= 1, got {sample_queries!r}")
    version_dir = Path(version_dir)
    metadata = read_metadata(version_dir)
    num_items = int(metadata["num_items"])
    k = min(DEFAULT_K, num_items) if k is None else check_k(k, num_items)
    scann_settings(num_items, k, **overrides)  # bad settings are refused before the embeddings are read
    target = version_dir / INDEX_DIR
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite (--overwrite) to rebuild it")
    embeddings = load_embeddings(version_dir, metadata)
    ids = catalog_ids(num_items)
    started = time.perf_counter()
    index = build_index("scann", embeddings, ids, k_default=k, **overrides)
    build_seconds = time.perf_counter() - started
    rng = np.random.default_rng(seed)
    queries = embeddings[rng.choice(num_items, size=min(sample_queries, num_items), replace=False)]
    exact_ids = build_index("exact", embeddings, ids).search(queries, k)[1]
    measured = agreement(index.search(queries, k)[1], exact_ids)
    if measured < MIN_AGREEMENT:
        params = index.params
        now = [f"{params['num_leaves_to_search']} of {params['num_leaves']} leaves searched (num_leaves_to_search)"
               if params["partition"] else "every item searched"]
        if params["scoring"] == "ah":
            now.append(f"{params['reorder']} candidates re-scored (reorder)")
        raise LowAgreement(
            f"{version_dir}: the index agrees {measured:.3f} with exact top-{k} on {len(queries)} queries, below "
            f"the floor of {MIN_AGREEMENT}; nothing written. Search more leaves or re-score more candidates "
            f"(now {', '.join(now)}), or keep the defaults"
        )
    record = {
        "fingerprint": metadata["fingerprint"],
        "kind": index.kind,
        "params": index.params,
        "k": k,
        f"agreement@{k}": round(measured, 4),
        "agreement_queries": len(queries),
        "build_seconds": round(build_seconds, 3),
    }
    with atomic_directory(target, overwrite=True) as staging:
        index.save(staging / SEARCHER_DIR)
        atomic_write_text(staging / BUILD_FILE, json.dumps(record, indent=2) + "\n")
    return record


def load_version_index(index_dir: Path, metadata: dict[str, Any]) -> tuple[RetrievalIndex, dict[str, Any]]:
    """The ScaNN index in ``index_dir`` and its ``build.json``, refused unless built from this
    version's embeddings (``metadata`` is the version's ``export.json``)."""
    info = read_build_info(index_dir, metadata)
    searcher = load_index(index_dir / SEARCHER_DIR)
    if searcher.num_items != metadata["num_items"]:
        raise FingerprintMismatch(f"{index_dir} indexes {searcher.num_items} items, the model {metadata['num_items']}")
    return searcher, info


def read_build_info(index_dir: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """The ``build.json`` of the ScaNN index in ``index_dir``, refused unless the index was built
    from this version's embeddings."""
    build_file = index_dir / BUILD_FILE
    if not build_file.is_file():
        raise FileNotFoundError(f"{index_dir} holds no ScaNN index; build one with `tfcroloss index`")
    info = json.loads(build_file.read_text())
    if info["fingerprint"] != metadata["fingerprint"]:
        raise FingerprintMismatch(
            f"{index_dir} was built from other item embeddings than model version {metadata['version']} "
            f"({info['fingerprint'][:19]}... != {metadata['fingerprint'][:19]}...); rebuild it with "
            "`tfcroloss index --overwrite`"
        )
    measured = info[f"agreement@{info['k']}"]
    if measured < MIN_AGREEMENT:
        raise LowAgreement(
            f"{index_dir}: the index agrees {measured} with exact top-{info['k']} ({BUILD_FILE}), below the floor of "
            f"{MIN_AGREEMENT}; rebuild it with `tfcroloss index --overwrite` (default settings), or search exactly"
        )
    return info
