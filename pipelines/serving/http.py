"""The HTTP recommendation service (FastAPI): ``create_app(model_root)``.

Endpoints (see docs/serving.md): ``POST /recommend``, ``POST /recommend/batch``, ``GET /health``,
``GET /metadata``, ``GET /metrics`` (Prometheus), and TensorFlow Serving's REST API
(``POST /v1/models/NAME:predict``, ``GET /v1/models/NAME``, ``.../metadata``; see ``tf_serving``).

Lookups are micro-batched (``batching``): the requests waiting share one user-tower call and one
index search, on worker threads, while the event loop keeps reading requests; ``/health`` never
waits for lookups. ``POST /recommend``, the hot path, is answered by a plain ASGI handler ahead
of FastAPI's middleware and routing (``_Service``). A bounded queue answers a burst beyond it
with 503 and ``Retry-After``. Bodies are limited in size (413, refused before being read in
full), ids in length, and types are strict (``k`` must be a JSON integer).

A background thread polls ``model_root`` for a newer version, or for a change in the files of
the one served (an index added or rebuilt), loads and warms it fully, then swaps one
reference: a lookup holds the Retriever it started with. A version that fails to load is tried
again when its files change (e.g. once a copy has finished).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tfcroloss.pipelines.retrieval import check_k
from tfcroloss.pipelines.serving import tf_serving
from tfcroloss.pipelines.serving.batching import Lookup, MicroBatcher, Overloaded, Rows
from tfcroloss.pipelines.serving.limits import Limits
from tfcroloss.pipelines.serving.retriever import Retriever
from tfcroloss.pipelines.serving.tf_serving import ApiError
from tfcroloss.pipelines.serving.version import SIGNATURE_USER, list_versions, version_state

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
"""What a 503 for a full lookup queue asks the client to wait (``Retry-After``)."""


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    history: list[str] = Field(description="raw item ids, oldest first")
    k: int = Field(100, description="number of items to return, 1..catalog size (a JSON integer)")
    exclude_history: bool = Field(True, description="never return items of the history")


class BatchRecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    histories: list[list[str]] = Field(description="one history of raw item ids per user")
    k: int = 100
    exclude_history: bool = True


ENDPOINTS = {
    "/recommend": "recommend",
    "/recommend/batch": "recommend_batch",
    "/health": "health",
    "/metadata": "metadata",
    "/metrics": "metrics",
}


def endpoint_of(path: str) -> str:
    """The metrics label of a request path (a fixed set: model names are not labels)."""
    if path in ENDPOINTS:
        return ENDPOINTS[path]
    if path.startswith("/v1/models/"):
        if path.endswith(":predict"):
            return "predict"
        return "model_metadata" if path.endswith("/metadata") else "model_status"
    return "other"


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tfcroloss_http_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.errors = Counter("tfcroloss_http_request_errors", "HTTP requests answered with status >= 400", ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "tfcroloss_http_request_duration_seconds", "Time from request to the end of the response", ["endpoint"],
            buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=r,
        )
        self.batch_size = Histogram(
            "tfcroloss_lookup_batch_histories", "Histories per user-tower call and search",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r,
        )
        self.queue = Gauge("tfcroloss_lookup_queue_histories", "Histories waiting for a lookup", registry=r)
        self.version = Gauge("tfcroloss_model_version", "Model version served", registry=r)
        self.load_seconds = Gauge("tfcroloss_model_load_seconds", "Load and warm-up time of the version served", registry=r)
        self.loaded_at = Gauge("tfcroloss_model_loaded_timestamp_seconds", "When the version served was loaded (Unix time)", registry=r)
        self.load_failures = Counter("tfcroloss_model_load_failures", "Versions that failed to load", registry=r)
        self._children: dict[tuple[str, int], tuple[Any, Any, Any]] = {}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        children = self._children.get((endpoint, status))
        if children is None:
            errors = self.errors.labels(endpoint, str(status)) if status >= 400 else None
            children = (self.requests.labels(endpoint, str(status)), errors, self.latency.labels(endpoint))
            self._children[(endpoint, status)] = children
        children[0].inc()
        if children[1] is not None:
            children[1].inc()
        children[2].observe(seconds)

    def loaded(self, retriever: Retriever, seconds: float) -> None:
        self.version.set(retriever.version)
        self.load_seconds.set(seconds)
        self.loaded_at.set(time.time())


class _MeasureRequests:
    """ASGI middleware: counts every HTTP answer and its latency by endpoint and status."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.observe(endpoint_of(scope["path"]), status, time.perf_counter() - started)


class _Service(FastAPI):
    """FastAPI, except that the requests in ``fast_paths`` (method, path) are answered by a plain
    ASGI handler before FastAPI's middleware and routing, which cost ~50 us per request on the
    event loop (14k against 41k requests/s for one trivial endpoint under wrk). The route of the
    same path stays registered: it documents the endpoint in the OpenAPI schema and answers
    exactly as the fast path does (both call one function)."""

    fast_paths: Mapping[tuple[str, str], Callable] = MappingProxyType({})

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        handler = self.fast_paths.get((scope.get("method"), scope.get("path"))) if scope["type"] == "http" else None
        if handler is None:
            await super().__call__(scope, receive, send)
        else:
            await handler(scope, receive, send)


class ModelWatcher:
    """Holds the Retriever of the latest version under ``model_root`` and keeps it current.

    A version is known by its number and the state of its files (``version_state``): a newer
    version, or new files in the version served (an index built or rebuilt), is loaded and
    warmed, then swapped in. One that fails to load is tried again when its files change; one
    whose index process ended (killed, out of memory) is loaded again.

    Where each version's index lives: loading a ScaNN index holds the GIL of its process for
    its whole duration (1.2 s for 1.7M items), which would freeze the event loop and every
    request in flight. So every version loaded while the service answers (a new version, a
    rebuilt index, a reload) opens its index in a child process (``IndexProcess``). The first
    version, loaded before the service answers anything, opens it in this process: searching
    it there skips a process round trip per micro-batch (29% more requests/s at concurrency 8,
    docs/serving.md). A restart (or a rolling deployment) brings a switched service back to
    that path. ``loader(version_dir, isolate_index)`` defaults to ``Retriever.load``.
    """

    def __init__(
        self,
        model_root: str | Path,
        *,
        poll_seconds: float = 10.0,
        loader: Callable[[Path, bool], Retriever] | None = None,
        on_load: Callable[[Retriever, float], None] | None = None,
        on_failure: Callable[[], None] | None = None,
    ):
        self.model_root = Path(model_root)
        self.poll_seconds = poll_seconds
        self.failed: tuple[int, str] | None = None
        """The latest version that failed to load, and why (until one loads)."""
        self._loader = loader or _load_retriever
        self._on_load = on_load or (lambda retriever, seconds: None)
        self._on_failure = on_failure or (lambda: None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed_key: tuple[int, tuple] | None = None
        key = self._latest_key()
        if key is None:
            raise FileNotFoundError(f"{self.model_root} holds no exported version (saved_models/NAME/<version>/)")
        self.current = self._load(key[0], isolate_index=False)  # nothing is answered yet
        self._key = key

    def _latest_key(self) -> tuple[int, tuple] | None:
        versions = list_versions(self.model_root)
        if not versions:
            return None
        return versions[-1], version_state(self.model_root / str(versions[-1]))

    def _load(self, version: int, *, isolate_index: bool = True) -> Retriever:
        started = time.perf_counter()
        retriever = self._loader(self.model_root / str(version), isolate_index)
        k = min(100, retriever.num_items)
        for size in (1, 8):  # traces and warms the graph and the index before any request sees them
            retriever.recommend_batch([["warm-up"]] * size, k=k)
        self._on_load(retriever, time.perf_counter() - started)
        return retriever

    def refresh(self) -> bool:
        """Loads and switches to a newer version (or new files of the one served) if there is
        one; True if it switched."""
        key = self._latest_key()
        if key is not None and key == self._key and not self.current.alive:
            logger.error("the index process of %s version %d ended; loading it again", self.model_root, key[0])
        elif key is None or key == self._key or key == self._failed_key or key[0] < self._key[0]:
            return False
        try:
            retriever = self._load(key[0])
        except Exception as error:
            logger.exception("could not load %s version %d; still serving %d", self.model_root, key[0], self._key[0])
            self._failed_key, self.failed = key, (key[0], f"{type(error).__name__}: {error}")
            self._on_failure()
            return False
        self.current, self._key = retriever, key  # one reference swap; old lookups keep the old object
        self._failed_key = self.failed = None
        logger.info("now serving %s version %d (%s)", self.model_root, key[0], retriever.index_info["kind"])
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # e.g. the directory vanished; keep serving and keep polling
                logger.exception("could not look for new versions under %s", self.model_root)


def _load_retriever(version_dir: Path, isolate_index: bool) -> Retriever:
    return Retriever.load(version_dir, isolate_index=isolate_index)


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, "application/json")


def _validation_message(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}" for e in error.errors(include_url=False)
    )


def create_app(
    model_root: str | Path,
    *,
    poll_seconds: float = 10.0,
    model_name: str | None = None,
    limits: Limits | None = None,
    **limit_overrides: Any,
) -> FastAPI:
    """The service for the versions under ``model_root`` (loads the latest one now).

    ``limits`` (or keyword overrides of its fields, e.g. ``max_history=20``) bound requests
    and the lookup queue. ``model_name`` is the NAME of TF Serving's ``/v1/models/NAME``
    (default: the directory name of ``model_root``).
    """
    limits = dataclasses.replace(limits or Limits(), **limit_overrides)
    if poll_seconds <= 0:
        raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
    name = model_name or Path(model_root).resolve().name
    metrics = Metrics()
    # TensorFlow's modules are ~370k long-lived objects: a full collection scanning them stalls
    # every request for ~0.2 s. Frozen before any version is loaded, so that a replaced
    # version's objects are still collected.
    gc.collect()
    gc.freeze()
    watcher = ModelWatcher(
        model_root, poll_seconds=poll_seconds, on_load=metrics.loaded, on_failure=metrics.load_failures.inc
    )
    batcher: MicroBatcher | None = None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal batcher
        loop = asyncio.get_running_loop()

        def deliver(outcomes: list) -> None:
            loop.call_soon_threadsafe(_settle_all, outcomes)

        batcher = MicroBatcher(
            deliver,
            max_rows=limits.batch_rows,
            max_delay=limits.batch_delay_ms / 1000,
            max_queue=limits.max_queue,
            on_batch=metrics.batch_size.observe,
        )
        metrics.queue.set_function(lambda: batcher.queued_rows if batcher else 0)
        watcher.start()
        yield
        watcher.stop()
        batcher.stop()

    app = _Service(title="tfcroloss recommendations", lifespan=lifespan)
    app.state.watcher = watcher
    app.state.metrics = metrics
    app.state.limits = limits
    app.add_middleware(_MeasureRequests, metrics=metrics)

    def error_response(path: str, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        key = "error" if path.startswith("/v1/") else "detail"  # TF Serving's format under /v1/
        return _json({key: message}, status, headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Response:
        return error_response(request.url.path, error.status, error.message, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        return error_response(request.url.path, error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def readable_validation_error(request: Request, error: RequestValidationError) -> Response:
        messages = [f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors()]
        return error_response(request.url.path, 422, "; ".join(messages))

    async def read_body(scope: dict, receive: Callable, invalid_status: int = 422) -> bytes:
        """The body of an ASGI request (a route passes ``request.scope, request.receive``),
        refused with 413 as soon as it is known to exceed the limit: from its declared length
        before anything is read, else while it is read."""
        limit = limits.max_body_bytes
        too_large = ApiError(413, f"the request body exceeds {limit} bytes", {"Connection": "close"})
        declared = next((value for key, value in scope["headers"] if key == b"content-length"), None)
        if declared is not None:
            declared = declared.decode("latin-1")
            if not declared.isdigit():
                raise ApiError(invalid_status, f"content-length must be a number of bytes, got {declared[:20]!r}")
            if int(declared) > limit:
                raise too_large
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ApiError(400, "the client closed the connection before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    def parse(model: type[BaseModel], body: bytes) -> Any:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise ApiError(422, f"body: invalid JSON: {error} (the body must be JSON in UTF-8; strings may not hold lone surrogates such as \\ud800)") from None
        try:
            return model.model_validate(payload)
        except ValidationError as error:
            raise ApiError(422, _validation_message(error)) from None

    def check(histories: Sequence[Sequence[str]], k: int, retriever: Retriever) -> None:
        try:
            check_k(k, retriever.num_items)
        except ValueError as error:
            raise ApiError(422, str(error)) from None
        for number, history in enumerate(histories):
            where = f"history {number}" if len(histories) > 1 else "history"
            if not history:
                raise ApiError(422, f"{where} is empty: give at least one item id")
            if len(history) > limits.max_history:
                raise ApiError(422, f"{where} has {len(history)} item ids; the limit is {limits.max_history}")
            longest = max(map(len, history))
            if longest > limits.max_id_length:
                at = next(i for i, token in enumerate(history) if len(token) == longest)
                raise ApiError(422, f"{where}, item id {at}: {longest} characters; the limit is {limits.max_id_length}")

    wake_scheduled = [False]

    def wake_batcher() -> None:
        wake_scheduled[0] = False
        batcher.wake()

    async def lookup(
        retriever: Retriever,
        histories: Sequence[Sequence[str]],
        k: int | None,
        exclude_history: bool,
        finish: Callable[[Retriever, Rows], bytes],
    ) -> Response:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        try:
            batcher.submit(Lookup(retriever, histories, k, exclude_history, finish, future), wake=False)
        except Overloaded as error:
            raise ApiError(503, str(error), {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        if not wake_scheduled[0]:  # once per loop iteration: its requests share a batch
            wake_scheduled[0] = True
            loop.call_soon(wake_batcher)
        try:
            body = await future
        except ApiError:
            raise
        except Exception as error:
            logger.error("lookup failed: %s: %s", type(error).__name__, error)
            raise ApiError(500, f"the lookup failed ({type(error).__name__}); see the server log") from None
        return Response(body, 200, None, "application/json")

    def recommendation(retriever: Retriever, history: Sequence[str], rows: Rows, row: int) -> dict[str, Any]:
        found = rows.item_ids[row]
        items = [
            {"id": token, "score": score}
            for token, score in zip(retriever.item_tokens(found), rows.scores[row][found > 0].tolist(), strict=True)
        ]
        return {"items": items, "unknown_ids": retriever.unknown_ids(history, rows.history_ids[row])}

    async def answer_recommend(body: bytes) -> Response:
        """What ``POST /recommend`` answers to ``body`` (raises ``ApiError``)."""
        parsed = parse(RecommendRequest, body)
        retriever = watcher.current
        check([parsed.history], parsed.k, retriever)

        def finish(retriever: Retriever, rows: Rows) -> bytes:
            return orjson.dumps({"model_version": retriever.version, **recommendation(retriever, parsed.history, rows, 0)})

        return await lookup(retriever, [parsed.history], parsed.k, parsed.exclude_history, finish)

    @app.post("/recommend", openapi_extra=_body_schema(RecommendRequest))
    async def recommend(request: Request) -> Response:
        """Top ``k`` items for one history of raw item ids."""
        return await answer_recommend(await read_body(request.scope, request.receive))

    async def recommend_fast(scope: dict, receive: Callable, send: Callable) -> None:
        """``recommend`` as a plain ASGI handler (see ``_Service``), metrics included."""
        started = time.perf_counter()
        try:
            response = await answer_recommend(await read_body(scope, receive))
        except ApiError as error:
            response = error_response("/recommend", error.status, error.message, error.headers)
        except Exception:
            logger.exception("POST /recommend failed")
            response = error_response("/recommend", 500, "Internal Server Error")
        await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
        metrics.observe("recommend", response.status_code, time.perf_counter() - started)

    app.fast_paths = {("POST", "/recommend"): recommend_fast}

    @app.post("/recommend/batch", openapi_extra=_body_schema(BatchRecommendRequest))
    async def recommend_batch(request: Request) -> Response:
        """Top ``k`` items for each of several histories."""
        parsed = parse(BatchRecommendRequest, await read_body(request.scope, request.receive))
        retriever = watcher.current
        if not 1 <= len(parsed.histories) <= limits.max_batch:
            raise ApiError(422, f"histories must hold 1..{limits.max_batch} histories, got {len(parsed.histories)}")
        check(parsed.histories, parsed.k, retriever)

        def finish(retriever: Retriever, rows: Rows) -> bytes:
            results = [recommendation(retriever, history, rows, row) for row, history in enumerate(parsed.histories)]
            return orjson.dumps({"model_version": retriever.version, "results": results})

        return await lookup(retriever, parsed.histories, parsed.k, parsed.exclude_history, finish)

    @app.get("/health")
    async def health() -> Response:
        """Answered by the event loop, never queued behind lookups."""
        return _json({"status": "ok", "model_version": watcher.current.version})

    @app.get("/metadata")
    async def metadata() -> Response:
        return _json(
            {
                **watcher.current.describe(public=True),
                "model_name": name,
                "limits": dataclasses.asdict(limits),
                "poll_seconds": poll_seconds,
            }
        )

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), 200, None, CONTENT_TYPE_LATEST)

    # TensorFlow Serving's REST API (tf_serving.py).
    def served(model: str, version: str | None) -> Retriever:
        retriever = watcher.current
        if model != name:
            wanted = f"Latest({model})" if version is None else f"Specific({model}, {version})"
            raise ApiError(404, f"Servable not found for request: {wanted}")
        if version is not None and version != str(retriever.version):
            raise ApiError(404, f"Servable not found for request: Specific({model}, {version})")
        return retriever

    @app.get("/v1/models/{model}")
    @app.get("/v1/models/{model}/versions/{version}")
    async def model_status(model: str, version: str | None = None) -> Response:
        retriever = served(model, None)
        statuses = tf_serving.model_status(retriever.version, watcher.failed)["model_version_status"]
        if version is not None:
            statuses = [status for status in statuses if status["version"] == version]
            if not statuses:
                served(model, version)  # the 404
        return _json({"model_version_status": statuses})

    @app.get("/v1/models/{model}/metadata")
    @app.get("/v1/models/{model}/versions/{version}/metadata")
    async def model_metadata(model: str, version: str | None = None) -> Response:
        retriever = served(model, version)
        return _json(tf_serving.model_metadata(name, retriever.version, retriever.version_dir))

    @app.post("/v1/models/{model}:predict")
    @app.post("/v1/models/{model}/versions/{version}:predict")
    async def predict(request: Request, model: str, version: str | None = None) -> Response:
        retriever = served(model, version)
        parsed = tf_serving.parse_predict(
            await read_body(request.scope, request.receive, invalid_status=400),
            max_batch=limits.max_batch,
            max_history=limits.max_history,
            max_id_length=limits.max_id_length,
        )
        width = max(len(history) for history in parsed.histories)
        if parsed.signature == SIGNATURE_USER:

            def finish(retriever: Retriever, rows: Rows) -> bytes:
                outputs = {"user_embedding": rows.users, "history_item_ids": np.ascontiguousarray(rows.history_ids[:, :width])}
                return tf_serving.predict_response(parsed, outputs)

            return await lookup(retriever, parsed.histories, None, False, finish)

        def finish_top_k(retriever: Retriever, rows: Rows) -> bytes:
            outputs = {"item_ids": retriever.tokens(rows.item_ids).tolist(), "scores": rows.scores}
            return tf_serving.predict_response(parsed, outputs)

        k = min(parsed.k, retriever.num_items)  # as the SavedModel: at most the whole catalog
        return await lookup(retriever, parsed.histories, k, False, finish_top_k)

    return app


def _settle_all(outcomes: list[tuple[Lookup, Any, BaseException | None]]) -> None:
    """Answers the requests of one batch (on the event loop; ``token`` is each one's future)."""
    for lookup, result, error in outcomes:
        future = lookup.token
        if future.done():  # the client went away
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body of an endpoint that reads and checks its body itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}
