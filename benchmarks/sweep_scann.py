"""A sweep of ScaNN configurations: agreement with exact top-k against search speed on the 1.7M-item
catalog of ``bench_evaluation``, for the 2,000 first users (what ``scann_parameters`` was chosen from).

    python -m benchmarks.sweep_scann [--k K] [ah ah1 soar int8 bf] >> benchmarks/results/scann-sweep[-kK].jsonl

On trees of sqrt(n) and 2 sqrt(n) leaves: ``ah`` anisotropic hashing (2 dimensions per block) +
exact re-scoring of 2k, 4k or 8k candidates; ``ah1`` the same with 1 dimension per block;
``soar`` ``ah`` with SOAR spilling (lambda 1.5); ``int8`` int8 scoring of the searched leaves +
re-scoring; ``bf`` float scoring of the searched leaves. Speed is measured twice: all 2,000
queries in one batched, parallel search (as evaluation does), and ``batch8_us_per_query``, one
thread searching batches of 8 (a service's micro-batches). Exact search is timed once, before the
sweep (not interleaved): run it on an idle machine. Prints one JSON object per line, the first with
the commit and k.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
from scann.scann_ops.py import scann_ops_pybind

from benchmarks.bench_evaluation import clustered_embeddings
from tfcroloss.pipelines.provenance import git_commit
from tfcroloss.pipelines.retrieval import agreement
from tfcroloss.pipelines.retrieval.exact import ExactIndex
from tfcroloss.pipelines.retrieval.scann import search_batch_size

NUM_ITEMS = 1_700_000
QUERIES = 2_000
FAMILIES = ("ah", "ah1", "soar", "int8", "bf")


def timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def batch8_us_per_query(search: Callable[[np.ndarray], object], queries: np.ndarray) -> float:
    """Median time per query of one thread searching batches of 8 (800 queries)."""
    times = []
    for start in range(0, 800, 8):
        _, seconds = timed(lambda start=start: search(queries[start : start + 8]))
        times.append(seconds / 8)
    return round(1e6 * float(np.median(times)), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=500, help="results per query (default 500)")
    parser.add_argument("families", nargs="*", help=f"any of {', '.join(FAMILIES)} (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown family {unknown[0]!r}; valid families: {', '.join(FAMILIES)}")
    k, families = args.k, args.families or list(FAMILIES)
    items, users, _, _ = clustered_embeddings(NUM_ITEMS, 10_000, np.random.default_rng(0))
    queries = users[:QUERIES]
    exact = ExactIndex(items)
    exact.search(queries[:64], k)  # warm-up
    (_, truth), exact_s = timed(lambda: exact.search(queries, k))
    print(json.dumps({"git_commit": git_commit(), "k": k, "exact_users_per_s": round(QUERIES / exact_s, 1)}), flush=True)
    batch = search_batch_size(QUERIES)  # as ScannIndex searches
    root = round(np.sqrt(NUM_ITEMS))
    for leaves in (root, 2 * root):

        def tree(leaves: int = leaves, **options: float) -> object:
            builder = scann_ops_pybind.builder(items, k, "dot_product")
            return builder.tree(num_leaves=leaves, num_leaves_to_search=50, training_sample_size=250_000, **options)

        searched = [leaves // 40, leaves // 25, leaves // 15]
        reorders = (2 * k, 4 * k, 8 * k)

        def ah(dimensions_per_block: int, **options: float) -> object:
            return tree(**options).score_ah(dimensions_per_block, anisotropic_quantization_threshold=0.2).reorder(8 * k)

        configs = {
            "ah": (lambda: ah(2), [{"leaves_to_search": n, "pre_reorder_num_neighbors": r} for n in searched for r in reorders]),
            "ah1": (lambda: ah(1), [{"leaves_to_search": n, "pre_reorder_num_neighbors": r} for n in searched for r in reorders]),
            "soar": (lambda: ah(2, soar_lambda=1.5, overretrieve_factor=2.0),
                     [{"leaves_to_search": n, "pre_reorder_num_neighbors": r}
                      for n in (leaves // 60, leaves // 40, leaves // 25) for r in reorders]),
            "int8": (lambda: tree().score_brute_force(True).reorder(8 * k),
                     [{"leaves_to_search": n, "pre_reorder_num_neighbors": r} for n in searched for r in reorders[:2]]),
            "bf": (lambda: tree().score_brute_force(),
                   [{"leaves_to_search": n} for n in (leaves // 40, leaves // 20, leaves // 10)]),
        }
        for family in families:
            make, sweep = configs[family]
            searcher, build_s = timed(lambda make=make: make().build())
            for options in sweep:
                searcher.search_batched_parallel(queries[:200], final_num_neighbors=k, **options)  # warm-up
                (found, _), search_s = timed(
                    lambda options=options, searcher=searcher: searcher.search_batched_parallel(
                        queries, final_num_neighbors=k, batch_size=batch, **options))
                print(json.dumps({
                    "family": family, "num_leaves": leaves, "build_s": round(build_s, 1), **options,
                    "users_per_s": round(QUERIES / search_s), "speedup_vs_exact": round(exact_s / search_s, 1),
                    "batch8_us_per_query": batch8_us_per_query(
                        lambda q, options=options, searcher=searcher: searcher.search_batched(
                            q, final_num_neighbors=k, **options), queries),
                    "agreement": round(agreement(found.astype(np.int64), truth), 4),
                }), flush=True)


if __name__ == "__main__":
    main()
