"""The HTTP recommendation service (FastAPI): ``create_app(model_root)``.

Endpoints (see docs/serving.md): ``POST /recommend``, ``POST /recommend/batch``
(``recommend_routes``), ``GET /health``, ``GET /metadata`` (here), ``GET /metrics`` (``metrics``),
and TensorFlow Serving's REST API (``tf_serving_routes``). The routers share one
``ServiceState`` (``state``).

Lookups are micro-batched (``batching``): the requests waiting share one user-tower call and one
index search, on worker threads, while the event loop keeps reading requests; ``/health`` never
waits for lookups. A bounded queue answers a burst beyond it with 503 and ``Retry-After``.
Bodies are limited in size (413, refused before being read in full), ids in length, and types
are strict (``k`` must be a JSON integer). A background thread (``watcher``) loads newer
versions and swaps them in.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tfcroloss.pipelines.serving import metrics as metrics_lib
from tfcroloss.pipelines.serving import recommend_routes, tf_serving_routes
from tfcroloss.pipelines.serving.bodies import error_response, json_response
from tfcroloss.pipelines.serving.limits import Limits
from tfcroloss.pipelines.serving.state import RETRY_AFTER_SECONDS, ServiceState, unavailable_error
from tfcroloss.pipelines.serving.tf_serving import ApiError
from tfcroloss.pipelines.serving.watcher import Loader, ModelWatcher


class Service(FastAPI):
    """FastAPI, except that the requests in ``fast_paths`` (method, path) are answered by a plain
    ASGI handler before FastAPI's middleware and routing, which add event-loop time to every
    request (docs/serving.md has the figures). The route of the same path stays registered:
    it documents the endpoint in the OpenAPI schema and answers exactly as the fast path does
    (both call one function)."""

    fast_paths: Mapping[tuple[str, str], Callable] = MappingProxyType({})

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        handler = self.fast_paths.get((scope.get("method"), scope.get("path"))) if scope["type"] == "http" else None
        if handler is None:
            await super().__call__(scope, receive, send)
        else:
            await handler(scope, receive, send)


def create_app(
    model_root: str | Path,
    *,
    poll_seconds: float = 10.0,
    model_name: str | None = None,
    limits: Limits | None = None,
    load_retriever: Loader | None = None,
    **limit_overrides: Any,
) -> FastAPI:
    """The service for the versions under ``model_root`` (loads the latest one now).

    ``limits`` (or keyword overrides of its fields, e.g. ``max_history=20``) bound requests
    and the lookup queue. ``model_name`` is the NAME of TF Serving's ``/v1/models/NAME``
    (default: the directory name of ``model_root``). ``load_retriever(version_dir,
    isolate_index)`` loads a version (default ``Retriever.load``; tests pass a fake).
    """
    limits = dataclasses.replace(limits or Limits(), **limit_overrides)
    if poll_seconds <= 0:
        raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
    metrics = metrics_lib.Metrics()
    # TensorFlow's modules are many long-lived objects that a full collection would scan,
    # stalling every request. Frozen before any version is loaded, so that a replaced
    # version's objects are still collected.
    gc.collect()
    gc.freeze()
    watcher = ModelWatcher(
        model_root, poll_seconds=poll_seconds, loader=load_retriever,
        on_load=metrics.loaded, on_failure=metrics.load_failures.inc, on_unload=metrics.unloaded,
    )
    state = ServiceState(watcher, limits, metrics, model_name or Path(model_root).resolve().name, poll_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.start(asyncio.get_running_loop())
        yield
        state.stop()

    app = Service(title="tfcroloss recommendations", lifespan=lifespan)
    app.state.watcher = watcher
    app.state.metrics = metrics
    app.state.limits = limits
    app.add_middleware(metrics_lib.MeasureRequests, metrics=metrics)
    _add_error_handlers(app)
    app.include_router(recommend_routes.router(state))
    app.include_router(_status_router(state))
    app.include_router(metrics_lib.router(metrics))
    app.include_router(tf_serving_routes.router(state))
    app.fast_paths = {("POST", "/recommend"): recommend_routes.fast_recommend(state)}
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Errors as JSON: ``{"detail": ...}``, or ``{"error": ...}`` under TF Serving's ``/v1/``."""

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


def _status_router(state: ServiceState) -> APIRouter:
    """``GET /health`` (readiness), ``GET /health/live`` (liveness) and ``GET /metadata``."""
    routes = APIRouter()

    @routes.get("/health")
    async def health() -> Response:
        """Readiness, what a load balancer polls: 200 while lookups can be answered, else 503
        with the reason (no version, index process being reloaded, lookup queue full).
        Answered by the event loop, never queued behind lookups."""
        retriever = state.watcher.current
        version = None if retriever is None else retriever.version
        reason = state.unavailable()
        if reason is not None:
            return json_response({"status": "unavailable", "reason": reason, "model_version": version}, 503,
                                 {"Retry-After": str(RETRY_AFTER_SECONDS)})
        return json_response({"status": "ok", "model_version": version})

    @routes.get("/health/live")
    async def live() -> Response:
        """Liveness: 200 while the process answers HTTP (a restart would not help otherwise)."""
        return json_response({"status": "alive"})

    @routes.get("/metadata")
    async def metadata() -> Response:
        retriever = state.watcher.current
        if retriever is None:
            raise unavailable_error(state.no_version())
        return json_response(
            {
                **retriever.describe(public=True),
                "model_name": state.model_name,
                "limits": dataclasses.asdict(state.limits),
                "poll_seconds": state.poll_seconds,
            }
        )

    return routes
