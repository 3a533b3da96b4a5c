"""Serving fixtures: each test module gets its own exported version of the tiny run, with a ScaNN
index (modules add versions and rebuild indexes, so they do not share one)."""

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from tfcroloss.pipelines.publish import export_run
from tfcroloss.pipelines.serving.index import build_version_index


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
