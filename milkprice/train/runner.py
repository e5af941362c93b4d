"""One training run: raw files in the bucket become a backtested, verified, promoted model.

Order matters for what a reader of the bucket can see: the raw objects are archived first,
every artifact is written and read back against its sha256 before the manifest, and the
pointer moves last, by compare-and-swap, so it never names a missing or partial model and two
runs can never both promote blindly. Which of two runs serves is decided by their inputs, not
by who finishes first: a run never replaces a model trained on newer raw versions than its
own, and one on newer inputs that loses the race to the pointer tries again. Whatever
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
from datetime import UTC, date, datetime
from typing import Any

import msgspec

from milkprice import contract, tracing
from milkprice.contract import Claim, InputObject, Manifest, Pointer, RunError, RunRecord
from milkprice.errors import (
    Contended,
    ContractError,
    DataError,
    MilkPriceError,
    NotFound,
    retryable,
)
from milkprice.settings import Settings
from milkprice.train import artifacts, data, ledger
from milkprice.train import features as F
from milkprice.train import metrics as train_metrics
from milkprice.train.core import Timer, Trained, train

log = logging.getLogger("milkprice.train")

TRIGGERS = ("schedule", "http", "upload")
PROMOTE_TRIES = 5  # compare-and-swaps of the pointer a run on newer inputs makes
# The versions the manifest records: those that made the model files and can read them back.
LIBRARIES = ("numpy", "pandas", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "skops")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@dataclass
class Inputs:
    blobs: dict[str, contract.Blob]
    uploaded: dict[str, str]  # name -> when the store took the version read (its clock)

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
    blobs, uploaded = {}, {}
    for name in data.RAW_FILES:
        blobs[name], uploaded[name] = contract.read_raw(settings, name)
    return Inputs(blobs, uploaded)


# ---------------------------------------------------------------- the run record


class Recorder:
    """Owns one run record: progress while the run goes, its outcome however it ends."""

    def __init__(self, settings: Settings, trigger: str, event: dict[str, Any] | None) -> None:
        self.settings = settings
        self.record = RunRecord(new_run_id(), trigger, contract.now(), event=event)
        self.record.trace_id = tracing.trace_id()  # the caller's, continued (None: no trace)
        self.timer = Timer(self.progress)
        self.started = time.perf_counter()
        self.seen: tuple[Pointer, str] | None = None  # the pointer and its token at the start

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
        train_metrics.get().runs.labels(r.trigger, r.outcome).inc()
        if r.outcome != "skipped":
            r.stage = None
            with contextlib.suppress(MilkPriceError):
                contract.write_run(self.settings, r)


# ---------------------------------------------------------------- the bucket steps


def _claim(settings: Settings, inputs: Inputs, rec: Recorder) -> contract.Owned | None:
    """Claim the input set of an event-triggered run; None, the run finished as skipped,
    when another run has it (the record says whether a redelivery should come again)."""
    record = rec.record
    claim = Claim(record.run_id, record.started, dict(inputs.tokens))
    found = contract.take_claim(settings, inputs.key, claim)
    if isinstance(found, contract.Owned):
        if found.earlier is not None:  # what became of the run this one takes over from
            record.earlier = contract.to_builtins(found.earlier)
            log.warning(
                "run %s takes over the raw versions of run %s (%s at stage %s)",
                record.run_id,
                found.earlier.run_id,
                found.earlier.outcome,
                found.earlier.stage,
                extra={"run_id": record.run_id},
            )
        return found
    holder = found.holder
    record.earlier = contract.to_builtins(holder)
    if found.finished:
        rec.finish("skipped", f"run {holder.run_id} already took these raw generations")
        return None
    # alive, or not silent for long enough: the delivery must come again, not be dropped
    reason = (
        f"run {holder.run_id} holds these raw generations and has not finished (stage "
        f"{holder.stage or 'starting'}); deliver again in {found.retry_after} s"
    )
    rec.finish("skipped", reason)
    record.error = RunError(reason, retryable=True, status=503, retry_after=found.retry_after)
    return None


def _archive(settings: Settings, inputs: Inputs, record: RunRecord) -> None:
    """A copy of every raw object trained on, keyed by its token; stores need no versioning."""
    for name, blob in inputs.blobs.items():
        target = contract.archive_raw(settings, name, blob.token)
        path = contract.raw_path(name)
        record.inputs[path] = msgspec.structs.replace(record.inputs[path], archive=target)


def _write_artifacts(settings: Settings, version: str, files: dict[str, bytes]) -> dict[str, str]:
    """Every file written and read back intact, their sha256 (a seam the tests break)."""
    return contract.write_artifacts(settings, version, files)


def _library_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in LIBRARIES}


def manifest_of(
    trained: Trained, version: str, record: RunRecord, digests: dict[str, str]
) -> Manifest:
    """The manifest of a training's output: core's typed pieces, each model given the sha256
    of its two files, beside what only the run knows (its inputs, the digests)."""
    models = {
        role: msgspec.structs.replace(
            entry, sha256={entry.onnx: digests[entry.onnx], entry.skops: digests[entry.skops]}
        )
        for role, entry in trained.served.items()
    }
    return Manifest(
        version=version,
        created=contract.now(),
        run_id=record.run_id,
        target=F.TARGET,
        unit="CLP per litre",
        models=models,
        next=trained.next_row,
        backtest=trained.backtest,
        files=digests,
        candidates=trained.candidates,
        inputs=dict(record.inputs),
        cleaning=trained.cleaning,
        libraries=_library_versions(),
        path=trained.path,
    )


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
        _promote(settings, rec, version, trained.reason)


def _promote(settings: Settings, rec: Recorder, version: str, reason: str) -> None:
    """Move the pointer to ``version`` unless the serving model was trained on newer raw
    versions. The first compare-and-swap is against the pointer as the run found it; a race
    lost to a run on older (or partly older) inputs is tried again, a bounded number of times."""
    record, seen = rec.record, rec.seen
    lost: list[str] = []  # the versions that won the races this run lost
    for _ in range(PROMOTE_TRIES):
        why = _why_not(settings, record, seen, lost)
        if why:
            rec.finish("not_promoted", why)
            return
        other = contract.promote(settings, version, record.run_id, seen[1] if seen else None)
        if other is None:
            after = f" (after losing the race to version {', '.join(lost)})" if lost else ""
            rec.finish("promoted", reason + after)
            train_metrics.promoted()
            return
        lost.append(other)
        seen = contract.read_pointer(settings)
    raise Contended(
        f"version {version} lost the race to the pointer {PROMOTE_TRIES} times in a row "
        f"(to {', '.join(lost)}); a later run on these inputs may win"
    )


def _why_not(
    settings: Settings, record: RunRecord, seen: tuple[Pointer, str] | None, lost: list[str]
) -> str:
    """Why this run may not replace the model ``seen`` names; empty when it may."""
    if seen is None:
        return ""
    try:
        serving = contract.read_manifest(settings, seen[0].version).inputs
    except (NotFound, ContractError):  # a pointer to no sound model: anything replaces it
        return ""
    newer = contract.newer_input(serving, record.inputs)
    if newer:
        return f"version {seen[0].version} serves and was trained on a newer {newer}"
    if lost and (contract.same_inputs(serving, record.inputs) or not contract.dated(serving)):
        # the same data serves already, or a model of unknown age (a rollback to a release
        # that recorded no upload times) won the race: as before, the winner stays
        return f"another run promoted version {lost[-1]} while this one trained"
    return ""


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
            rec.seen = contract.read_pointer(settings)
            inputs = read_inputs(settings)
        record.inputs = {
            contract.raw_path(n): InputObject(
                sha256=artifacts.sha256(b.data), token=b.token, uploaded=inputs.uploaded[n]
            )
            for n, b in inputs.blobs.items()
        }
        claimed = _claim(settings, inputs, rec) if trigger == "upload" else None
        if trigger == "upload" and claimed is None:
            return record
        with _heartbeat(settings, inputs, record, claimed):
            with rec.timer("archive"):
                _archive(settings, inputs, record)
            ledger.step(settings, inputs.blobs[data.MILK], record, rec.timer, today or date.today())
            _train_and_write(settings, rec, inputs, today or date.today())
    return record


def _heartbeat(
    settings: Settings, inputs: Inputs, record: RunRecord, claimed: contract.Owned | None
) -> contextlib.AbstractContextManager[object]:
    """While the run goes on, its claim (if it has one) is kept alive."""
    if claimed is None:
        return contextlib.nullcontext()
    claim = Claim(record.run_id, record.started, dict(inputs.tokens))
    return contract.Heartbeat(settings, inputs.key, claim, claimed.token)


def rollback(settings: Settings, version: str) -> contract.Pointer:
    """Point serving at an earlier version whose manifest exists."""
    return contract.rollback(settings, version)
