"""The ceiling of the serving benchmark: a bare Functions Framework function.

It ignores the request and answers a constant list, so what it measures is the framework
alone (gunicorn, Flask, JSON): no function built on the same server can be faster.
"""

from __future__ import annotations

import flask
import functions_framework

ANSWER = [0.0]


@functions_framework.http
def ceiling(request: flask.Request) -> list[float]:
    return ANSWER
