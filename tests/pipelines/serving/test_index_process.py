"""IndexProcess: an index opened and searched in a child process answers as the index itself,
raises what the child raised, never holds the caller's GIL while opening, and ends with its owner."""

import functools
import gc
import os
import signal
import threading
import time

import numpy as np
import pytest

from tfcroloss.pipelines.retrieval import build_index, load_index
from tfcroloss.pipelines.serving.index_process import IndexProcess, IndexProcessError
from tfcroloss.pipelines.serving.retriever import Retriever


def busy_open(directory: str, seconds: float):
    """An opener that keeps its interpreter's GIL for ``seconds`` (as ScaNN's loader does)."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass
    return load_index(directory)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((300, 8)).astype(np.float32)
    directory = tmp_path_factory.mktemp("index") / "exact"
    build_index("exact", embeddings, np.arange(10, 310)).save(directory)
    return directory, embeddings


@pytest.fixture(scope="module")
def isolated(saved):
    index = IndexProcess.load(saved[0])
    yield index
    index.close()


def test_answers_as_the_index_itself(saved, isolated):
    local = load_index(saved[0])
    queries = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    for got, want in zip(isolated.search(queries, 7), local.search(queries, 7), strict=True):
        np.testing.assert_array_equal(got, want)
    assert (isolated.num_items, isolated.dim, isolated.is_exact, isolated.served_kind) == (300, 8, True, "exact")
    np.testing.assert_array_equal(isolated.ids, local.ids)
    assert isolated.pid != os.getpid() and isolated.alive


def test_errors_come_back_with_their_type(saved, isolated, tmp_path):
    with pytest.raises(ValueError, match="k must be in 1..300"):
        isolated.search(np.zeros((1, 8), np.float32), 301)
    with pytest.raises(ValueError, match=r"shape \[Q, 8\]"):
        isolated.search(np.zeros((1, 3), np.float32), 1)
    with pytest.raises(FileNotFoundError):
        IndexProcess.load(tmp_path / "missing")
    assert isolated.search(np.zeros((1, 8), np.float32), 1)[1].shape == (1, 1)  # still serving


def test_opening_does_not_hold_the_callers_gil(saved):
    gaps, stop = [], threading.Event()

    def tick():
        last = time.perf_counter()
        while not stop.wait(0.005):
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        index = IndexProcess(functools.partial(busy_open, os.fspath(saved[0]), 1.5))
    finally:
        stop.set()
        ticker.join()
    index.close()
    # opening took >= 1.5 s of the child's GIL; this process kept running its threads
    assert sum(gaps) > 1.5 and max(gaps) < 0.5


def test_the_child_ends_with_close_or_with_its_owner_and_a_dead_child_is_reported(saved):
    index = IndexProcess.load(saved[0])
    process = index._process
    index.close()
    assert process.poll() is not None and not index.alive
    with pytest.raises(IndexProcessError, match="not running|exited"):
        index.search(np.zeros((1, 8), np.float32), 1)

    index = IndexProcess.load(saved[0])
    process = index._process
    del index
    gc.collect()
    assert process.wait(timeout=10) is not None

    index = IndexProcess.load(saved[0])
    os.kill(index.pid, signal.SIGKILL)
    index._process.wait(timeout=10)
    with pytest.raises(IndexProcessError, match="exit code -9|not running"):
        index.search(np.zeros((1, 8), np.float32), 1)
    assert not index.alive


def test_an_isolated_retriever_recommends_as_an_in_process_one(version_dir):
    local = Retriever.load(version_dir)
    isolated = Retriever.load(version_dir, isolate_index=True)
    assert isinstance(isolated.index, IndexProcess) and isolated.alive
    tokens = local.tokens(np.arange(1, 11)).tolist()
    histories = [tokens[:3], [tokens[5], "unknown"]]
    assert isolated.recommend_batch(histories, k=5) == local.recommend_batch(histories, k=5)
    isolated.index.close()
    assert not isolated.alive
