"""TensorFlow Serving's REST API over an exported version: request parsing and response shapes.

``tfcroloss serve`` answers the requests that a client of ``tensorflow_model_server`` sends
(TF Serving's ``api_rest.md``), for the two signatures of an exported version (``version``):

- ``POST /v1/models/NAME[/versions/V]:predict`` with ``{"signature_name": ..., "instances": ...}``
  (row format; answered ``{"predictions": [...]}``) or ``{"inputs": ...}`` (columnar; answered
  ``{"outputs": {...}}``). ``serving_default``: ``history`` -> ``user_embedding``,
  ``history_item_ids``; ``top_k``: ``history``, ``k`` -> ``item_ids``, ``scores``.
- ``GET /v1/models/NAME[/versions/V]``: ``{"model_version_status": [...]}``.
- ``GET /v1/models/NAME[/versions/V]/metadata``: the SignatureDefMap, as TF Serving writes it.
- Errors: ``{"error": "..."}`` with TF Serving's status codes (400 invalid argument, 404 not found).

Differences, all in what is accepted rather than what is answered: ``top_k`` is answered from the
version's retrieval index (ScaNN if built: approximate, see ``index/build.json``), histories of
one request may have different lengths (TF Serving needs them padded with ""), and ``k`` may
also be given per instance in the row format (the same in every instance). ``k`` above the
catalog size returns the whole catalog, as the SavedModel does.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any

import orjson

from tfcroloss.pipelines.serving.version import SIGNATURE_TOP_K, SIGNATURE_USER

SIGNATURE_INPUTS = {SIGNATURE_USER: ("history",), SIGNATURE_TOP_K: ("history", "k")}
"""The inputs of each signature of an exported version (see ``version``)."""
SIGNATURE_OUTPUTS = {
    SIGNATURE_USER: ("user_embedding", "history_item_ids"),
    SIGNATURE_TOP_K: ("item_ids", "scores"),
}


class ApiError(Exception):
    """An answer other than 200, with TF Serving's status code for its error kind."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def invalid(message: str) -> ApiError:
    """TF Serving's INVALID_ARGUMENT: HTTP 400."""
    return ApiError(400, message)


@dataclasses.dataclass(frozen=True)
class PredictRequest:
    signature: str
    histories: list[list[str]]
    k: int | None
    columnar: bool


def parse_predict(body: bytes, *, max_batch: int, max_history: int, max_id_length: int) -> PredictRequest:
    """A ``:predict`` body checked against the signatures and the service's limits; raises
    ``ApiError`` (400) with what is wrong."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise invalid(f"JSON Parse error: {error} (the body must be JSON in UTF-8, no lone surrogates)") from None
    if not isinstance(request, dict):
        raise invalid("JSON Value: the request body must be a JSON object")
    unknown = set(request) - {"signature_name", "instances", "inputs"}
    if unknown:
        raise invalid(f"JSON Value: unknown keys {sorted(unknown)}; expected signature_name and instances or inputs")
    signature = request.get("signature_name", "")
    if not isinstance(signature, str):
        raise invalid(f"signature_name must be a string, got {orjson.dumps(signature).decode()[:40]}")
    signature = signature or SIGNATURE_USER
    if signature not in SIGNATURE_INPUTS:
        raise invalid(f'Serving signature name: "{signature}" not found in signature def')
    if ("instances" in request) == ("inputs" in request):
        raise invalid("Missing 'inputs' or 'instances' key" if "inputs" not in request else "Not allowed to have both 'instances' and 'inputs'")
    names = SIGNATURE_INPUTS[signature]
    if "instances" in request:
        histories, k = _rows(request["instances"], names)
    else:
        histories, k = _columns(request["inputs"], names)
    if not 1 <= len(histories) <= max_batch:
        raise invalid(f"history must hold 1..{max_batch} rows (the batch limit), got {len(histories)}")
    for row, history in enumerate(histories):
        histories[row] = _strings(history, f"history[{row}]", max_history, max_id_length)
    if signature == SIGNATURE_TOP_K:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise invalid(f"k must be a positive integer (int32 scalar), got {orjson.dumps(k).decode()}")
    return PredictRequest(signature, histories, k, columnar="inputs" in request)


def _rows(instances: Any, names: tuple[str, ...]) -> tuple[list[Any], Any]:
    if not isinstance(instances, list) or not instances:
        raise invalid("instances must be a non-empty list (one entry per example)")
    if not isinstance(instances[0], dict):
        if len(names) > 1:
            raise invalid(f"instances must be objects with the named inputs {list(names)}")
        return list(instances), None
    histories, ks = [], set()
    for number, instance in enumerate(instances):
        if not isinstance(instance, dict) or set(instance) != set(names):
            raise invalid(f"instances[{number}] must be an object with exactly the inputs {list(names)}")
        histories.append(instance["history"])
        if "k" in instance:
            ks.add(orjson.dumps(instance["k"]))
    if len(ks) > 1:
        raise invalid("k must be the same in every instance (it is a scalar input of top_k)")
    return histories, orjson.loads(ks.pop()) if ks else None


def _columns(inputs: Any, names: tuple[str, ...]) -> tuple[list[Any], Any]:
    if not isinstance(inputs, dict):
        if len(names) > 1:
            raise invalid(f"inputs must be an object with the named inputs {list(names)}")
        inputs = {"history": inputs}
    if set(inputs) != set(names):
        raise invalid(f"inputs must hold exactly the named inputs {list(names)}, got {sorted(inputs)}")
    history = inputs["history"]
    if not isinstance(history, list) or not all(isinstance(row, list) for row in history):
        raise invalid("history must be a [batch, length] list of lists of strings")
    return list(history), inputs.get("k")


def _strings(values: Any, where: str, max_history: int, max_id_length: int) -> list[str]:
    if not isinstance(values, list):
        raise invalid(f"{where} must be a list of strings (a history), got {type(values).__name__}")
    if len(values) > max_history:
        raise invalid(f"{where} has {len(values)} item ids; the limit is {max_history}")
    out = []
    for number, value in enumerate(values):
        if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                value = base64.b64decode(value["b64"], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise invalid(f"{where}[{number}]: b64 is not base64 of UTF-8 text") from None
        if not isinstance(value, str):
            raise invalid(f"{where}[{number}] must be a string (DT_STRING), got {orjson.dumps(value).decode()[:40]}")
        if len(value) > max_id_length:
            raise invalid(f"{where}[{number}] is {len(value)} characters long; the limit is {max_id_length}")
        out.append(value)
    return out


def predict_response(request: PredictRequest, outputs: dict[str, Any]) -> bytes:
    """``outputs`` (name -> per-row lists or [B, ...] arrays) in the request's format."""
    if request.columnar:
        return orjson.dumps({"outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY)
    names = list(outputs)
    rows = [dict(zip(names, values, strict=True)) for values in zip(*outputs.values(), strict=True)]
    return orjson.dumps({"predictions": rows}, option=orjson.OPT_SERIALIZE_NUMPY)


def model_status(
    served: int | None, failed: tuple[int, str] | None = None, unloaded: int | None = None
) -> dict[str, Any]:
    """GetModelStatusResponse as TF Serving's REST API writes it, newest first: the version
    served (AVAILABLE), a version unloaded because its folder was removed and none was left
    (END), and one that failed to load (END, with its error)."""
    statuses = {}
    if failed is not None:
        statuses[failed[0]] = ("END", "UNKNOWN", failed[1])
    if unloaded is not None:
        statuses[unloaded] = ("END", "OK", "")
    if served is not None:
        statuses[served] = ("AVAILABLE", "OK", "")
    return {
        "model_version_status": [
            {"version": str(number), "state": state, "status": {"error_code": code, "error_message": message}}
            for number, (state, code, message) in sorted(statuses.items(), reverse=True)
        ]
    }


def model_metadata(name: str, version: int, signature_defs: dict[str, Any]) -> dict[str, Any]:
    """GetModelMetadataResponse: the SignatureDefMap of the version served
    (``version.read_signature_defs``, read when it was loaded)."""
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {
            "signature_def": {
                "signature_def": signature_defs,
                "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
            }
        },
    }
