"""A sweep of ScaNN configurations: agreement with exact top-500 against search speed on the 1.7M-item
catalog of ``bench_evaluation``, for the 2,000 first users (what ``scann_parameters`` was chosen from).

    python -m benchmarks.sweep_scann [ah soar int8 bf] > benchmarks/results/scann-sweep.jsonl

On trees of sqrt(n) and 2 sqrt(n) leaves: ``ah`` anisotropic hashing + exact re-scoring; ``soar``
the same with SOAR spilling (lambda 1.5); ``int8`` int8 scoring of the searched leaves +
re-scoring; ``bf`` float scoring of the searched leaves. Exact search is timed once, before the
sweep (not interleaved): run it on an idle machine. Prints one JSON object per line.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import numpy as np
from scann.scann_ops.py import scann_ops_pybind

from benchmarks.bench_evaluation import K, clustered_embeddings
from benchmarks.provenance import git_commit
from tfcroloss.pipelines.retrieval import agreement
from tfcroloss.pipelines.retrieval.exact import ExactIndex

NUM_ITEMS = 1_700_000
QUERIES = 2_000
FAMILIES = ("ah", "soar", "int8", "bf")


def timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def main() -> None:
    families = sys.argv[1:] or list(FAMILIES)
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise SystemExit(f"unknown family {unknown[0]!r}; valid families: {', '.join(FAMILIES)}")
    items, users, _, _ = clustered_embeddings(NUM_ITEMS, 10_000, np.random.default_rng(0))
    queries = users[:QUERIES]
    exact = ExactIndex(items)
    exact.search(queries[:64], K)  # warm-up
    (_, truth), exact_s = timed(lambda: exact.search(queries, K))
    print(json.dumps({"git_commit": git_commit(), "exact_users_per_s": round(QUERIES / exact_s, 1)}), flush=True)
    root = round(np.sqrt(NUM_ITEMS))
    for leaves in (root, 2 * root):

        def tree(leaves: int = leaves, **options: float) -> object:
            builder = scann_ops_pybind.builder(items, K, "dot_product")
            return builder.tree(num_leaves=leaves, num_leaves_to_search=50, training_sample_size=250_000, **options)

        searched = [leaves // 40, leaves // 25, leaves // 15]
        configs = {
            "ah": (lambda: tree().score_ah(2, anisotropic_quantization_threshold=0.2).reorder(4000),
                   [{"leaves_to_search": n, "pre_reorder_num_neighbors": r} for n in searched for r in (1000, 2000, 4000)]),
            "soar": (lambda: tree(soar_lambda=1.5, overretrieve_factor=2.0)
                     .score_ah(2, anisotropic_quantization_threshold=0.2).reorder(4000),
                     [{"leaves_to_search": n, "pre_reorder_num_neighbors": r}
                      for n in (leaves // 60, leaves // 40, leaves // 25) for r in (1000, 2000, 4000)]),
            "int8": (lambda: tree().score_brute_force(True).reorder(4000),
                     [{"leaves_to_search": n, "pre_reorder_num_neighbors": r} for n in searched for r in (1000, 2000)]),
            "bf": (lambda: tree().score_brute_force(),
                   [{"leaves_to_search": n} for n in (leaves // 40, leaves // 20, leaves // 10)]),
        }
        for family in families:
            make, sweep = configs[family]
            searcher, build_s = timed(lambda make=make: make().build())
            for options in sweep:
                searcher.search_batched_parallel(queries[:200], final_num_neighbors=K, **options)  # warm-up
                (found, _), search_s = timed(
                    lambda options=options, searcher=searcher: searcher.search_batched_parallel(
                        queries, final_num_neighbors=K, **options))
                print(json.dumps({
                    "family": family, "num_leaves": leaves, "build_s": round(build_s, 1), **options,
                    "users_per_s": round(QUERIES / search_s), "speedup_vs_exact": round(exact_s / search_s, 1),
                    "agreement": round(agreement(found.astype(np.int64), truth), 4),
                }), flush=True)


if __name__ == "__main__":
    main()
