"""The ceiling of the Lambda cases: a bare handler under the same emulator.

It ignores the event and answers a constant list in a Function URL's answer, so what it
measures is the emulator and the runtime interface client alone: no handler under them can
be faster.
"""

from __future__ import annotations

from typing import Any

ANSWER = {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": "[0.0]"}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return ANSWER
