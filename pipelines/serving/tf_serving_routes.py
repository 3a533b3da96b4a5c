"""TensorFlow Serving's REST API as routes (request parsing and response shapes: ``tf_serving``):
``/v1/models/NAME[/versions/V]`` (status), ``.../metadata`` and ``...:predict``."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from tfcroloss.pipelines.serving import tf_serving
from tfcroloss.pipelines.serving.batching import Rows
from tfcroloss.pipelines.serving.bodies import json_response, read_body
from tfcroloss.pipelines.serving.retriever import Retriever
from tfcroloss.pipelines.serving.state import ServiceState
from tfcroloss.pipelines.serving.tf_serving import ApiError
from tfcroloss.pipelines.serving.version import SIGNATURE_USER


def same_version(requested: str | None, version: int) -> bool:
    """Whether a URL's ``versions/V`` (None: the latest) names ``version`` (``01`` is 1, as TF
    Serving reads an int64)."""
    return requested is None or (requested.isdigit() and int(requested) == version)


def router(state: ServiceState) -> APIRouter:
    routes = APIRouter()
    name, limits, watcher = state.model_name, state.limits, state.watcher

    def not_found(model: str, version: str | None) -> ApiError:
        wanted = f"Latest({model})" if version is None else f"Specific({model}, {version})"
        return ApiError(404, f"Servable not found for request: {wanted}")

    def served(model: str, version: str | None) -> Retriever:
        """The Retriever of ``model`` (and ``version``, if given); TF Serving's 404 when it is
        not served (no version left included), 503 while its index process is reloaded."""
        retriever = watcher.current
        if model != name or retriever is None or not same_version(version, retriever.version):
            raise not_found(model, version)
        return state.ready(retriever)

    @routes.get("/v1/models/{model}")
    @routes.get("/v1/models/{model}/versions/{version}")
    async def model_status(model: str, version: str | None = None) -> Response:
        if model != name:
            raise not_found(model, version)
        retriever = watcher.current
        served_version = None if retriever is None else retriever.version
        statuses = tf_serving.model_status(served_version, watcher.failed, watcher.unloaded)["model_version_status"]
        if version is not None:
            statuses = [status for status in statuses if same_version(version, int(status["version"]))]
            if not statuses:
                raise not_found(model, version)
        return json_response({"model_version_status": statuses})

    @routes.get("/v1/models/{model}/metadata")
    @routes.get("/v1/models/{model}/versions/{version}/metadata")
    async def model_metadata(model: str, version: str | None = None) -> Response:
        retriever = served(model, version)
        return json_response(tf_serving.model_metadata(name, retriever.version, retriever.signature_defs))

    @routes.post("/v1/models/{model}:predict")
    @routes.post("/v1/models/{model}/versions/{version}:predict")
    async def predict(request: Request, model: str, version: str | None = None) -> Response:
        retriever = served(model, version)
        parsed = tf_serving.parse_predict(
            await read_body(request.scope, request.receive, limits.max_body_bytes, invalid_status=400),
            max_batch=limits.max_batch,
            max_history=limits.max_history,
            max_id_length=limits.max_id_length,
        )
        width = max(len(history) for history in parsed.histories)
        if parsed.signature == SIGNATURE_USER:

            def finish(retriever: Retriever, rows: Rows) -> bytes:
                outputs = {"user_embedding": rows.users, "history_item_ids": np.ascontiguousarray(rows.history_ids[:, :width])}
                return tf_serving.predict_response(parsed, outputs)

            return await state.lookup(retriever, parsed.histories, None, False, finish)

        def finish_top_k(retriever: Retriever, rows: Rows) -> bytes:
            outputs = {"item_ids": retriever.tokens(rows.item_ids).tolist(), "scores": rows.scores}
            return tf_serving.predict_response(parsed, outputs)

        k = min(parsed.k, retriever.num_items)  # as the SavedModel: at most the whole catalog
        return await state.lookup(retriever, parsed.histories, k, False, finish_top_k)

    return routes
