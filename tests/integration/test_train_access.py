"""The train function as deployed (functions-framework over gunicorn, in its own process)
says on its first request when it is open to anyone who can reach it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from milkprice.settings import Settings
from tests.support.servers import Function, call, env_for


def _warnings(log: Path) -> list[dict[str, Any]]:
    """The log's JSON lines about the train token, at warning level."""
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    return [
        x
        for x in lines
        if x.get("severity") == "WARNING" and "MILKPRICE_TRAIN_TOKEN" in x.get("message", "")
    ]


def test_an_open_train_function_says_so_once_before_its_first_request(
    settings: Settings, gcs: str, tmp_path: Path
) -> None:
    # two workers: the warning is the process's, not each worker's
    env = env_for(settings, gcs, tmp_path, WORKERS="2")
    train = Function("train_service", "train", env)
    try:
        [warning] = _warnings(train.log)  # there once the health probe was first answered
        message = warning["message"]
        assert warning["component"] == "train"
        for words in ("open", "MILKPRICE_TRAIN_TOKEN", "authenticates", "Authorization: Bearer"):
            assert words in message, (words, message)
        for _ in range(4):
            assert call(train.url, method="GET")[0] == 200
        assert call(train.url + "events", {"Event": "s3:TestEvent"})[0] == 200  # ignored
    finally:
        train.stop()
    assert len(_warnings(train.log)) == 1


def test_a_train_function_with_a_token_says_nothing_of_the_kind(
    settings: Settings, gcs: str, tmp_path: Path
) -> None:
    env = env_for(settings, gcs, tmp_path, MILKPRICE_TRAIN_TOKEN="s3cret")
    train = Function("train_service", "train", env)
    try:
        assert call(train.url + "events", {"trigger": "schedule"})[0] == 401
    finally:
        train.stop()
    assert _warnings(train.log) == []
