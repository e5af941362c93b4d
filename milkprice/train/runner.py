"""One training run: raw files in the bucket become a backtested, verified, promoted model.

Order matters for what a reader of the bucket can see: the raw objects are archived first,
every artifact is written and read back against its sha256 before the manifest, and the
pointer moves last, by compare-and-swap on the token this run saw at its start, so it never
names a missing or partial model and two runs can never both promote blindly. Whatever
happens, a run record is written: :class:`Recorder` owns that, once.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec

from milkprice import contract, store
from milkprice.contract import Claim, InputObject, Manifest, RunError, RunRecord
from milkprice.errors import Conflict, DataError, MilkPriceError, retryable
from milkprice.settings import Settings
from milkprice.train import artifacts, data, ledger
from milkprice.train import features as F
from milkprice.train.core import Timer, Trained, train

log = logging.getLogger("milkprice.train")

TRIGGERS = ("schedule", "http", "upload")
STALE_CLAIM = timedelta(minutes=30)
LIBRARIES = ("numpy", "pandas", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "skops")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@dataclass
class Inputs:
    blobs: dict[str, store.Blob]

    @property
    def tokens(self) -> dict[str, str]:
        return {name: blob.token for name, blob in self.blobs.items()}

    @property
    def key(self) -> str:
        """Identifies the set of raw object versions: the same set never trains twice by event."""
        text = ",".join(f"{n}@{t}" for n, t in sorted(self.tokens.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def read_inputs(settings: Settings) -> Inputs:
    """The three raw files, each checked against the size limit before it is downloaded."""
    blobs = {}
    for name in data.RAW_FILES:
        path = store.RAW_PREFIX + name
        found = store.metadata(settings, path)
        if found is None:
            raise DataError(name, f"not found at {settings.bucket}/{path}")
        _check_size(settings, name, found.size)
        blob = store.read(settings, path)
        if blob is None:
            raise DataError(name, f"{settings.bucket}/{path} was deleted while being read")
        _check_size(settings, name, len(blob.data))  # replaced by a larger one meanwhile
        blobs[name] = blob
    return Inputs(blobs)


def _check_size(settings: Settings, name: str, size: int) -> None:
    if size > settings.max_raw_bytes:
        raise DataError(
            name,
            f"is {size / 1e6:.1f} MB, more than the {settings.max_raw_bytes / 1e6:.1f} MB "
            "a raw file may have (MILKPRICE_MAX_RAW_BYTES)",
        )


# ---------------------------------------------------------------- the run record


class Recorder:
    """Owns one run record: progress while the run goes, its outcome however it ends."""

    def __init__(self, settings: Settings, trigger: str, event: dict[str, Any] | None) -> None:
        self.settings = settings
        self.record = RunRecord(new_run_id(), trigger, contract.now(), event=event)
        self.timer = Timer(self.progress)
        self.started = time.perf_counter()
        self.seen: str | None = None  # the pointer's token when the run began

    def progress(self, stage: str) -> None:
        self.record.stage = stage
        if self.record.inputs:  # i.e. once the run is past its skip check
            with contextlib.suppress(MilkPriceError):
                contract.write_run(self.settings, self.record)

    def finish(self, outcome: contract.Outcome, reason: str) -> None:
        self.record.outcome, self.record.reason = outcome, reason

    @contextlib.contextmanager
    def running(self) -> Iterator[RunRecord]:
        """Yields the record; any error becomes a failed outcome that says whether a retry
        can help; the record is always logged and, unless skipped, written."""
        r = self.record
        extra = {"run_id": r.run_id}
        log.info("run %s started (%s)", r.run_id, r.trigger, extra={**extra, "trigger": r.trigger})
        try:
            yield r
        except MilkPriceError as exc:
            self._failed(exc, exc.message, exc.to_dict())
            level = logging.WARNING if isinstance(exc, DataError) else logging.ERROR
            log.log(level, "run %s failed: %s", r.run_id, exc.message, extra=extra)
        except Exception as exc:  # a bug must still leave a record; the caller sees a 500
            message = f"internal error: {type(exc).__name__}: {exc}"
            self._failed(exc, message, {"error": message})
            log.exception("run %s failed", r.run_id, extra=extra)
        finally:
            self._close()

    def _failed(self, exc: Exception, message: str, body: dict[str, Any]) -> None:
        self.record.outcome, self.record.reason = "failed", message
        self.record.error = RunError(
            error=message,
            details=list(body.get("details", [])),
            data=isinstance(exc, DataError),
            retryable=retryable(exc),
            status=exc.status if isinstance(exc, MilkPriceError) else 500,
        )

    def _close(self) -> None:
        r = self.record
        r.timings = dict(self.timer.seconds)
        r.seconds = round(time.perf_counter() - self.started, 3)
        r.finished = contract.now()
        log.info(
            "run %s %s in %.1f s: %s",
            r.run_id,
            r.outcome,
            r.seconds,
            r.reason,
            extra={"run_id": r.run_id, "trigger": r.trigger, "version": r.version},
        )
        if r.outcome != "skipped":
            r.stage = None
            with contextlib.suppress(MilkPriceError):
                contract.write_run(self.settings, r)


# ---------------------------------------------------------------- the bucket steps


def _claim(settings: Settings, inputs: Inputs, run_id: str) -> RunRecord | None:
    """Claim the input set for an event-triggered run; the earlier run's record if taken."""
    name = contract.claim_path(inputs.key)
    mine = contract.encode(Claim(run_id, contract.now(), dict(inputs.tokens)))
    try:
        store.create(settings, name, mine, "application/json")
        return None
    except Conflict:
        pass
    blob = store.read(settings, name)
    if blob is None:
        return None
    claim = contract.decode(blob.data, Claim, name)
    earlier = contract.read_run(settings, claim.run_id)
    record = earlier or RunRecord(claim.run_id, "upload", claim.started)
    started = datetime.fromisoformat(claim.started.replace("Z", "+00:00"))
    stale = record.outcome == "running" and datetime.now(UTC) - started > STALE_CLAIM
    worth = record.outcome == "failed" and record.error is not None and record.error.retryable
    if not (worth or stale):
        return record
    try:
        store.swap(settings, name, mine, "application/json", blob.token)
    except Conflict:
        return record
    return None


def _archive(settings: Settings, inputs: Inputs, record: RunRecord) -> None:
    """A copy of every raw object trained on, keyed by its token; stores need no versioning."""
    for name, blob in inputs.blobs.items():
        path = store.RAW_PREFIX + name
        target = store.archive_path(path, blob.token)
        store.copy(settings, path, blob.token, target)
        record.inputs[path] = msgspec.structs.replace(record.inputs[path], archive=target)


def _write_artifacts(settings: Settings, version: str, files: dict[str, bytes]) -> dict[str, str]:
    """Write and read back every file; return their sha256 once all are verified."""
    digests = {}
    for name, payload in files.items():
        kind = {"png": "image/png", "csv": "text/csv"}.get(name.rsplit(".", 1)[-1])
        store.write(
            settings, store.model_path(version, name), payload, kind or "application/octet-stream"
        )
        digests[name] = artifacts.sha256(payload)
    for name, digest in digests.items():
        back = store.read(settings, store.model_path(version, name))
        if back is None or artifacts.sha256(back.data) != digest:
            raise MilkPriceError(f"artifact {name} of {version} did not read back intact")
    return digests


def _library_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in LIBRARIES}


def manifest_of(
    trained: Trained, version: str, record: RunRecord, digests: dict[str, str]
) -> Manifest:
    """The typed manifest of a training's output: where the training side's figures meet the
    contract, and are checked against it, once."""
    models = {}
    for role, entry in trained.served.items():
        sha = {entry["onnx"]: digests[entry["onnx"]], entry["skops"]: digests[entry["skops"]]}
        models[role] = {**entry, "sha256": sha}
    doc = {
        "version": version,
        "created": contract.now(),
        "run_id": record.run_id,
        "target": F.TARGET,
        "unit": "CLP per litre",
        "models": models,
        "next": trained.next_row,
        "backtest": {
            "months": trained.backtest_months,
            "long_months": trained.long_months,
            "method": "rolling origin, expanding window, one step ahead, refit each month",
            "table": "backtest.csv",
            "chart": "backtest.png",
        },
        "candidates": trained.candidates,
        "inputs": msgspec.to_builtins(record.inputs),
        "cleaning": trained.cleaning,
        "libraries": _library_versions(),
        "files": digests,
        **({"path": trained.path} if trained.path else {}),
    }
    return msgspec.convert(doc, Manifest)


def _train_and_write(settings: Settings, rec: Recorder, inputs: Inputs, today: date) -> None:
    record = rec.record
    trained = train({n: b.data for n, b in inputs.blobs.items()}, settings, rec.timer, today)
    record.cleaning = trained.cleaning
    version = record.run_id
    with rec.timer("write"):
        digests = _write_artifacts(settings, version, trained.files)
        manifest = manifest_of(trained, version, record, digests)
        contract.write_manifest(settings, manifest)
    record.version = version
    record.models = {
        role: contract.RunModel(m.candidate, m.backtest.rmse, m.backtest.mae, m.backtest.mape)
        for role, m in manifest.models.items()
    }
    record.naive = manifest.models["forecast"].naive
    if not trained.promote:
        rec.finish("not_promoted", trained.reason)
        return
    with rec.timer("promote"):
        other = contract.promote(settings, version, record.run_id, rec.seen)
    if other is None:
        rec.finish("promoted", trained.reason)
    else:
        rec.finish("not_promoted", f"another run promoted version {other} while this one trained")


def run(
    settings: Settings,
    trigger: str,
    event: dict[str, Any] | None = None,
    today: date | None = None,
) -> RunRecord:
    """Train once and return the run record (also written to ``runs/<run-id>.json``)."""
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r}")
    rec = Recorder(settings, trigger, event)
    with rec.running() as record:
        with rec.timer("read"):
            pointer = contract.read_pointer(settings)
            rec.seen = pointer[1] if pointer else None
            inputs = read_inputs(settings)
        record.inputs = {
            store.RAW_PREFIX + n: InputObject(sha256=artifacts.sha256(b.data), token=b.token)
            for n, b in inputs.blobs.items()
        }
        earlier = _claim(settings, inputs, record.run_id) if trigger == "upload" else None
        if earlier is not None:
            rec.finish("skipped", f"run {earlier.run_id} already took these raw generations")
            record.earlier = contract.to_builtins(earlier)
            return record
        with rec.timer("archive"):
            _archive(settings, inputs, record)
        ledger.step(settings, inputs.blobs[data.MILK], record, rec.timer, today or date.today())
        _train_and_write(settings, rec, inputs, today or date.today())
    return record


def rollback(settings: Settings, version: str) -> contract.Pointer:
    """Point serving at an earlier version whose manifest exists."""
    return contract.rollback(settings, version)
