"""Bodies in and out of the service: reading a request body within its size limit, parsing it
(JSON, then a strict pydantic model), and the JSON answers, errors included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from tfcroloss.pipelines.serving.tf_serving import ApiError


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, "application/json")


def error_response(path: str, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error answer: ``{"detail": ...}``, or TF Serving's ``{"error": ...}`` under ``/v1/``."""
    key = "error" if path.startswith("/v1/") else "detail"
    return json_response({key: message}, status, headers)


async def read_body(scope: dict, receive: Callable, limit: int, invalid_status: int = 422) -> bytes:
    """The body of an ASGI request (a route passes ``request.scope, request.receive``), refused
    with 413 as soon as it is known to exceed ``limit`` bytes: from its declared length before
    anything is read, else while it is read."""
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
    """``body`` as an instance of ``model``; a 422 ``ApiError`` naming the field otherwise."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ApiError(422, f"body: invalid JSON: {error} (the body must be JSON in UTF-8; strings may not hold lone surrogates such as \\ud800)") from None
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        raise ApiError(422, validation_message(error)) from None


def validation_message(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}" for e in error.errors(include_url=False)
    )


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body of an endpoint that reads and checks its body itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}
