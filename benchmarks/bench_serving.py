"""Latency and throughput of the HTTP service (`tfcroloss serve`) for top-100 requests.

    python -m benchmarks.bench_serving [--quick]

Builds a synthetic export without training: a two-tower model whose item table is the clustered
32-d catalog of ``bench_evaluation`` (1.7M items; --quick: 200k) and an untrained user tower,
exported and ScaNN-indexed as `tfcroloss export` / `tfcroloss index` would. The service runs in
its own process on 127.0.0.1; this process is the client. Measures single-request latency
(sequential requests, p50/p99) and throughput at a concurrency of 8 over a bounded number of
requests. Prints one JSON object per result and writes benchmarks/results/serving[-quick].json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import tensorflow as tf

from benchmarks.bench_evaluation import DIM, clustered_embeddings
from tfcroloss.models.loss_presets import build_loss
from tfcroloss.models.two_tower import TwoTowerModel
from tfcroloss.pipelines.serving.export import export_model
from tfcroloss.pipelines.serving.index import build_version_index

RESULTS = Path(__file__).parent / "results"
K = 100
HISTORY_LENGTH = 20
MAXLEN = 50
CONCURRENCY = 8
TARGET_P99_MS = 20.0


def synthetic_export(root: Path, num_items: int, rng: np.random.Generator) -> Path:
    """An exported, ScaNN-indexed version of a model with a clustered item table."""
    items, _, _, _ = clustered_embeddings(num_items, 1, rng)
    model = TwoTowerModel(
        num_items, loss=build_loss("softmax", num_items), embedding_dim=DIM, hidden_dims=(DIM,)
    )
    model.user_embeddings(tf.zeros([1, MAXLEN], tf.int32))
    model.item_embedding.embeddings.assign(np.concatenate([np.zeros((1, DIM), np.float32), items]))
    tokens = np.array(["", *(f"item{i}" for i in range(1, num_items + 1))], dtype=object)
    version = export_model(model, tokens, root, maxlen=MAXLEN, source={"synthetic": num_items})
    build_version_index(version, k=K)
    return version


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the service exited with status {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the service did not become healthy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200k items and fewer requests")
    args = parser.parse_args()
    num_items = 200_000 if args.quick else 1_700_000
    latency_requests = 300 if args.quick else 1000
    throughput_requests = 400 if args.quick else 2000
    rng = np.random.default_rng(0)
    results = []

    def emit(record: dict) -> None:
        results.append(record)
        print(json.dumps(record), flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        version = synthetic_export(Path(scratch) / "bench", num_items, rng)
        index = json.loads((version / "index" / "build.json").read_text())
        emit(
            {
                "stage": "export+index",
                "num_items": num_items,
                "seconds": round(time.perf_counter() - started, 1),
                "index_params": index["params"],
                f"agreement@{K}": index[f"agreement@{K}"],
            }
        )

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tfcroloss.pipelines.cli",
                "serve",
                "--model",
                str(version.parent),
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        try:
            wait_healthy(url, server)
            bodies = [
                {
                    "history": [f"item{i}" for i in rng.integers(1, num_items + 1, HISTORY_LENGTH)],
                    "k": K,
                }
                for _ in range(max(latency_requests, throughput_requests))
            ]
            with httpx.Client(base_url=url, timeout=30) as client:
                for body in bodies[:20]:  # warm-up
                    client.post("/recommend", json=body).raise_for_status()
                latencies = []
                for body in bodies[:latency_requests]:
                    sent = time.perf_counter()
                    client.post("/recommend", json=body).raise_for_status()
                    latencies.append(1000 * (time.perf_counter() - sent))
            p50, p99 = np.percentile(latencies, [50, 99])
            emit(
                {
                    "stage": "latency",
                    "num_items": num_items,
                    "k": K,
                    "requests": latency_requests,
                    "p50_ms": round(float(p50), 2),
                    "p99_ms": round(float(p99), 2),
                    "target_p99_ms": TARGET_P99_MS,
                    "meets_target": bool(p99 < TARGET_P99_MS),
                }
            )

            def worker(chunk: list[dict]) -> int:
                with httpx.Client(base_url=url, timeout=30) as client:
                    return sum(
                        client.post("/recommend", json=body).status_code == 200 for body in chunk
                    )

            chunks = [bodies[i:throughput_requests:CONCURRENCY] for i in range(CONCURRENCY)]
            sent = time.perf_counter()
            with ThreadPoolExecutor(CONCURRENCY) as pool:
                succeeded = sum(pool.map(worker, chunks))
            seconds = time.perf_counter() - sent
            emit(
                {
                    "stage": "throughput",
                    "num_items": num_items,
                    "k": K,
                    "concurrency": CONCURRENCY,
                    "requests": throughput_requests,
                    "succeeded": succeeded,
                    "requests_per_second": round(throughput_requests / seconds, 1),
                }
            )
        finally:
            server.terminate()
            server.wait(timeout=30)

    RESULTS.mkdir(exist_ok=True)
    name = "serving-quick.json" if args.quick else "serving.json"
    (RESULTS / name).write_text(
        json.dumps({"cpu_count": os.cpu_count(), "results": results}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
