"""The HTTP recommendation service (FastAPI): ``create_app(model_root)``.

Endpoints (see docs/serving.md): ``POST /recommend``, ``POST /recommend/batch``, ``GET /health``,
``GET /metadata``. A background thread polls ``model_root`` for a newer version (or a ScaNN
index added to the current one), loads and warms it fully, then swaps one reference: a request
reads that reference once, so requests in flight finish on the Retriever they started with.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tfcroloss.pipelines.retrieval import check_k
from tfcroloss.pipelines.serving.retriever import Recommendation, Retriever
from tfcroloss.pipelines.serving.version import INDEX_DIR, list_versions

logger = logging.getLogger(__name__)


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    history: list[str] = Field(description="raw item ids, oldest first")
    k: int = Field(100, description="number of items to return, 1..catalog size")
    exclude_history: bool = Field(True, description="never return items of the history")


class BatchRecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    histories: list[list[str]] = Field(description="one history of raw item ids per user")
    k: int = 100
    exclude_history: bool = True


class ScoredItem(BaseModel):
    id: str
    score: float


class Recommendations(BaseModel):
    items: list[ScoredItem]
    unknown_ids: list[str] = Field(description="history ids not in the catalog (ignored)")


class RecommendResponse(Recommendations):
    model_version: int


class BatchRecommendResponse(BaseModel):
    model_version: int
    results: list[Recommendations]


class ModelWatcher:
    """Holds the Retriever of the latest version under ``model_root`` and keeps it current."""

    def __init__(
        self,
        model_root: str | Path,
        *,
        poll_seconds: float = 10.0,
        loader: Callable[[Path], Retriever] = Retriever.load,
    ):
        self.model_root = Path(model_root)
        self.poll_seconds = poll_seconds
        self._loader = loader
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: tuple[int, bool] | None = None
        key = self._latest_key()
        if key is None:
            raise FileNotFoundError(f"{self.model_root} holds no exported version (saved_models/NAME/<version>/)")
        self.current = self._load(key[0])
        self._key = key

    def _latest_key(self) -> tuple[int, bool] | None:
        versions = list_versions(self.model_root)
        if not versions:
            return None
        return versions[-1], (self.model_root / str(versions[-1]) / INDEX_DIR).is_dir()

    def _load(self, version: int) -> Retriever:
        retriever = self._loader(self.model_root / str(version))
        retriever.recommend(["warm-up"], k=1)  # traces and warms the graph before any request sees it
        return retriever

    def refresh(self) -> bool:
        """Loads and switches to a newer version (or index) if there is one; True if it switched."""
        key = self._latest_key()
        if key is None or key == self._key or key == self._failed or key[0] < self._key[0]:
            return False
        try:
            retriever = self._load(key[0])
        except Exception:
            logger.exception("could not load %s version %d; still serving %d", self.model_root, key[0], self._key[0])
            self._failed = key
            return False
        self.current, self._key = retriever, key  # one reference swap; old requests keep the old object
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
            self.refresh()


def create_app(
    model_root: str | Path,
    *,
    poll_seconds: float = 10.0,
    max_history: int = 1000,
    max_batch: int = 256,
) -> FastAPI:
    """The service for the versions under ``model_root`` (loads the latest one now).

    ``max_history`` caps the ids per history and ``max_batch`` the histories per batch request.
    """
    if max_history < 1 or max_batch < 1 or poll_seconds <= 0:
        raise ValueError(
            f"max_history and max_batch must be >= 1 and poll_seconds > 0, got {max_history}, {max_batch}, {poll_seconds}"
        )
    watcher = ModelWatcher(model_root, poll_seconds=poll_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        watcher.start()
        yield
        watcher.stop()

    app = FastAPI(title="tfcroloss recommendations", lifespan=lifespan)
    app.state.watcher = watcher

    @app.exception_handler(RequestValidationError)
    async def readable_validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        messages = [f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors()]
        return JSONResponse(status_code=422, content={"detail": "; ".join(messages)})

    def check(histories: list[list[str]], k: int, retriever: Retriever) -> None:
        try:
            check_k(k, retriever.num_items)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        for number, history in enumerate(histories):
            where = f"history {number}" if len(histories) > 1 else "history"
            if not history:
                raise HTTPException(422, f"{where} is empty: give at least one item id")
            if len(history) > max_history:
                raise HTTPException(422, f"{where} has {len(history)} item ids; the limit is {max_history}")

    def scored(result: Recommendation) -> Recommendations:
        items = [ScoredItem(id=i, score=s) for i, s in zip(result.item_ids, result.scores, strict=True)]
        return Recommendations(items=items, unknown_ids=result.unknown_ids)

    @app.post("/recommend", response_model=RecommendResponse)
    def recommend(request: RecommendRequest) -> RecommendResponse:
        retriever = watcher.current
        check([request.history], request.k, retriever)
        result = scored(retriever.recommend(request.history, request.k, request.exclude_history))
        return RecommendResponse(model_version=retriever.version, items=result.items, unknown_ids=result.unknown_ids)

    @app.post("/recommend/batch", response_model=BatchRecommendResponse)
    def recommend_batch(request: BatchRecommendRequest) -> BatchRecommendResponse:
        retriever = watcher.current
        if not 1 <= len(request.histories) <= max_batch:
            raise HTTPException(422, f"histories must hold 1..{max_batch} histories, got {len(request.histories)}")
        check(request.histories, request.k, retriever)
        results = retriever.recommend_batch(request.histories, request.k, request.exclude_history)
        return BatchRecommendResponse(model_version=retriever.version, results=[scored(r) for r in results])

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model_version": watcher.current.version}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        return {
            **watcher.current.describe(),
            "limits": {"max_history": max_history, "max_batch": max_batch},
            "poll_seconds": poll_seconds,
        }

    return app
