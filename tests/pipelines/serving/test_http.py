"""The HTTP service under bad input and load: strict types, limits, a bounded queue, metrics,
version reloads, and TensorFlow Serving's REST API (shapes from TF Serving's api_rest.md).

Most tests serve a ``FakeRetriever`` (no model, no TensorFlow); those that compare answers with
the model's own, or load versions from disk, serve the tiny run's export."""

import contextlib
import json
import os
import shutil
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tensorflow as tf

from tests.pipelines.serving.conftest import FAKE_TOKENS, FakeRetriever, fake_model_root, running
from tfcroloss.pipelines.serving import version
from tfcroloss.pipelines.serving.app import create_app
from tfcroloss.pipelines.serving.batching import Lookup, run_lookups
from tfcroloss.pipelines.serving.index import build_version_index
from tfcroloss.pipelines.serving.index_process import IndexProcess
from tfcroloss.pipelines.serving.retriever import Retriever
from tfcroloss.pipelines.serving.watcher import ModelWatcher

LIMITS = {"max_history": 20, "max_batch": 4, "max_id_length": 32, "max_body_bytes": 4096, "max_queue": 64}


@pytest.fixture(scope="module")
def retriever(version_dir):
    return Retriever.load(version_dir)


@pytest.fixture(scope="module")
def tokens(retriever):
    return retriever.tokens(np.arange(1, retriever.num_items + 1)).tolist()


@contextlib.contextmanager
def serving(model_root, **options):
    """The app on 127.0.0.1 (a free port) in a background thread; yields (base URL, app)."""
    app = create_app(model_root, **{**LIMITS, **options})
    with running(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def service(version_dir):
    with serving(version_dir.parent) as (url, app):
        yield url, app


@pytest.fixture(scope="module")
def url(service):
    return service[0]


@contextlib.contextmanager
def fake_serving(tmp_path, **options):
    """``serving`` of a model directory ``tiny`` whose versions load as ``FakeRetriever``s."""
    with serving(fake_model_root(tmp_path), load_retriever=FakeRetriever, **options) as service:
        yield service


@pytest.fixture(scope="module")
def fake_url(tmp_path_factory):
    with fake_serving(tmp_path_factory.mktemp("fake")) as (url, _):
        yield url


def test_recommend_answers_from_the_lookup_rows(fake_url):
    history = ["item3", "item5", "item3", "nope"]
    response = httpx.post(f"{fake_url}/recommend", json={"history": history, "k": 3, "exclude_history": False})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == 1 and body["unknown_ids"] == ["nope"]
    assert [item["id"] for item in body["items"]] == ["item3", "item5", "item1"]
    np.testing.assert_allclose([item["score"] for item in body["items"]], [1.998, 0.996, 0.0], atol=1e-6)

    batch = httpx.post(f"{fake_url}/recommend/batch", json={"histories": [history, ["item1"]], "k": 2}).json()
    assert [[item["id"] for item in result["items"]] for result in batch["results"]] == [
        ["item1", "item2"], ["item2", "item3"],
    ]
    assert [result["unknown_ids"] for result in batch["results"]] == [["nope"], []]


# Lookups: batched answers are those of Retriever.recommend.


def test_batched_lookups_give_the_retrievers_numbers(retriever, tokens):
    histories = [tokens[:3], tokens[10:30] + ["nope"], [tokens[7]], ["nope"]]
    lookups = [
        Lookup(retriever, [histories[0], histories[1]], 10, True, lambda r, rows: rows),
        Lookup(retriever, [histories[2]], 5, False, lambda r, rows: rows),
        Lookup(retriever, [histories[3]], 10, True, lambda r, rows: rows),
    ]
    outcomes = run_lookups(lookups)
    assert [error for _, _, error in outcomes] == [None, None, None]
    expected = [
        *retriever.recommend_batch(histories[:2], k=10),
        retriever.recommend(histories[2], k=5, exclude_history=False),
        retriever.recommend(histories[3], k=10),
    ]
    rows = [(outcomes[0][1], 0), (outcomes[0][1], 1), (outcomes[1][1], 0), (outcomes[2][1], 0)]
    for (got, row), want, history in zip(rows, expected, histories, strict=True):
        assert retriever.item_tokens(got.item_ids[row]) == want.item_ids
        np.testing.assert_allclose(got.scores[row][got.item_ids[row] > 0], want.scores, rtol=1e-6)
        assert retriever.unknown_ids(history, got.history_ids[row]) == want.unknown_ids


def test_concurrent_requests_share_batches_and_match_the_retriever(service, retriever, tokens):
    url, app = service
    histories = [tokens[i : i + 5] + ["nope"] for i in range(24)]

    def ask(history):
        return httpx.post(f"{url}/recommend", json={"history": history, "k": 7}, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(ask, histories))
    for history, response in zip(histories, responses, strict=True):
        assert response.status_code == 200, response.text
        want = retriever.recommend(history, k=7)
        body = response.json()
        assert [item["id"] for item in body["items"]] == want.item_ids
        np.testing.assert_allclose([item["score"] for item in body["items"]], want.scores, rtol=1e-6)
        assert body["unknown_ids"] == ["nope"]
    metrics = httpx.get(f"{url}/metrics").text
    assert "tfcroloss_lookup_batch_histories_count" in metrics


# Bad input: a 4xx that names the field.


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"history": ["a"], "k": "10"}, "k: Input should be a valid integer"),
        ({"history": ["a"], "k": 10.0}, "k: Input should be a valid integer"),
        ({"history": ["a"], "k": True}, "k: Input should be a valid integer"),
        ({"history": ["a"], "exclude_history": "yes"}, "exclude_history: Input should be a valid boolean"),
        ({"history": ["a", "x" * 33]}, "item id 1: 33 characters; the limit is 32"),
        (b'{"history": ["\\ud800", "50"], "k": 3}', "lone surrogates"),
        (b'{"history": ["\xff"], "k": 3}', "UTF-8"),
    ],
)
def test_strict_types_and_unicode(fake_url, body, message):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{fake_url}/recommend", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_a_large_body_is_refused_before_it_is_read(fake_url):
    response = httpx.post(f"{fake_url}/recommend", json={"history": ["a" * 30] * 200})
    assert response.status_code == 413
    assert "exceeds 4096 bytes" in response.json()["detail"]


@pytest.mark.parametrize(("path", "key"), [("/recommend", "detail"), ("/v1/models/tiny:predict", "error")])
def test_a_declared_large_body_is_refused_from_the_headers(fake_url, path, key):
    """Declared as 100 MB, none of it sent: the answer comes from the headers alone."""
    host, port = fake_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
            + b"Content-Length: 100000000\r\n\r\n"
        )
        answer = connection.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert f'{{"{key}":"the request body exceeds 4096 bytes"}}' in answer


def test_the_fast_path_and_the_fastapi_route_answer_alike(tmp_path):
    """POST /recommend skips FastAPI (``Service.fast_paths``); its FastAPI route, which the
    OpenAPI schema documents, must give the same answers, headers and metrics."""
    bodies = [
        json.dumps({"history": FAKE_TOKENS[:4] + ["nope"], "k": 6}).encode(),
        json.dumps({"history": ["a"], "k": "10"}).encode(),
        b'{"history": ["\\ud800"]}',
        json.dumps({"history": ["a" * 30] * 200}).encode(),
    ]
    answers = {}
    with fake_serving(tmp_path) as (url, app):
        assert "/recommend" in httpx.get(f"{url}/openapi.json").json()["paths"]
        for fast in (True, False):
            if not fast:
                app.fast_paths = {}
            answers[fast] = [
                httpx.post(f"{url}/recommend", content=body, headers={"content-type": "application/json"})
                for body in bodies
            ]
        metrics = httpx.get(f"{url}/metrics").text
    for fast, slow in zip(answers[True], answers[False], strict=True):
        assert (fast.status_code, fast.json()) == (slow.status_code, slow.json())
        assert fast.headers.get("content-type") == slow.headers.get("content-type") == "application/json"
        assert fast.headers.get("connection") == slow.headers.get("connection")
    assert [answer.status_code for answer in answers[True]] == [200, 422, 422, 413]
    assert 'tfcroloss_http_requests_total{endpoint="recommend",status="200"} 2.0' in metrics
    assert 'tfcroloss_http_request_errors_total{endpoint="recommend",status="413"} 2.0' in metrics


class BlockedRetriever:
    """A Retriever whose user tower waits until ``release`` is set."""

    def __init__(self, retriever):
        self._retriever = retriever
        self.release = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self._retriever, name)

    def encode(self, histories):
        self.entered.set()
        assert self.release.wait(30)
        return self._retriever.encode(histories)


@contextlib.contextmanager
def four_histories_queued_behind_a_blocked_lookup(tmp_path, max_queue):
    """A served fake whose worker holds one batch of 4 histories while a second batch of 4 waits in
    the queue; yields the URL and the batch's body, then lets both lookups finish (200 each)."""
    with fake_serving(tmp_path, max_queue=max_queue) as (url, app):
        blocked = BlockedRetriever(app.state.watcher.current)
        app.state.watcher.current = blocked
        body = {"histories": [FAKE_TOKENS[:3]] * 4, "k": 5}
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(httpx.post, f"{url}/recommend/batch", json=body, timeout=30)
            assert blocked.entered.wait(30)  # the worker holds 4 histories
            queued = pool.submit(httpx.post, f"{url}/recommend/batch", json=body, timeout=30)
            deadline = time.monotonic() + 30
            while "tfcroloss_lookup_queue_histories 4.0" not in httpx.get(f"{url}/metrics").text:
                assert time.monotonic() < deadline, "the second request was never queued"
                time.sleep(0.02)
            try:
                yield url, body
            finally:
                blocked.release.set()
            assert first.result().status_code == 200 and queued.result().status_code == 200


def test_a_full_queue_answers_503_and_health_stays_fast(tmp_path):
    with four_histories_queued_behind_a_blocked_lookup(tmp_path, max_queue=6) as (url, body):
        refused = httpx.post(f"{url}/recommend/batch", json=body, timeout=30)  # 4 + 4 > 6
        health = httpx.get(f"{url}/health", timeout=30)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "queue is full" in refused.json()["detail"]
    assert health.status_code == 200 and health.json() == {"status": "ok", "model_version": 1}


# Metadata and metrics.


def test_metadata_shows_no_paths(url, version_dir):
    metadata = httpx.get(f"{url}/metadata").json()
    text = json.dumps(metadata)
    assert "path" not in metadata and str(version_dir.parent.parent) not in text
    assert metadata["source"]["run"] == "run"  # the run directory's name only
    assert metadata["limits"]["max_body_bytes"] == 4096 and metadata["model_name"] == "tiny"


def test_metrics_count_requests_errors_and_the_version(fake_url):
    httpx.get(f"{fake_url}/health")
    httpx.post(f"{fake_url}/recommend", json={"history": []})
    text = httpx.get(f"{fake_url}/metrics").text
    assert 'tfcroloss_http_requests_total{endpoint="health",status="200"}' in text
    assert 'tfcroloss_http_request_errors_total{endpoint="recommend",status="422"}' in text
    assert 'tfcroloss_http_request_duration_seconds_bucket{endpoint="health",le="0.005"}' in text
    assert "tfcroloss_model_version 1.0" in text
    assert "tfcroloss_model_load_seconds " in text
    assert "tfcroloss_lookup_batch_histories_bucket" in text


# Versions: a failed one is retried when its files change; a rebuilt index is picked up.


def test_a_half_copied_version_is_retried_and_a_rebuilt_index_picked_up(version_dir, tmp_path):
    root = tmp_path / "tiny"
    shutil.copytree(version_dir, root / "1")
    watcher = ModelWatcher(root)
    half = root / "2"
    half.mkdir()
    shutil.copytree(version_dir / "assets.extra", half / "assets.extra")  # no SavedModel yet
    metadata = {**version.read_metadata(half), "version": 2}
    (half / version.METADATA_PATH).write_text(json.dumps(metadata))
    assert not watcher.refresh() and watcher.current.version == 1
    assert watcher.failed[0] == 2
    assert not watcher.refresh()  # same files: not tried again
    for entry in version_dir.iterdir():
        if entry.name not in ("assets.extra",):
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, half / entry.name)
    assert watcher.refresh() and watcher.current.version == 2 and watcher.failed is None

    before = watcher.current.index_info["params"]["num_leaves_to_search"]
    build_version_index(half, k=5, sample_queries=20, overwrite=True, partition=True, num_leaves=4, num_leaves_to_search=3)
    assert watcher.refresh()
    assert watcher.current.index_info["params"]["num_leaves_to_search"] == 3 != before
    assert not watcher.refresh()


def test_versions_loaded_while_serving_get_an_index_process_that_is_reloaded_if_it_ends(version_dir, tmp_path):
    root = tmp_path / "tiny"
    shutil.copytree(version_dir, root / "1")
    watcher = ModelWatcher(root)
    assert not isinstance(watcher.current.index, IndexProcess)  # loaded before anything is answered
    shutil.copytree(version_dir, root / "2")
    assert watcher.refresh()
    second = watcher.current
    assert isinstance(second.index, IndexProcess) and second.index.pid != os.getpid()
    os.kill(second.index.pid, signal.SIGKILL)
    second.index._process.wait(timeout=10)
    assert not second.alive
    assert watcher.refresh() and watcher.current is not second and watcher.current.alive
    assert isinstance(watcher.current.index, IndexProcess)
    assert watcher.current.recommend(["nope"], k=3).item_ids  # answers again
    assert not watcher.refresh()


# TensorFlow Serving's REST API.


@pytest.fixture(scope="module")
def saved_model(version_dir):
    return tf.saved_model.load(str(version_dir))


def test_tf_serving_model_status_and_metadata(url):
    status = httpx.get(f"{url}/v1/models/tiny").json()
    assert status == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert httpx.get(f"{url}/v1/models/tiny/versions/1").json() == status
    missing = httpx.get(f"{url}/v1/models/tiny/versions/9")
    assert missing.status_code == 404 and missing.json() == {"error": "Servable not found for request: Specific(tiny, 9)"}
    other = httpx.post(f"{url}/v1/models/half:predict", json={"instances": [["a"]]})
    assert other.status_code == 404 and other.json() == {"error": "Servable not found for request: Latest(half)"}

    metadata = httpx.get(f"{url}/v1/models/tiny/metadata").json()
    assert metadata["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "top_k"}
    assert set(signatures["top_k"]["inputs"]) == {"history", "k"}
    assert signatures["serving_default"]["inputs"]["history"]["dtype"] == "DT_STRING"
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_tf_serving_predict_user_embedding_row_and_columnar(url, saved_model, tokens):
    histories = [tokens[:3] + ["nope"], [tokens[5], "", "", ""]]  # padded with "", as for TF Serving
    want = saved_model.signatures["serving_default"](history=tf.constant(histories))

    rows = httpx.post(f"{url}/v1/models/tiny:predict", json={"instances": [{"history": h} for h in histories]})
    assert rows.status_code == 200, rows.text
    predictions = rows.json()["predictions"]
    assert len(predictions) == 2 and set(predictions[0]) == {"user_embedding", "history_item_ids"}
    np.testing.assert_allclose([p["user_embedding"] for p in predictions], want["user_embedding"], atol=1e-6)
    assert [p["history_item_ids"] for p in predictions] == want["history_item_ids"].numpy().tolist()

    bare = httpx.post(f"{url}/v1/models/tiny/versions/1:predict", json={"signature_name": "serving_default", "instances": histories})
    assert bare.json() == rows.json()

    columns = httpx.post(f"{url}/v1/models/tiny:predict", json={"inputs": {"history": histories}})
    outputs = columns.json()["outputs"]
    assert set(outputs) == {"user_embedding", "history_item_ids"}
    np.testing.assert_allclose(outputs["user_embedding"], want["user_embedding"], atol=1e-6)
    assert outputs["history_item_ids"] == want["history_item_ids"].numpy().tolist()


def test_tf_serving_predict_top_k(url, retriever, saved_model, tokens):
    histories = [tokens[:3], tokens[8:10] + [""]]
    columns = httpx.post(
        f"{url}/v1/models/tiny:predict",
        json={"signature_name": "top_k", "inputs": {"history": histories, "k": 6}},
    )
    assert columns.status_code == 200, columns.text
    outputs = columns.json()["outputs"]
    assert set(outputs) == {"item_ids", "scores"}
    assert np.shape(outputs["item_ids"]) == np.shape(outputs["scores"]) == (2, 6)
    exact = saved_model.signatures["top_k"](history=tf.constant(histories), k=tf.constant(6))
    np.testing.assert_allclose(outputs["scores"], exact["scores"], atol=1e-4)  # tiny catalog: ScaNN is exact
    for row, history in enumerate(histories):
        want = retriever.recommend([t for t in history if t], k=6, exclude_history=False)
        assert outputs["item_ids"][row] == want.item_ids
        assert outputs["item_ids"][row] == [t.decode() for t in exact["item_ids"].numpy()[row]]

    rows = httpx.post(
        f"{url}/v1/models/tiny:predict",
        json={"signature_name": "top_k", "instances": [{"history": h, "k": 6} for h in histories]},
    )
    predictions = rows.json()["predictions"]
    assert [p["item_ids"] for p in predictions] == outputs["item_ids"]
    everything = httpx.post(
        f"{url}/v1/models/tiny:predict",
        json={"signature_name": "top_k", "inputs": {"history": [tokens[:2]], "k": 10**6}},
    )
    assert len(everything.json()["outputs"]["item_ids"][0]) == retriever.num_items  # as the SavedModel


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{nope", "JSON Parse error"),
        ({"instances": [["a"]], "inputs": {"history": [["a"]]}}, "both"),
        ({"signature_name": "serving_default"}, "Missing 'inputs' or 'instances' key"),
        ({"signature_name": "nope", "instances": [["a"]]}, 'Serving signature name: "nope" not found'),
        ({"signature_name": "top_k", "inputs": {"history": [["a"]]}}, "named inputs ['history', 'k']"),
        ({"signature_name": "top_k", "inputs": {"history": [["a"]], "k": "3"}}, "k must be a positive integer"),
        ({"signature_name": "top_k", "inputs": {"history": [["a"]], "k": True}}, "k must be a positive integer"),
        ({"instances": [[1, 2]]}, "history[0][0] must be a string"),
        ({"inputs": {"history": ["a", "b"]}}, "[batch, length]"),
        ({"instances": [["a"]] * 5}, "1..4 rows"),
        ({"instances": [["x" * 33]]}, "the limit is 32"),
        (b'{"instances": [["\\ud800"]]}', "lone surrogates"),
        ({"signature_name": ["top_k"], "instances": [["a"]]}, 'signature_name must be a string, got ["top_k"]'),
        ({"signature_name": {"top_k": 1}, "instances": [["a"]]}, "signature_name must be a string"),
        ({"signature_name": None, "instances": [["a"]]}, "signature_name must be a string, got null"),
    ],
)
def test_tf_serving_errors(fake_url, body, message):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{fake_url}/v1/models/tiny:predict", content=content)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and message in response.json()["error"]


def test_serve_command_passes_its_limits(monkeypatch, tmp_path):
    import uvicorn as uvicorn_module

    from tfcroloss.pipelines.cli import build_parser
    from tfcroloss.pipelines.serving import app as app_module

    seen = {}
    monkeypatch.setattr(app_module, "create_app", lambda root, **options: seen.update(root=root, **options) or "app")
    monkeypatch.setattr(uvicorn_module, "run", lambda app, **options: seen.update(app=app, server=options))
    args = build_parser().parse_args(
        ["serve", "--model", str(tmp_path), "--max-body-bytes", "2048", "--max-queue", "300", "--batch-rows", "16",
         "--batch-delay-ms", "0.5", "--max-id-length", "64", "--model-name", "books", "--port", "9"]
    )
    assert args.func(args) == 0
    limits = seen["limits"]
    assert (limits.max_body_bytes, limits.max_queue, limits.batch_rows, limits.batch_delay_ms, limits.max_id_length) == (
        2048, 300, 16, 0.5, 64,
    )
    assert seen["model_name"] == "books" and seen["app"] == "app" and seen["server"]["port"] == 9
    assert seen["server"]["host"] == "127.0.0.1" and seen["server"]["access_log"] is False


# Versions as TF Serving names them, and a health check that tells the truth.


def test_a_renumbered_version_is_served_under_its_folders_number(version_dir, tmp_path):
    """Exported as 1, copied to tiny/5: every endpoint and the metrics say 5, as TF Serving would."""
    shutil.copytree(version_dir, tmp_path / "tiny" / "5")
    with serving(tmp_path / "tiny") as (url, _):
        assert httpx.get(f"{url}/health").json() == {"status": "ok", "model_version": 5}
        assert httpx.get(f"{url}/metadata").json()["version"] == 5
        assert "tfcroloss_model_version 5.0" in httpx.get(f"{url}/metrics").text
        status = httpx.get(f"{url}/v1/models/tiny").json()["model_version_status"]
        assert [(s["version"], s["state"]) for s in status] == [("5", "AVAILABLE")]
        assert httpx.get(f"{url}/v1/models/tiny/versions/5").status_code == 200
        assert httpx.get(f"{url}/v1/models/tiny/versions/1").status_code == 404
        metadata = httpx.get(f"{url}/v1/models/tiny/versions/5/metadata").json()
        assert metadata["model_spec"]["version"] == "5"
        assert httpx.post(f"{url}/recommend", json={"history": ["nope"], "k": 2}).json()["model_version"] == 5


def half_copy_loader(version_dir, isolate_index=False):
    """A ``FakeRetriever`` for a version holding ``saved_model.pb``; else the loader's error,
    which names the server's path."""
    if not (version_dir / "saved_model.pb").is_file():
        raise OSError(f"SavedModel file does not exist at: {version_dir}/saved_model.pb")
    return FakeRetriever(version_dir)


def test_removed_and_half_copied_versions_as_tf_serving(tmp_path):
    """The served version's folder removed: the newest remaining is served; none left: unloaded
    (404 under /v1/ as TF Serving, 503 with Retry-After elsewhere) until one appears. A
    half-copied version is reported without server paths while the previous one serves."""
    root = tmp_path / "tiny"
    for number in (1, 2):
        (root / str(number)).mkdir(parents=True)
        (root / str(number) / "saved_model.pb").touch()
    with serving(root, load_retriever=half_copy_loader, poll_seconds=3600) as (url, app):
        watcher = app.state.watcher
        assert watcher.current.version == 2
        (root / "3").mkdir()  # half-copied: no saved_model.pb yet
        assert not watcher.refresh() and watcher.current.version == 2
        statuses = httpx.get(f"{url}/v1/models/tiny").json()["model_version_status"]
        assert [(s["version"], s["state"]) for s in statuses] == [("3", "END"), ("2", "AVAILABLE")]
        assert statuses[0]["status"]["error_message"] == "OSError: SavedModel file does not exist at: tiny/3/saved_model.pb"
        shutil.rmtree(root / "3")
        assert not watcher.refresh() and watcher.failed is None  # removed: no longer reported

        shutil.rmtree(root / "2")
        assert watcher.refresh() and watcher.current.version == 1
        assert httpx.get(f"{url}/health").json() == {"status": "ok", "model_version": 1}

        shutil.rmtree(root / "1")
        assert not watcher.refresh() and watcher.current is None
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503 and health.headers["retry-after"] == "1"
        assert health.json()["reason"] == "no version to serve: version 1 was removed and none is left"
        lookup = httpx.post(f"{url}/recommend", json={"history": ["item1"]})
        assert lookup.status_code == 503 and lookup.headers["retry-after"] == "1" and "none is left" in lookup.json()["detail"]
        assert httpx.get(f"{url}/metadata").status_code == 503
        predict = httpx.post(f"{url}/v1/models/tiny:predict", json={"instances": [["item1"]]})
        assert predict.status_code == 404 and predict.json() == {"error": "Servable not found for request: Latest(tiny)"}
        statuses = httpx.get(f"{url}/v1/models/tiny").json()["model_version_status"]
        assert [(s["version"], s["state"]) for s in statuses] == [("1", "END")]
        assert "tfcroloss_model_version 0.0" in httpx.get(f"{url}/metrics").text

        (root / "4").mkdir()
        (root / "4" / "saved_model.pb").touch()
        assert watcher.refresh() and httpx.get(f"{url}/health").json() == {"status": "ok", "model_version": 4}
        assert httpx.get(f"{url}/health/live").json() == {"status": "alive"}


def test_health_and_lookups_say_503_while_the_index_process_is_reloaded(tmp_path):
    reload_allowed = threading.Event()

    def slow_reload(version_dir, isolate_index):
        if isolate_index:  # a reload: takes until the test allows it
            assert reload_allowed.wait(30)
        return FakeRetriever(version_dir)

    with serving(fake_model_root(tmp_path), load_retriever=slow_reload, poll_seconds=3600) as (url, app):
        served = app.state.watcher.current
        served.alive = False  # its index process ended
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503 and health.headers["retry-after"] == "1"
        assert health.json() == {
            "status": "unavailable", "model_version": 1,
            "reason": "the index process of version 1 ended; it is being reloaded",
        }
        assert httpx.get(f"{url}/health/live").status_code == 200
        for path, body, key in [
            ("/recommend", {"history": ["item1"]}, "detail"),
            ("/recommend/batch", {"histories": [["item1"]]}, "detail"),
            ("/v1/models/tiny:predict", {"instances": [["item1"]]}, "error"),
        ]:
            response = httpx.post(f"{url}{path}", json=body)
            assert response.status_code == 503 and response.headers["retry-after"] == "1", (path, response.text)
            assert "being reloaded" in response.json()[key]
        reload_allowed.set()
        deadline = time.monotonic() + 30  # the failed lookups woke the watcher: no wait for its poll
        while app.state.watcher.current is served:
            assert time.monotonic() < deadline, "the watcher did not reload the version"
            time.sleep(0.02)
        assert httpx.get(f"{url}/health").json() == {"status": "ok", "model_version": 1}
        assert httpx.post(f"{url}/recommend", json={"history": ["item1"]}).status_code == 200


def test_health_says_503_while_the_lookup_queue_is_full(tmp_path):
    with four_histories_queued_behind_a_blocked_lookup(tmp_path, max_queue=4) as (url, _):
        deadline = time.monotonic() + 30
        while (health := httpx.get(f"{url}/health")).status_code == 200:
            assert time.monotonic() < deadline, "the queue never filled"
            time.sleep(0.02)
    assert health.status_code == 503 and health.json()["reason"] == "the lookup queue is full (4 histories waiting)"
