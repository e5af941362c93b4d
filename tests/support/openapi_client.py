"""The predict function in-process, every answer checked against its OpenAPI document.

``Client`` wraps the test client of the app functions-framework builds from
functions/predict/main.py; each answer must have a documented status, the documented headers
and a body valid under the documented schema (``conform``).
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import functions_framework
import jsonschema
import orjson

from milkprice.predict import openapi
from tests.support.paths import PREDICT_MAIN

SOURCE = str(PREDICT_MAIN)
SPEC = openapi.document()
TEMPLATES = [
    (re.compile("^" + re.sub(r"{\w+}", "[^/]+", path) + "$"), path) for path in SPEC["paths"]
]
JSON = "application/json"
INFER = "/v2/models/forecast/infer"


def _validate(doc: Any, schema: dict[str, Any]) -> None:
    root = {**schema, "components": SPEC["components"]}
    jsonschema.Draft202012Validator(root).validate(doc)


def template_of(path: str) -> str | None:
    """The document's path template a request path falls under, if any."""
    path = path.split("?", 1)[0].rstrip("/") or "/"
    for pattern, template in TEMPLATES:
        if pattern.match(path):
            return template
    return None


def conform(method: str, path: str, response: Any) -> tuple[str | None, str, int]:
    """Check one answer against the OpenAPI document; never a 5xx but a documented 503."""
    status = response.status_code
    template = template_of(path)
    op = SPEC["paths"].get(template, {}).get("get" if method == "HEAD" else method.lower())
    if op is None:  # a path or method the document does not list
        assert status in (404, 405, 413), (method, path, status, response.data[:300])
        assert response.mimetype == "application/json"
        if method != "HEAD":
            _validate(orjson.loads(response.data), {"$ref": "#/components/schemas/Error"})
        if status == 405:
            assert response.headers["Allow"]
        return template, method, status
    assert str(status) in op["responses"], (method, path, status, response.data[:300])
    documented = op["responses"][str(status)]
    for header, spec in documented.get("headers", {}).items():
        if spec.get("required", True):  # those the document says are not always there
            assert response.headers.get(header), (method, path, status, header)
    content = documented.get("content")
    if content is None:
        assert response.data == b""
    else:
        assert response.mimetype in content, (method, path, status, response.mimetype)
        schema = content[response.mimetype].get("schema")
        if schema and method != "HEAD" and response.mimetype.endswith("json"):
            _validate(orjson.loads(response.data), schema)
    return template, method, status


class Client:
    """The function's test client; every answer is checked against the OpenAPI document."""

    def __init__(self) -> None:
        self.app = functions_framework.create_app("predict", SOURCE, "http")
        self.inner = self.app.test_client()
        self.seen: set[tuple[str | None, str, int]] = set()

    def open(self, path: str, method: str = "GET", **kwargs: Any) -> Any:
        response = self.inner.open(path, method=method, **kwargs)
        self.seen.add(conform(method, path, response))
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.open(path, "GET", **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.open(path, "POST", **kwargs)

    def main_module_globals(self) -> dict[str, Any]:
        """The globals of the functions/predict/main.py module this client's app loaded."""
        view = self.app.view_functions["run"]
        return inspect.unwrap(view).__globals__  # the module create_app loaded
