"""The OpenAPI 3.1 document of the predict function; tests keep it true to the router.

The schemas are JSON Schema 2020-12 (OpenAPI 3.1's dialect), so a response can be validated
against them as they are.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from milkprice import __version__

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return _json(description, _ref("Error"), **extra)


RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds after which to try again",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
NOT_READY = _error(
    "No model has been promoted yet, or none could be loaded (the bucket is unreachable)",
    headers=RETRY_AFTER,
)
MODEL_HEADERS = {
    "X-Model-Version": {"description": "the serving model version", "schema": {"type": "string"}},
}
NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "forecast, legacy, or milk-price (the forecast model)",
    "schema": {"type": "string", "enum": ["forecast", "legacy", "milk-price"]},
}

VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "description": "a model version the bucket holds (GET /v2/models/{name} lists them)",
    "schema": {"type": "string"},
}
OCTETS = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_REQUEST = {
    "name": HEADER_LENGTH,
    "in": "header",
    "required": False,
    "description": (
        "binary tensor data: the length of the JSON at the start of the body; the bytes after "
        "it are the input's values, little-endian, as many as its parameters.binary_data_size"
    ),
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
BINARY_ANSWER = {
    HEADER_LENGTH: {
        "description": "only when the output is binary data: the length of the JSON before it",
        "required": False,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "details": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["problem"],
                    "properties": {
                        "row": {"type": "integer", "minimum": 0, "description": "0-based"},
                        "field": {"type": "string"},
                        "problem": {"type": "string"},
                    },
                },
            },
        },
    },
    "Row": {
        "type": "object",
        "description": (
            "Feature name to value. A row with every feature of the forecast model is scored "
            "by it; else a row with every feature of the legacy model (the old 141 features) "
            "by the legacy model. Other keys are ignored. The names are listed by "
            "GET /v2/models/{name} under parameters.feature_names."
        ),
        "additionalProperties": {"type": "number"},
    },
    "PredictRequest": {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"type": "array", "minItems": 1, "items": _ref("Row")}},
    },
    "PredictResponse": {
        "type": "array",
        "description": "one price per row, in row order",
        "items": {"type": "number"},
    },
    "Forecast": {
        "type": "object",
        "description": "Next month's forecast: the first month of the forecast path, the same "
        "figures as months=1 gives; a model trained before the path answers its forecast "
        "model's price of next month's feature row",
        "required": ["month", "price", "model_version", "source"],
        "properties": {
            "month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
            "price": {"type": "number"},
            "model_version": {"type": "string"},
            "source": {
                "type": "string",
                "enum": ["path", "model"],
                "description": "path: the forecast path's first month; model: the forecast "
                "model's price of next month's feature row (a model trained before the path)",
            },
            "interval": {
                "type": "object",
                "description": "prediction interval from the backtest's errors one month ahead",
                "required": ["level", "lower", "upper"],
                "properties": {
                    "level": {"type": "number"},
                    "lower": {"type": "number"},
                    "upper": {"type": "number"},
                },
            },
        },
    },
    "ForecastPath": {
        "type": "object",
        "required": ["model_version", "months"],
        "properties": {
            "model_version": {"type": "string"},
            "months": {
                "type": "array",
                "description": "the next N months, each with its 80% interval from the "
                "backtest's errors at that horizon",
                "items": {
                    "type": "object",
                    "required": ["month", "price", "interval"],
                    "properties": {
                        "month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                        "price": {"type": "number"},
                        "interval": {
                            "type": "object",
                            "required": ["level", "lower", "upper"],
                            "properties": {
                                "level": {"type": "number"},
                                "lower": {"type": "number"},
                                "upper": {"type": "number"},
                            },
                        },
                    },
                },
            },
        },
    },
    "ErrorFigures": {
        "type": "object",
        "required": ["rmse", "mae", "bias"],
        "properties": {
            "rmse": {"type": "number"},
            "mae": {"type": "number"},
            "bias": {"type": "number", "description": "mean of forecast minus actual"},
        },
    },
    "Accuracy": {
        "type": "object",
        "description": "The forecast ledger: every forecast users were served (the version "
        "serving when it was the forecast of that month at that horizon), scored against the "
        "price that arrived; figures per horizon beside the naive forecast (the last price the "
        "version knew) on the same months; the interval's coverage with the central 90% band "
        "of a binomial at 80% for its count; and the drift state. Empty before any forecast "
        "is scored.",
        "required": ["forecasts", "revisions", "horizons", "served", "drift"],
        "properties": {
            "updated": {"type": "string", "description": "when a training run last wrote it"},
            "run_id": {"type": "string", "description": "the run that wrote it"},
            "forecasts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": [
                        "month",
                        "horizon",
                        "version",
                        "promoted",
                        "source",
                        "price",
                        "actual",
                        "naive",
                        "error",
                    ],
                    "properties": {
                        "month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                        "horizon": {"type": "integer", "minimum": 1, "maximum": 12},
                        "version": {"type": "string"},
                        "promoted": {"type": "string"},
                        "source": {"type": "string", "enum": ["path", "model"]},
                        "price": {"type": "number", "description": "the forecast served"},
                        "lower": {"type": "number"},
                        "upper": {"type": "number"},
                        "level": {"type": "number"},
                        "actual": {
                            "type": "number",
                            "description": "the price first read for the month",
                        },
                        "naive": {"type": "number"},
                        "error": {"type": "number", "description": "price minus actual"},
                        "inside": {"type": "boolean"},
                        "scored": {"type": "string"},
                        "run_id": {"type": "string"},
                    },
                },
            },
            "revisions": {
                "type": "array",
                "description": "scored months whose price changed in a later upload",
                "items": {
                    "type": "object",
                    "required": ["month", "previous", "actual", "seen"],
                    "properties": {
                        "month": {"type": "string"},
                        "previous": {"type": "number"},
                        "actual": {"type": "number"},
                        "seen": {"type": "string"},
                        "run_id": {"type": "string"},
                        "token": {"type": "string"},
                    },
                },
            },
            "horizons": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["horizon", "count", "forecast", "naive"],
                    "properties": {
                        "horizon": {"type": "integer", "minimum": 1, "maximum": 12},
                        "count": {"type": "integer", "minimum": 1},
                        "forecast": _ref("ErrorFigures"),
                        "naive": _ref("ErrorFigures"),
                        "rmse_to_naive": {"type": "number"},
                        "intervals": {"type": "integer", "minimum": 0},
                        "inside": {"type": "integer", "minimum": 0},
                        "coverage": {"type": "number", "minimum": 0, "maximum": 1},
                        "coverage_band": {
                            "type": "array",
                            "items": {"type": "number"},
                            "minItems": 2,
                            "maxItems": 2,
                        },
                        "backtest_rmse": {"type": "number"},
                        "backtest_coverage": {"type": "number"},
                    },
                },
            },
            "served": {
                "type": "array",
                "description": "every promotion and rollback, oldest first",
                "items": {
                    "type": "object",
                    "required": ["version", "run_id", "promoted"],
                    "properties": {
                        "version": {"type": "string"},
                        "run_id": {"type": "string"},
                        "promoted": {"type": "string"},
                        "source": {"type": "string", "enum": ["pointer", "run"]},
                    },
                },
            },
            "drift": {
                "type": "object",
                "required": ["state"],
                "properties": {
                    "state": {"type": "string", "enum": ["none", "ok", "drift"]},
                    "signals": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["horizon", "kind", "message"],
                            "properties": {
                                "horizon": {"type": "integer"},
                                "kind": {"type": "string", "enum": ["coverage", "misses"]},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
    "TensorMetadata": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    },
    "ServerMetadata": {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "versions", "platform", "inputs", "outputs", "parameters"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string", "const": "onnxruntime_onnx"},
            "inputs": {"type": "array", "items": _ref("TensorMetadata")},
            "outputs": {"type": "array", "items": _ref("TensorMetadata")},
            "parameters": {
                "type": "object",
                "required": ["feature_names"],
                "properties": {
                    "feature_names": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "the input's columns, in order",
                    },
                    "role": {"type": "string"},
                    "candidate": {"type": ["string", "null"]},
                    "description": {"type": ["string", "null"]},
                    "unit": {"type": ["string", "null"]},
                },
            },
        },
    },
    "Live": {
        "type": "object",
        "required": ["live"],
        "properties": {"live": {"type": "boolean"}},
    },
    "Ready": {
        "type": "object",
        "required": ["ready"],
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
    },
    "InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "inputs": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1,
                "items": {
                    "type": "object",
                    "required": ["shape", "datatype"],
                    "description": "data, or parameters.binary_data_size with the bytes after",
                    "properties": {
                        "name": {"type": "string", "description": "any name; X by convention"},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                        },
                        "shape": {
                            "type": "array",
                            "items": {"type": "integer"},
                            "minItems": 2,
                            "maxItems": 2,
                            "description": "[N, F]: F features in the metadata's order",
                        },
                        "datatype": {"type": "string", "enum": ["FP64", "FP32"]},
                        "data": {
                            "type": "array",
                            "description": "N*F numbers, flat (row-major) or as N rows",
                            "items": {
                                "anyOf": [
                                    {"type": "number"},
                                    {"type": "array", "items": {"type": "number"}},
                                ]
                            },
                        },
                    },
                },
            },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "const": "price"},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data": {"type": "boolean"}},
                        },
                    },
                },
            },
            "parameters": {
                "type": "object",
                "properties": {
                    "binary_data_output": {
                        "type": "boolean",
                        "description": "every output as binary data, unless outputs say",
                    }
                },
            },
        },
    },
    "RepositoryIndex": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name", "version", "state"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]},
                "reason": {"type": "string"},
            },
        },
    },
    "InferResponse": {
        "type": "object",
        "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "shape", "datatype"],
                    "description": "data, or (binary) parameters.binary_data_size",
                    "properties": {
                        "name": {"type": "string", "const": "price"},
                        "shape": {"type": "array", "items": {"type": "integer"}},
                        "datatype": {"type": "string", "const": "FP64"},
                        "data": {"type": "array", "items": {"type": "number"}},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                        },
                    },
                },
            },
        },
    },
}


def _paths() -> dict[str, Any]:
    """Every route, as ``routes.ROUTES`` has them: the pages, the old contract, the
    function's own documents, and KServe V2."""
    return {**_pages(), "/predict": _predict_op(), **_own_documents(), **_v2_paths()}


def _pages() -> dict[str, Any]:
    """What a person or a dashboard reads: the landing page, the chart, the forecast and
    the live accuracy."""
    return {
        "/": {
            "get": {
                "summary": "Landing page: the serving model, its backtest, forecast and examples",
                "responses": {
                    "200": {"description": "HTML page", "content": {"text/html": {}}},
                    "503": NOT_READY,
                },
            }
        },
        "/backtest.png": {
            "get": {
                "summary": "The backtest chart of the serving model",
                "responses": {
                    "200": {
                        "description": "PNG image",
                        "content": {"image/png": {}},
                        "headers": MODEL_HEADERS,
                    },
                    "304": {"description": "Not modified since the ETag sent"},
                    "404": _error("The serving model has no chart"),
                    "503": NOT_READY,
                },
            }
        },
        "/forecast": _forecast_op(),
        "/accuracy": {
            "get": {
                "summary": "Live accuracy: every served forecast against the price that "
                "arrived, figures per horizon beside the naive forecast, and the drift state",
                "responses": {
                    "200": _json("The forecast ledger", _ref("Accuracy")),
                    "503": _error(
                        "The ledger cannot be read (the bucket is unreachable, or the object "
                        "does not match the contract until a training run writes it again)"
                    ),
                },
            }
        },
    }


def _forecast_op() -> dict[str, Any]:
    """``GET /forecast``: next month, or with ``months`` the path's first months."""
    return {
        "get": {
            "summary": "Next month's forecast (the forecast path's first month), or with "
            "months=N the next N months of the forecast path",
            "parameters": [
                {
                    "name": "months",
                    "in": "query",
                    "required": False,
                    "description": "how many months of the path, 1 to the horizon it was "
                    "trained for (MILKPRICE_HORIZON, 12 by default); without it, next "
                    "month's forecast alone, as before (the same month and figures as "
                    "months=1)",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 12},
                }
            ],
            "responses": {
                "200": _json(
                    "Next month's forecast, or the path with months",
                    {"oneOf": [_ref("Forecast"), _ref("ForecastPath")]},
                    headers=MODEL_HEADERS,
                ),
                "400": _error("months is not a whole number from 1 to the path's horizon"),
                "409": _error("The serving model predates the forecast path"),
                "503": NOT_READY,
            },
        }
    }


def _predict_op() -> dict[str, Any]:
    """``POST /predict``, the old clients' contract."""
    bad_request = _error("Malformed JSON, or a row, field or tensor that cannot be scored")
    too_large = _error("The body is above the byte limit, or holds too many rows")
    media = _error("The Content-Type is not JSON")
    stalled = _error("The body stopped arriving before its declared length")
    return {
        "post": {
            "summary": "Prices of feature rows (the old contract)",
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _ref("PredictRequest")}},
            },
            "responses": {
                "200": _json(
                    "One price per row, in order",
                    _ref("PredictResponse"),
                    headers={
                        **MODEL_HEADERS,
                        "X-Model": {
                            "description": "which models scored the rows",
                            "schema": {
                                "type": "string",
                                "enum": ["forecast", "legacy", "forecast,legacy"],
                            },
                        },
                    },
                ),
                "400": bad_request,
                "408": stalled,
                "413": too_large,
                "415": media,
                "503": NOT_READY,
            },
        }
    }


def _own_documents() -> dict[str, Any]:
    """This document, the metrics, and V2's server metadata and health."""
    return {
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json("OpenAPI 3.1 document", {"type": "object"})},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics: requests by route, method and status, latency "
                "by route, rows scored, the served version, reloads, pointer checks, storage "
                "errors and versions loaded (a scrape is not itself counted)",
                "responses": {
                    "200": {
                        "description": "Prometheus' text format (OpenMetrics when the Accept "
                        "header asks for it)",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    }
                },
            }
        },
        "/v2": {
            "get": {
                "summary": "KServe V2 server metadata",
                "responses": {"200": _json("Server metadata", _ref("ServerMetadata"))},
            }
        },
        "/v2/health/live": {
            "get": {
                "summary": "KServe V2 liveness: always 200 while the process runs",
                "responses": {"200": _json("Live", _ref("Live"))},
            }
        },
        "/v2/health/ready": {
            "get": {
                "summary": "KServe V2 readiness: 200 once a model is loaded",
                "responses": {"200": _json("Ready", _ref("Ready")), "503": NOT_READY},
            }
        },
    }


def _v2_paths() -> dict[str, Any]:
    """KServe V2's model routes, by name and by name and version, and its repository."""
    unknown_model = _error("No model of that name")
    unknown_version = _error("No model of that name, or no such version in the bucket")
    return {
        "/v2/models/{name}": _metadata_op([NAME], unknown_model),
        "/v2/models/{name}/ready": _ready_op([NAME], unknown_model),
        "/v2/models/{name}/infer": _infer_op([NAME], unknown_model),
        "/v2/models/{name}/versions/{version}": _metadata_op([NAME, VERSION], unknown_version),
        "/v2/models/{name}/versions/{version}/ready": _ready_op([NAME, VERSION], unknown_version),
        "/v2/models/{name}/versions/{version}/infer": _infer_op([NAME, VERSION], unknown_version),
        "/v2/repository/index": _index_op(),
        "/v2/repository/models/{name}/load": _control_op("load"),
        "/v2/repository/models/{name}/unload": _control_op("unload"),
    }


def _metadata_op(parameters: list[dict[str, Any]], not_found: dict[str, Any]) -> dict[str, Any]:
    version = " of that version" if len(parameters) > 1 else ""
    return {
        "get": {
            "summary": f"KServe V2 model metadata{version}, with the input's feature names",
            "parameters": parameters,
            "responses": {
                "200": _json("Model metadata", _ref("ModelMetadata")),
                "404": not_found,
                "503": NOT_READY,
            },
        }
    }


def _ready_op(parameters: list[dict[str, Any]], not_found: dict[str, Any]) -> dict[str, Any]:
    version = " of that version, loaded first" if len(parameters) > 1 else ""
    return {
        "get": {
            "summary": f"KServe V2 model readiness{version}",
            "parameters": parameters,
            "responses": {
                "200": _json("Ready", _ref("Ready")),
                "404": not_found,
                "503": NOT_READY,
            },
        }
    }


def _infer_op(parameters: list[dict[str, Any]], not_found: dict[str, Any]) -> dict[str, Any]:
    version = " by that version (loaded on first use)" if len(parameters) > 1 else ""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "post": {
            "summary": f"KServe V2 inference{version}: one tensor [N, F] in, prices [N, 1] out",
            "description": (
                "The binary tensor data extension: the input's values may follow the JSON as "
                "raw little-endian bytes (Inference-Header-Content-Length gives the JSON's "
                "length), and the output comes back the same way when asked for with "
                "outputs[].parameters.binary_data or parameters.binary_data_output."
            ),
            "parameters": [*parameters, BINARY_REQUEST],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _ref("InferRequest")}, OCTETS: binary},
            },
            "responses": {
                "200": {
                    "description": "Prices: JSON, or JSON then the output's bytes",
                    "content": {JSON: {"schema": _ref("InferResponse")}, OCTETS: {}},
                    "headers": {**MODEL_HEADERS, **BINARY_ANSWER},
                },
                "400": _error(
                    "Malformed JSON, a tensor that cannot be scored, or binary data whose "
                    "length does not match its header, its shape or its type"
                ),
                "404": not_found,
                "408": _error("The body stopped arriving before its declared length"),
                "413": _error("The body is above the byte limit, or holds too many rows"),
                "415": _error("The Content-Type is neither JSON nor application/octet-stream"),
                "503": NOT_READY,
            },
        }
    }


def _index_op() -> dict[str, Any]:
    ready = {"type": "object", "properties": {"ready": {"type": "boolean"}}}
    return {
        "post": {
            "summary": "KServe V2 repository index: every model and version, with its state",
            "description": (
                "READY: the served version, and any other loaded by a request that named it; "
                "UNAVAILABLE, with a reason, for the others. An empty body lists all of them; "
                '{"ready": true} only the ready ones.'
            ),
            "requestBody": {"required": False, "content": {JSON: {"schema": ready}}},
            "responses": {
                "200": _json("Models and versions", _ref("RepositoryIndex")),
                "400": _error("Malformed JSON, or a ready that is not true or false"),
                "408": _error("The body stopped arriving before its declared length"),
                "413": _error("The body is above the byte limit"),
                "415": _error("The Content-Type is not JSON"),
                "503": NOT_READY,
            },
        }
    }


def _control_op(action: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": f"KServe V2 model {action}: refused, this server follows the pointer",
            "description": (
                "The served version is the one models/current.json names; any other is loaded "
                "when a request names it. To serve another version, move the pointer: "
                "milkprice rollback VERSION."
            ),
            "parameters": [NAME],
            "responses": {
                "403": _error(f"{action.capitalize()} is not offered"),
                "404": _error("No model of that name"),
            },
        }
    }


@functools.cache
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Milk price forecast, Chile",
            "version": __version__,
            "description": (
                "Forecasts of the monthly producer price of milk in Chile (CLP per litre). "
                "Every error answers JSON {error, details}. Any path or method not listed "
                "answers 404 or 405 (with an Allow header); a body above the size limit "
                "answers 413 on any path, before it is read."
            ),
        },
        "paths": _paths(),
        "components": {"schemas": SCHEMAS},
    }


def document(server_url: str | None = None) -> dict[str, Any]:
    """The document; with ``server_url``, it names that server."""
    doc = copy.deepcopy(_document())
    if server_url:
        doc["servers"] = [{"url": server_url.rstrip("/")}]
    return doc
