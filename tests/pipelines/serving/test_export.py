"""Export: versioned, atomic SavedModels that a process without tfcroloss can load and run."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfcroloss.pipelines.publish import export_run
from tfcroloss.pipelines.serving import export, version
from tfcroloss.pipelines.training.run_directory import load_run


@pytest.fixture(scope="module")
def run(tiny_run):
    return load_run(tiny_run)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("saved_models") / "tiny"
    return export_run(tiny_run, root)


def test_export_layout_and_metadata(exported, run):
    assert exported.name == "1"
    for path in (
        "saved_model.pb",
        "variables",
        version.TOKENS_PATH,
        version.EMBEDDINGS_PATH,
        version.WARMUP_PATH,
    ):
        assert (exported / path).exists(), path
    metadata = version.read_metadata(exported)
    catalog = run.model.catalog_embeddings()
    assert metadata["version"] == 1
    assert metadata["num_items"] == run.dataset.num_items == len(catalog)
    assert (metadata["dim"], metadata["maxlen"], metadata["tau"]) == (
        16,
        10,
        run.model.temperature_scale,
    )
    assert metadata["fingerprint"] == version.fingerprint(catalog)
    np.testing.assert_array_equal(np.load(exported / version.EMBEDDINGS_PATH), catalog)
    lines = (exported / version.TOKENS_PATH).read_text().splitlines()
    assert lines == list(run.dataset.item_tokens[1:])


def test_versions_increase_and_a_failed_export_leaves_nothing(exported, run, monkeypatch):
    root = exported.parent
    second = export.export_model(run.model, run.dataset.item_tokens, root, maxlen=10)
    assert second.name == "2" and version.list_versions(root) == [1, 2]
    assert version.resolve_version(root) == second

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "_write_warmup", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_model(run.model, run.dataset.item_tokens, root, maxlen=10)
    assert version.list_versions(root) == [1, 2]
    assert sorted(p.name for p in root.iterdir()) == ["1", "2"]  # no staging left behind
    with pytest.raises(FileExistsError):
        export.export_model(run.model, run.dataset.item_tokens, root, maxlen=10, version=2)


def _reference_user(run, history_tokens):
    """The user vector the model gives for raw ids: unknown ids dropped, last maxlen kept, 0-padded."""
    lookup = run.dataset.item_id_lookup()
    ids = [lookup[token] for token in history_tokens if token in lookup][-run.config.data.maxlen :]
    padded = np.zeros([1, run.config.data.maxlen], np.int32)
    padded[0, : len(ids)] = ids
    return run.model.user_embeddings(padded).numpy()[0]


def test_clean_process_loads_the_export_and_matches_the_model(exported, run):
    tokens = list(run.dataset.item_tokens[1:])
    histories = [tokens[:15] + ["no-such-item"], ["no-such-item", tokens[3], "", ""]]
    script = textwrap.dedent(
        """
        import json, sys
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        path, histories = sys.argv[1], json.loads(sys.argv[2])
        model = tf.saved_model.load(path)
        width = max(map(len, histories))
        batch = tf.constant([h + [""] * (width - len(h)) for h in histories])
        users = model.signatures["serving_default"](history=batch)
        top = model.signatures["top_k"](history=batch, k=tf.constant(5))
        saved = saved_model_pb2.SavedModel.FromString(open(path + "/saved_model.pb", "rb").read())
        graph = saved.meta_graphs[0].graph_def
        ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
        print(json.dumps({
            "signatures": sorted(model.signatures),
            "users": users["user_embedding"].numpy().tolist(),
            "history_item_ids": users["history_item_ids"].numpy().tolist(),
            "top_ids": top["item_ids"].numpy().astype(str).tolist(),
            "top_scores": top["scores"].numpy().tolist(),
            "nonstandard_ops": sorted(op for op in ops if not hasattr(tf.raw_ops, op)),
            "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("tfcroloss", "scann", "tensorflow_recommenders")),
        }))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(exported), json.dumps(histories)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["signatures"] == ["serving_default", "top_k"]
    assert result["nonstandard_ops"] == [] and result["modules"] == []

    lookup = run.dataset.item_id_lookup()
    assert result["history_item_ids"][1][:4] == [0, lookup[tokens[3]], 0, 0]  # 0: unknown or ""
    catalog = run.model.catalog_embeddings()
    tau = run.model.temperature_scale
    for row, history in enumerate(histories):
        expected_user = _reference_user(run, history)
        np.testing.assert_allclose(result["users"][row], expected_user, atol=1e-5)
        scores = tau * catalog @ expected_user
        best = np.argsort(-scores)[:5]
        assert result["top_ids"][row] == [tokens[i] for i in best]
        np.testing.assert_allclose(result["top_scores"][row], scores[best], atol=1e-4)


def test_warmup_requests_cover_both_signatures(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    records = [
        prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        for raw in tf.data.TFRecordDataset(str(exported / version.WARMUP_PATH))
    ]
    assert 0 < len(records) <= 1000
    signatures = {r.predict_log.request.model_spec.signature_name for r in records}
    assert signatures == {version.SIGNATURE_USER, version.SIGNATURE_TOP_K}
    model = tf.saved_model.load(str(exported))
    for record in records:  # every warm-up request is one the model answers
        request = record.predict_log.request
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        model.signatures[request.model_spec.signature_name](**inputs)


def test_export_rejects_bad_tokens(run, tmp_path):
    tokens = np.array(run.dataset.item_tokens, dtype=object)
    tokens[2] = "two\nlines"
    with pytest.raises(ValueError, match="line breaks"):
        export.export_model(run.model, tokens, tmp_path, maxlen=10)
    with pytest.raises(ValueError, match="padding"):
        export.export_model(run.model, run.dataset.item_tokens[1:], tmp_path, maxlen=10)
    assert version.list_versions(tmp_path) == []
