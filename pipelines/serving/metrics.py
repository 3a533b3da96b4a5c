"""The service's Prometheus metrics: ``Metrics`` (a registry per app), ``MeasureRequests`` (the
middleware that counts every answer by endpoint and status) and the ``GET /metrics`` route."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from tfcroloss.pipelines.serving.retriever import Retriever

ENDPOINTS = {
    "/recommend": "recommend",
    "/recommend/batch": "recommend_batch",
    "/health": "health",
    "/health/live": "health_live",
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
        self.version = Gauge("tfcroloss_model_version", "Model version served (its folder's name; 0: none)", registry=r)
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

    def unloaded(self) -> None:
        """No version is served (its folder was removed and none was left)."""
        self.version.set(0)


class MeasureRequests:
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


def router(metrics: Metrics) -> APIRouter:
    """``GET /metrics``: the registry in Prometheus's text format."""
    routes = APIRouter()

    @routes.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), 200, None, CONTENT_TYPE_LATEST)

    return routes
