"""Predict function: every request goes to ``milkprice.predict.routes.dispatch``.

Thin on purpose, and light: no pandas or scikit-learn is imported, directly or through milkprice.
"""

from __future__ import annotations

import flask
import functions_framework

from milkprice.predict import routes


@functions_framework.errorhandler(404)
def _unrouted(_: Exception) -> flask.Response:
    """Paths functions-framework's own rule does not match (a newline in them) get JSON too."""
    return routes.unrouted(flask.request)


@functions_framework.http
def predict(request: flask.Request) -> flask.Response:
    return routes.dispatch(request)
