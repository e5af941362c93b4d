"""S3, locally: moto's server, in memory (nothing survives a restart).

Ready when a real API call through boto3 answers, not when its port opens; ``env`` holds the
variables boto3 reads to reach it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from milkprice.local import processes

PORT = 4566


def env(port: int = PORT, host: str = "127.0.0.1") -> dict[str, str]:
    """What boto3 needs to use the local S3: the endpoint, a region and any keys."""
    return {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def ready(port: int = PORT, host: str = "127.0.0.1") -> bool:
    """Whether the local S3 lists its buckets."""
    import boto3
    from botocore.config import Config

    found = env(port, host)
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=found["AWS_ENDPOINT_URL"],
        region_name=found["AWS_DEFAULT_REGION"],
        aws_access_key_id=found["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=found["AWS_SECRET_ACCESS_KEY"],
        config=Config(connect_timeout=0.5, read_timeout=2.0, retries={"max_attempts": 1}),
    )
    try:
        client.list_buckets()
    except Exception:
        return False
    finally:
        client.close()
    return True


def start(
    port: int = PORT,
    host: str = "127.0.0.1",
    log: Path | None = None,
    wait: float = 60.0,
) -> processes.Process:
    """Start moto's server (S3 in memory: nothing survives a restart); return once it answers."""
    args = [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]
    proc = processes.start("moto", args, os.environ, log=log)
    processes.wait_ready(proc, lambda: ready(port, host), wait)
    return proc
