"""Serving fixtures: each test module gets its own exported version of the tiny run, with a ScaNN
index (modules add versions and rebuild indexes, so they do not share one); ``FakeRetriever``
serves HTTP tests that need no model."""

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn

from tfcroloss.pipelines.publish import export_run
from tfcroloss.pipelines.serving.index import build_version_index
from tfcroloss.pipelines.serving.index_process import IndexProcessError


@pytest.fixture(scope="module")
def version_dir(tiny_run, tmp_path_factory):
    path = export_run(tiny_run, tmp_path_factory.mktemp("serving") / "tiny")
    build_version_index(path, k=20, sample_queries=50)
    return path


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """``app`` on 127.0.0.1 (a free port) in a background thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class FakeRetriever:
    """What the service uses of a ``Retriever``, for a catalog of ``item1``..``item100``: an
    item scores the number of times the history holds it, ties broken towards lower ids."""

    num_items = 100
    index_info = {"kind": "fake"}
    signature_defs = {"serving_default": {"method_name": "tensorflow/serving/predict"}}

    def __init__(self, version_dir, isolate_index=False):
        self.version_dir = version_dir
        self.version = int(version_dir.name)
        self.alive = True
        """Set False to play an index process that ended: searches then fail as they would."""
        self._tokens = np.array(["", *(f"item{i}" for i in range(1, self.num_items + 1))], dtype=object)
        self._ids = {token: i for i, token in enumerate(self._tokens) if i}

    def encode(self, histories):
        history_ids = np.zeros((len(histories), max(map(len, histories))), np.int64)
        for row, history in enumerate(histories):
            history_ids[row, : len(history)] = [self._ids.get(token, 0) for token in history]
        users = np.zeros((len(histories), self.num_items + 1), np.float32)
        np.add.at(users, (np.arange(len(histories))[:, None], history_ids), 1.0)
        return users[:, 1:], history_ids

    def search(self, users, k, exclude=None):
        if not self.alive:
            raise IndexProcessError("the index process exited (exit code -9)")
        scores = users - np.arange(self.num_items) / 1000
        if exclude is not None:
            for row, ids in enumerate(exclude):
                scores[row, ids[ids > 0] - 1] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(scores, order, axis=1)
        return top, np.where(np.isfinite(top), order + 1, -1)

    def recommend_batch(self, histories, k):  # the watcher's warm-up
        return self.search(self.encode(histories)[0], k)

    def item_tokens(self, item_ids):
        return self._tokens[item_ids[item_ids > 0]].tolist()

    def tokens(self, item_ids):
        return self._tokens[np.maximum(item_ids, 0)]

    def unknown_ids(self, history, history_ids):
        return [history[i] for i in np.flatnonzero(history_ids[: len(history)] == 0)]

    def describe(self, *, public=False):
        return {"version": self.version, "num_items": self.num_items, "index": self.index_info}


FAKE_TOKENS = [f"item{i}" for i in range(1, FakeRetriever.num_items + 1)]


def fake_model_root(directory: Path) -> Path:
    """A model directory ``directory/tiny`` with one version, 1, for ``FakeRetriever``."""
    (directory / "tiny" / "1").mkdir(parents=True)
    return directory / "tiny"
