"""AWS Lambda entry point of the predict function (a zip package's handler,
``lambda_function.handler``): a Function URL's or an HTTP API's request, served by the same
Flask app as the HTTP function in ``main.py`` beside this file, every route as it answers
there (``milkprice.lambda_http``)."""

from __future__ import annotations

from pathlib import Path

from milkprice import lambda_http

handler = lambda_http.handler(Path(__file__).with_name("main.py"), "predict")
