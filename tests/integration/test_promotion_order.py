"""Which model serves is decided by its inputs, not by which run finishes first, on each
cloud's object store.

Three uploads of the milk price file, each a little over a second after the last (S3's and
Azure's upload times are to the second), each delivered to a train function process of its
own, which is frozen (SIGSTOP) once its run has read, claimed and archived its inputs. Then they are
let go in the worst order: the middle run first (it promotes), the newest next (the pointer
moved under it, to older data: it tries again and promotes), the oldest last (newer data
serves: not promoted, and it says which file is newer).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from milkprice import contract, store
from milkprice import http_client as http
from milkprice.local import processes
from milkprice.settings import LocalSettings
from tests.support import clouds, deliveries
from tests.support.buckets import new_settings, upload
from tests.support.servers import Function, env_for

pytestmark = pytest.mark.slow

PRICE = store.RAW_PREFIX + "precio_leche.csv"
FIRST_ROW = b"1979,Ene,3.80"


def _variant(milk: bytes, n: int) -> bytes:
    """The milk price file with its first price changed a little: a valid new version."""
    assert FIRST_ROW in milk
    return milk.replace(FIRST_ROW, f"1979,Ene,3.8{n}".encode(), 1)


# Cloud Storage in make test; S3 and Azure in make test-long (each store's conditional writes,
# which the order rests on, are checked on all three in make test: tests/function/test_backends)
@pytest.mark.parametrize(
    "cloud", [c if c == "gcp" else pytest.param(c, marks=pytest.mark.long) for c in clouds.CLOUDS]
)
def test_the_newest_inputs_serve_whichever_run_finishes_first(
    cloud: str, tmp_path: Path, sample_raw: dict[str, bytes]
) -> None:
    proc, env = clouds.start(cloud, tmp_path / "store")
    trainers: list[Function] = []
    try:
        clouds.use(cloud, env)
        # a short backtest (still a whole training): three run one after the other per cloud
        settings = new_settings(cloud=cloud, backtest_months=2)
        upload(settings, sample_raw)
        extra = {"MILKPRICE_CLOUD": cloud, **env}
        trainers += [
            Function("train_events", "train", env_for(settings, "", tmp_path / "fn", **extra))
            for _ in range(3)
        ]
        oldest, middle, newest = (
            _frozen_run(settings, trainer, sample_raw, n)
            for n, trainer in enumerate(trainers, start=1)
        )
        middle.let_go()
        assert middle.answer["outcome"] == "promoted", middle.answer
        newest.let_go()
        assert newest.answer["outcome"] == "promoted", newest.answer
        won = middle.answer["version"]
        assert f"after losing the race to version {won}" in newest.answer["reason"]
        oldest.let_go()
        assert oldest.answer["outcome"] == "not_promoted", oldest.answer
        serving = newest.answer["version"]
        assert (
            f"version {serving} serves and was trained on a newer {PRICE}"
            in (oldest.answer["reason"])
        )
        found = contract.read_pointer(settings)
        assert found is not None and found[0].version == serving
        took = {r.answer["run_id"]: r.answer["seconds"] for r in (oldest, middle, newest)}
        print(f"{cloud}: {serving} serves; seconds of each run, oldest first: {took}")
        served = contract.read_manifest(settings, serving).inputs[PRICE]
        assert (served.token, served.uploaded) == (newest.upload.token, newest.upload.uploaded)
    finally:
        for trainer in trainers:
            os.killpg(trainer.proc.pid, signal.SIGCONT)
        processes.stop([t.proc for t in trainers])
        processes.stop([proc])
        store.reset()


@dataclass
class Frozen:
    """A run stopped after reading its inputs, its delivery still waiting."""

    trainer: Function
    upload: store.Meta
    thread: threading.Thread
    answers: list[http.Answer]
    answer: dict[str, Any] = field(default_factory=dict)

    def let_go(self) -> None:
        os.killpg(self.trainer.proc.pid, signal.SIGCONT)
        self.thread.join(timeout=600)
        [found] = self.answers
        assert found.status == 200, (found.status, found.body[-2000:])  # the event is done
        self.answer = found.json()


def _frozen_run(
    settings: LocalSettings, trainer: Function, raw: dict[str, bytes], n: int
) -> Frozen:
    """Upload version ``n`` of the milk prices, deliver its event, freeze its run."""
    time.sleep(1.2)  # the upload times of S3 and Azure are to the second
    store.write(settings, PRICE, _variant(raw["precio_leche.csv"], n), "text/csv")
    meta = store.metadata(settings, PRICE)
    assert meta is not None
    before = set(contract.run_ids(settings))
    thread, answers = deliveries.deliver_in_background(
        trainer.url, deliveries.upload_event(settings, PRICE)
    )
    # frozen once its inputs are read, claimed and archived (without bucket versioning, an
    # older version of a name is gone once replaced: a run frozen before its archive copy
    # would fail to make it)
    deliveries.new_run(settings, before, lambda r: r.stage not in (None, "archive"))
    os.killpg(trainer.proc.pid, signal.SIGSTOP)
    return Frozen(trainer, meta, thread, answers)
