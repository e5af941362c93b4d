"""AWS Lambda's HTTP events to a function's own WSGI app, and its answer back.

A Function URL and an API Gateway HTTP API (payload format 2.0) hand Lambda the request as an
event and take the answer as ``{"statusCode", "headers", "cookies", "body",
"isBase64Encoded"}``. apig-wsgi does that translation, binary bodies base64-encoded both ways
(an answer is binary unless its type is text or JSON: the PNG chart and V2's binary tensors
are). The app is the one the Functions Framework serves, built by ``create_app`` from the
function's ``main.py``, so every route, status and header is that function's own; it is built
on the first event, not at import.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from milkprice.errors import BadRequest

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]

HTTP_EVENTS = (
    "an HTTP event: a Function URL's or an API Gateway HTTP API's (payload format 2.0, "
    'with requestContext.http), or a REST API\'s ("httpMethod")'
)


def is_http(event: Any) -> bool:
    """Whether ``event`` is a request from a Function URL or API Gateway (either payload
    format), or an Application Load Balancer."""
    if not isinstance(event, dict):
        return False
    context = event.get("requestContext")
    return "httpMethod" in event or (
        isinstance(context, dict) and ("http" in context or "elb" in context)
    )


@functools.cache
def _handler(source: str, target: str) -> Handler:
    import apig_wsgi
    import functions_framework

    app = functions_framework.create_app(target=target, source=source)
    return apig_wsgi.make_lambda_handler(app, binary_support=True)  # type: ignore[no-any-return]


def handler(source: str | os.PathLike[str], target: str) -> Handler:
    """A Lambda handler serving HTTP events with the function ``target`` of ``source`` (its
    ``main.py``); any other event is refused with a message that names the shape taken."""
    path = os.fspath(source)

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        if not is_http(event):
            raise BadRequest(f"the {target} function takes {HTTP_EVENTS}")
        return _handler(path, target)(event, context)

    return handle
