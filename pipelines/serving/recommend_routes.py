"""``POST /recommend`` and ``POST /recommend/batch``: top ``k`` items for histories of raw item ids.

``POST /recommend``, the hot path, is also answered by a plain ASGI handler ahead of FastAPI's
middleware and routing (``fast_recommend``, see ``app.Service``); its FastAPI route stays, to
document the endpoint in the OpenAPI schema, and both call one function.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from tfcroloss.pipelines.retrieval import check_k
from tfcroloss.pipelines.serving.batching import Rows
from tfcroloss.pipelines.serving.bodies import body_schema, error_response, parse, read_body
from tfcroloss.pipelines.serving.limits import Limits
from tfcroloss.pipelines.serving.retriever import Retriever
from tfcroloss.pipelines.serving.state import ServiceState
from tfcroloss.pipelines.serving.tf_serving import ApiError

logger = logging.getLogger(__name__)


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


def check(histories: Sequence[Sequence[str]], k: int, retriever: Retriever, limits: Limits) -> None:
    """A 422 ``ApiError`` naming the first history (and id) beyond the limits, or a bad ``k``."""
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


def recommendation(retriever: Retriever, history: Sequence[str], rows: Rows, row: int) -> dict[str, Any]:
    found = rows.item_ids[row]
    items = [
        {"id": token, "score": score}
        for token, score in zip(retriever.item_tokens(found), rows.scores[row][found > 0].tolist(), strict=True)
    ]
    return {"items": items, "unknown_ids": retriever.unknown_ids(history, rows.history_ids[row])}


async def answer_recommend(state: ServiceState, body: bytes) -> Response:
    """What ``POST /recommend`` answers to ``body`` (raises ``ApiError``)."""
    parsed = parse(RecommendRequest, body)
    retriever = state.served()
    check([parsed.history], parsed.k, retriever, state.limits)

    def finish(retriever: Retriever, rows: Rows) -> bytes:
        return orjson.dumps({"model_version": retriever.version, **recommendation(retriever, parsed.history, rows, 0)})

    return await state.lookup(retriever, [parsed.history], parsed.k, parsed.exclude_history, finish)


def router(state: ServiceState) -> APIRouter:
    routes = APIRouter()
    limits = state.limits

    @routes.post("/recommend", openapi_extra=body_schema(RecommendRequest))
    async def recommend(request: Request) -> Response:
        """Top ``k`` items for one history of raw item ids."""
        return await answer_recommend(state, await read_body(request.scope, request.receive, limits.max_body_bytes))

    @routes.post("/recommend/batch", openapi_extra=body_schema(BatchRecommendRequest))
    async def recommend_batch(request: Request) -> Response:
        """Top ``k`` items for each of several histories."""
        parsed = parse(BatchRecommendRequest, await read_body(request.scope, request.receive, limits.max_body_bytes))
        retriever = state.served()
        if not 1 <= len(parsed.histories) <= limits.max_batch:
            raise ApiError(422, f"histories must hold 1..{limits.max_batch} histories, got {len(parsed.histories)}")
        check(parsed.histories, parsed.k, retriever, limits)

        def finish(retriever: Retriever, rows: Rows) -> bytes:
            results = [recommendation(retriever, history, rows, row) for row, history in enumerate(parsed.histories)]
            return orjson.dumps({"model_version": retriever.version, "results": results})

        return await state.lookup(retriever, parsed.histories, parsed.k, parsed.exclude_history, finish)

    return routes


def fast_recommend(state: ServiceState) -> Callable:
    """``POST /recommend`` as a plain ASGI handler (see ``app.Service``), metrics included."""
    max_body_bytes = state.limits.max_body_bytes

    async def recommend(scope: dict, receive: Callable, send: Callable) -> None:
        started = time.perf_counter()
        try:
            response = await answer_recommend(state, await read_body(scope, receive, max_body_bytes))
        except ApiError as error:
            response = error_response("/recommend", error.status, error.message, error.headers)
        except Exception:
            logger.exception("POST /recommend failed")
            response = error_response("/recommend", 500, "Internal Server Error")
        await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
        state.metrics.observe("recommend", response.status_code, time.perf_counter() - started)

    return recommend
