"""Each cloud's object store, locally: start its emulator on a free port and reach it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from milkprice import store
from milkprice.local import object_stores, processes
from milkprice.local.object_stores import moto_server

CLOUDS = ("gcp", "aws", "azure")


def start(cloud: str, tmp: Path) -> tuple[processes.Process, dict[str, str]]:
    """The cloud's emulator on a free port, its data under ``tmp``, and the variables its
    SDK needs to reach it. Azurite needs Node.js and npm: skipped, saying so, without them."""
    if cloud == "azure":
        missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
        if missing:
            pytest.skip(f"Azurite needs Node.js and npm; {', '.join(missing)} not installed here")
    return object_stores.start_free(cloud, tmp)


def use(cloud: str, env: dict[str, str]) -> None:
    """Point this process's store at ``cloud`` through ``env``, its clients built afresh."""
    os.environ.update(env)
    os.environ["MILKPRICE_CLOUD"] = cloud
    store.reset()


def s3_client(port: int) -> Any:
    """A boto3 S3 client of the moto server on ``port``, as a user's own script would make."""
    import boto3

    env = moto_server.env(port)
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
