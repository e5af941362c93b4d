"""The Function URL's stand-in: the event it makes of a request (payload format 2.0, as AWS
documents it), and the HTTP response it makes of a function's answer."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

from milkprice import http_client as http
from milkprice import lambda_http
from milkprice.local import lambda_front


def environ(
    method: str = "GET", uri: str = "/forecast", body: bytes = b"", **headers: str
) -> dict[str, Any]:
    """A WSGI environ as gunicorn builds it (repeated headers already joined with commas)."""
    path, _, query = uri.partition("?")
    found: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "RAW_URI": uri,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_PORT": "8080",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "HTTP_HOST": "127.0.0.1:8080",
    }
    found.update(headers)  # HTTP_*, CONTENT_TYPE, CONTENT_LENGTH
    return found


def test_a_request_becomes_a_function_url_event() -> None:
    env = environ(
        "GET",
        "/forecast?months=3&months=5&x=%C3%B1",
        HTTP_X_FORWARDED_PREFIX="/a,/b",
        HTTP_COOKIE="a=1; b=2",
        HTTP_USER_AGENT="curl/8",
    )
    event = lambda_front.function_url_event(env, b"")
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/forecast" and event["rawQueryString"] == env["QUERY_STRING"]
    assert event["queryStringParameters"] == {"months": "3,5", "x": "ñ"}
    assert event["headers"]["x-forwarded-prefix"] == "/a,/b"  # as one value, commas between
    assert "cookie" not in event["headers"] and event["cookies"] == ["a=1", "b=2"]
    assert event["headers"]["x-forwarded-proto"] == "http"
    assert event["headers"]["x-forwarded-for"] == "127.0.0.1"
    http_ = event["requestContext"]["http"]
    assert http_ == {
        "method": "GET",
        "path": "/forecast",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "curl/8",
    }
    assert lambda_http.is_http(event) and "body" not in event and not event["isBase64Encoded"]


def test_a_text_body_is_sent_as_it_is_and_any_other_in_base64() -> None:
    text = lambda_front.function_url_event(
        environ("POST", "/predict", CONTENT_TYPE="application/json; charset=utf-8"), b'{"a": 1}'
    )
    assert text["body"] == '{"a": 1}' and text["isBase64Encoded"] is False
    tensor = b"\x00\x01\xff" * 10
    binary = lambda_front.function_url_event(
        environ("POST", "/v2/models/forecast/infer", CONTENT_TYPE="application/octet-stream"),
        tensor,
    )
    assert binary["isBase64Encoded"] is True and base64.b64decode(binary["body"]) == tensor
    untyped = lambda_front.function_url_event(environ("POST", "/predict"), b"{}")
    assert untyped["isBase64Encoded"] is True  # no type: not known to be text
    mislabelled = lambda_front.function_url_event(
        environ("POST", "/predict", CONTENT_TYPE="text/plain"), b"\xff\xfe"
    )
    assert base64.b64decode(mislabelled["body"]) == b"\xff\xfe"


def answer(doc: Any, status: int = 200) -> http.Answer:
    return http.Answer(status, json.dumps(doc).encode() if doc is not None else b"")


def test_a_function_s_answer_becomes_the_response() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    status, headers, body = lambda_front.response_of(
        answer(
            {
                "statusCode": 200,
                "headers": {"content-type": "image/png", "etag": '"x"'},
                "cookies": ["a=1; Path=/", "b=2"],
                "body": base64.b64encode(png).decode(),
                "isBase64Encoded": True,
            }
        )
    )
    assert status == 200 and body == png
    assert ("content-type", "image/png") in headers and ("etag", '"x"') in headers
    assert [v for k, v in headers if k == "Set-Cookie"] == ["a=1; Path=/", "b=2"]
    # an answer without statusCode: 200, JSON, the answer itself as the body
    assert lambda_front.response_of(answer("hello")) == (
        200,
        [("Content-Type", "application/json")],
        b'"hello"',
    )


def test_a_failed_invocation_is_a_502() -> None:
    report = {"errorMessage": "boom", "errorType": "ValueError", "stackTrace": []}
    timed_out = http.Answer(200, b"Task timed out after 30.00 seconds")
    too_large = http.Answer(200, b'"' + b"x" * lambda_front.MAX_PAYLOAD + b'"')
    for failed in (answer(report), timed_out, http.Answer(0, error="refused"), too_large):
        status, _, body = lambda_front.response_of(failed)
        assert status == 502 and json.loads(body) == {"Message": "Internal Server Error"}
