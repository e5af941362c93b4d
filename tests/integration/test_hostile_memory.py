"""Hostile bodies cost a predict worker a small multiple of their size, not hundreds of times it.

Each body is under the 10 MB byte limit, and each is refused. What is measured is the peak
resident memory (VmHWM in /proc) of the worker that answers it: a fresh gunicorn worker per
body, warmed up by one good request, its peak reset then, so each figure is that body's alone.
The deployments have 1 GiB or less, and a worker serves 8 requests at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from milkprice.settings import Settings
from tests.support.raw_http import request
from tests.support.rows import served_row
from tests.support.servers import Function, env_for, fresh_worker, peak_mb

PEAK_MB = 300  # a worker's whole peak: about 100 MB at rest, the model loaded
PREDICT = "/predict"
INFER = "/v2/models/forecast/infer"


@dataclass
class Server:
    function: Function
    width: int  # the forecast model's features
    good: bytes  # a /predict body it scores


@pytest.fixture(scope="module")
def server(
    gcs: str,
    trained_sample: tuple[Settings, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    bucket, _ = trained_sample
    function = Function("predict", "predict", env_for(bucket, gcs, tmp_path_factory.mktemp("m")))
    try:
        features, row = served_row(bucket)
        yield Server(function, len(features), json.dumps({"data": [row]}).encode())
    finally:
        function.stop()


def rows(row: bytes, count: int) -> bytes:
    return b'{"data":[' + b",".join([row] * count) + b"]}"


def tensor(width: int, data: bytes, rest: bytes = b"") -> bytes:
    head = b'{"inputs":[{"name":"x","shape":[1,%d],"datatype":"FP64","data":' % width
    return head + data + b"}]" + rest + b"}"


def array(item: bytes, count: int) -> bytes:
    return b"[" + b",".join([item] * count) + b"]"


# name: (path, the body for a model of that many features, status, words the error holds)
HOSTILE: dict[str, tuple[str, Callable[[int], bytes], int, str]] = {
    "a million empty rows": (
        PREDICT,
        lambda _: rows(b"{}", 1_000_000),
        413,
        "at most 100000 rows",
    ),
    "3.3 million empty rows, just under the byte limit": (
        PREDICT,
        lambda _: rows(b"{}", 3_300_000),
        413,
        "at most 100000 rows",
    ),
    "1.2 million rows of one key": (
        PREDICT,
        lambda _: rows(b'{"a":1}', 1_200_000),
        413,
        "at most 100000 rows",
    ),
    "a value nested 100000 deep": (
        PREDICT,
        lambda _: b'{"data":[{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}]}",
        400,
        "nests too deeply",
    ),
    "a value of 3.3 million empty arrays": (
        PREDICT,
        lambda _: b'{"data":[{"x":' + array(b"[]", 3_300_000) + b"}]}",
        400,
        "row 0 has neither every feature",
    ),
    "one row of 780000 keys": (
        PREDICT,
        lambda _: b'{"data":[{' + b",".join(b'"k%d":0' % i for i in range(780_000)) + b"}]}",
        400,
        "row 0 has neither every feature",
    ),
    "V2 data of 3.3 million empty arrays": (
        INFER,
        lambda width: tensor(width, array(b"[]", 3_300_000)),
        400,
        "holds 3300000 arrays",
    ),
    "V2 data of 3.3 million objects": (
        INFER,
        lambda width: tensor(width, array(b"{}", 3_300_000)),
        400,
        "is not a number",
    ),
    "V2 data of 2.4 million numbers": (
        INFER,
        lambda width: tensor(width, array(b"1e5", 2_400_000)),
        400,
        "holds 2400000 values",
    ),
    "V2 outputs of 3.3 million objects": (
        INFER,
        lambda width: (
            tensor(width, b"[" + b",".join([b"1"] * width) + b"]").removesuffix(b"}")
            + b',"outputs":'
            + array(b"{}", 3_300_000)
            + b"}"
        ),
        400,
        "at most 65536",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_body_costs_a_small_multiple_of_its_size(server: Server, case: str) -> None:
    path, make, status, words = HOSTILE[case]
    body = make(server.width)
    assert len(body) < 10_000_000, len(body)  # under the byte limit: the body is read
    port = server.function.port

    def warm() -> bool:
        return request(port, "POST", PREDICT, server.good, timeout=30).status == 200

    pid = fresh_worker(server.function, warm)
    rest = peak_mb(pid)
    answer = request(port, "POST", path, body, timeout=120)
    peak = peak_mb(pid)
    print(f"{case}: {len(body) / 1e6:.1f} MB body, worker peak {peak:.0f} MB (at rest {rest:.0f})")
    assert answer.status == status, (answer.status, answer.body[:300])
    assert words in answer.doc["error"], answer.doc
    assert peak < PEAK_MB, (case, peak)
