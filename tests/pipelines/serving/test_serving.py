"""Retriever and HTTP service: exact results, ScaNN index linking, validation, hot version switch."""

import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.pipelines.serving.conftest import FakeRetriever, fake_model_root, running
from tfcroloss.pipelines.publish import export_run
from tfcroloss.pipelines.serving import version
from tfcroloss.pipelines.serving.app import create_app
from tfcroloss.pipelines.serving.index import build_version_index
from tfcroloss.pipelines.serving.retriever import Retriever
from tfcroloss.pipelines.serving.version import FingerprintMismatch
from tfcroloss.pipelines.training.run_directory import load_run

MAX_HISTORY = 20


@pytest.fixture(scope="module")
def run(tiny_run):
    return load_run(tiny_run)


@pytest.fixture(scope="module")
def tokens(run):
    return list(run.dataset.item_tokens[1:])


def exact_top(run, history, k, exclude_history):
    """Reference: tau * cosine of the model's user vector against every item, via NumPy."""
    lookup = run.dataset.item_id_lookup()
    ids = [lookup[t] for t in history if t in lookup][-run.config.data.maxlen :]
    padded = np.zeros([1, run.config.data.maxlen], np.int32)
    padded[0, : len(ids)] = ids
    user = run.model.user_embeddings(padded).numpy()[0]
    scores = run.model.temperature_scale * run.model.catalog_embeddings() @ user
    excluded = {lookup[t] for t in history if t in lookup} if exclude_history else set()
    order = [i for i in np.argsort(-scores) if i + 1 not in excluded]
    tokens = run.dataset.item_tokens
    return [tokens[i + 1] for i in order[:k]], scores[order[:k]]


@pytest.mark.parametrize("index", ["exact", "auto"])
def test_retriever_matches_exact_retrieval(run, version_dir, tokens, index):
    retriever = Retriever.load(version_dir.parent, index=index)
    assert retriever.index_info["kind"] == ("exact" if index == "exact" else "scann")
    histories = [tokens[:3], tokens[10:40] + ["unknown-item"], ["unknown-item", tokens[7]]]
    for exclude in (True, False):
        results = retriever.recommend_batch(histories, k=10, exclude_history=exclude)
        for history, result in zip(histories, results, strict=True):
            expected_ids, expected_scores = exact_top(run, history, 10, exclude)
            assert result.item_ids == expected_ids
            np.testing.assert_allclose(result.scores, expected_scores, atol=1e-4)
            assert result.unknown_ids == [t for t in history if t == "unknown-item"]
            single = retriever.recommend(history, k=10, exclude_history=exclude)
            assert single.item_ids == result.item_ids and single.unknown_ids == result.unknown_ids
            np.testing.assert_allclose(single.scores, result.scores, atol=1e-5)
    with pytest.raises(ValueError, match="k must be in 1.."):
        retriever.recommend(tokens[:2], k=retriever.num_items + 1)


def test_index_build_reports_agreement_and_refuses_a_foreign_model(version_dir, tmp_path):
    info = json.loads((version_dir / "index" / "build.json").read_text())
    assert info["agreement@20"] == pytest.approx(1.0) and info["agreement_queries"] == 50
    assert info["fingerprint"] == version.read_metadata(version_dir)["fingerprint"]
    with pytest.raises(FileExistsError):
        build_version_index(version_dir)

    # Another model's version (other embeddings) carrying this version's index is refused.
    other = tmp_path / "7"
    shutil.copytree(version_dir, other)
    embeddings = np.load(other / version.EMBEDDINGS_PATH)[::-1].copy()
    np.save(other / version.EMBEDDINGS_PATH, embeddings)
    metadata = {
        **version.read_metadata(other),
        "version": 7,
        "fingerprint": version.fingerprint(embeddings),
    }
    (other / version.METADATA_PATH).write_text(json.dumps(metadata))
    with pytest.raises(FingerprintMismatch, match="other item embeddings"):
        Retriever.load(other)
    assert Retriever.load(other, index="exact").version == 7


@contextlib.contextmanager
def serving(model_root, **options):
    """The app on 127.0.0.1 (a free port) in a background thread; yields its base URL."""
    app = create_app(model_root, max_history=MAX_HISTORY, max_batch=4, **options)
    with running(app) as url:
        yield url


@pytest.fixture(scope="module")
def base_url(version_dir):
    with serving(version_dir.parent) as url:
        yield url


@pytest.fixture(scope="module")
def fake_base_url(tmp_path_factory):
    with serving(fake_model_root(tmp_path_factory.mktemp("fake")), load_retriever=FakeRetriever) as url:
        yield url


def test_http_recommendations_match_the_retriever(base_url, version_dir, tokens):
    retriever = Retriever.load(version_dir)
    history = tokens[5:12] + ["nope"]
    expected = retriever.recommend(history, k=7)
    response = httpx.post(f"{base_url}/recommend", json={"history": history, "k": 7})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == 1 and body["unknown_ids"] == ["nope"]
    assert [item["id"] for item in body["items"]] == expected.item_ids
    np.testing.assert_allclose(
        [item["score"] for item in body["items"]], expected.scores, rtol=1e-6
    )

    histories = [tokens[:2], history]
    response = httpx.post(
        f"{base_url}/recommend/batch",
        json={"histories": histories, "k": 3, "exclude_history": False},
    )
    assert response.status_code == 200, response.text
    batch = response.json()["results"]
    for result, want in zip(
        batch, retriever.recommend_batch(histories, k=3, exclude_history=False), strict=True
    ):
        assert [item["id"] for item in result["items"]] == want.item_ids

    assert httpx.get(f"{base_url}/health").json() == {"status": "ok", "model_version": 1}
    metadata = httpx.get(f"{base_url}/metadata").json()
    assert metadata["version"] == 1 and metadata["num_items"] == len(tokens)
    assert metadata["index"]["kind"] == "scann" and "num_leaves" in metadata["index"]["params"]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/recommend", b"{not json", "JSON"),
        ("/recommend", {"k": 5}, "history: Field required"),
        ("/recommend", {"history": "abc"}, "history: Input should be a valid list"),
        ("/recommend", {"history": [1, 2]}, "history.0: Input should be a valid string"),
        (
            "/recommend",
            {"history": ["a"], "colour": "red"},
            "colour: Extra inputs are not permitted",
        ),
        ("/recommend", {"history": []}, "history is empty"),
        ("/recommend", {"history": ["a"] * (MAX_HISTORY + 1)}, f"the limit is {MAX_HISTORY}"),
        ("/recommend", {"history": ["a"], "k": 0}, "k must be in 1.."),
        ("/recommend", {"history": ["a"], "k": 10**6}, "k must be in 1.."),
        ("/recommend/batch", {"histories": []}, "1..4 histories"),
        ("/recommend/batch", {"histories": [["a"]] * 5}, "1..4 histories"),
        ("/recommend/batch", {"histories": [["a"], []]}, "history 1 is empty"),
    ],
)
def test_http_rejects_bad_input_with_a_message(fake_base_url, path, body, message):
    if isinstance(body, bytes):
        response = httpx.post(
            fake_base_url + path, content=body, headers={"content-type": "application/json"}
        )
    else:
        response = httpx.post(fake_base_url + path, json=body)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_new_version_is_picked_up_under_load_without_failures(
    tiny_run, version_dir, tokens, tmp_path
):
    root = tmp_path / "tiny"
    shutil.copytree(version_dir, root / "1")
    with serving(root, poll_seconds=0.1) as url:
        stop = threading.Event()

        def client(worker: int) -> list[tuple[int, int | None]]:
            seen, after_switch = [], 0
            with httpx.Client(base_url=url, timeout=30) as http:
                for number in range(3000):  # bounded; ends 5 requests after the switch
                    after_switch += stop.is_set()
                    if after_switch > 5:
                        break
                    history = tokens[worker + number % 20 : worker + number % 20 + 4]
                    response = http.post("/recommend", json={"history": history, "k": 5})
                    seen.append((response.status_code, response.json().get("model_version")))
            return seen

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client, worker) for worker in range(8)]
            export_run(tiny_run, root)  # version 2 appears while requests are in flight
            deadline = time.monotonic() + 60
            while httpx.get(f"{url}/health").json()["model_version"] != 2:
                assert time.monotonic() < deadline, "version 2 was never picked up"
                time.sleep(0.05)
            stop.set()
            results = [outcome for future in futures for outcome in future.result()]
    assert {status for status, _ in results} == {200}
    assert {version for _, version in results} == {1, 2}


def test_the_serving_commands_import_no_heavy_library():
    """``tfcroloss --help`` imports every command module: TensorFlow, ScaNN and the web stack
    wait until a command runs."""
    heavy = ("tensorflow", "tensorflow_recommenders", "scann", "fastapi", "uvicorn")
    code = (
        "import sys; import tfcroloss.pipelines.cli.serving, tfcroloss.pipelines.cli.demo; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
