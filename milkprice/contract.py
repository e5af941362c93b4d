"""The bucket contract: what the train function writes and the predict function reads.

The two functions share nothing but the bucket, so the shape of its objects is the system's
most important interface. It lives here, as typed structures that both sides (and the CLI,
the local stack, the bench and the tests) encode and decode, never as dictionaries built in
one place and picked apart in others:

* :class:`Pointer`, ``models/current.json``: the version being served.
* :class:`Manifest`, ``models/<version>/manifest.json``: one training's models and figures.
* :class:`RunRecord`, ``runs/<run-id>.json``: what one training run did and why.
* :class:`Claim`, ``runs/inputs/<key>.json``: which run took a set of raw objects; the
  claim protocol beside it (:func:`take_claim`, :class:`Heartbeat`) is how a run takes one,
  keeps it while alive, and how a later delivery takes over the claim of a run that died.
* :class:`History`, ``models/history.json``: every pointer move, promotions and rollbacks.
* :class:`Ledger`, ``ledger/forecasts.json``: every served forecast scored against the price
  that arrived, per horizon, with the figures and the drift state.

Each carries ``schema``; an object written by an earlier release still decodes (fields added
since have defaults), and one that does not match is a :class:`ContractError` naming the object
and the field, never a ``KeyError`` deep in a caller. Like ``store``, this module imports no
pandas or scikit-learn: the predict function uses it.

It is also the sides' one door to the bucket: the raw files (:func:`read_raw`,
:func:`archive_raw`, :func:`read_archived`), a version's files (:func:`write_artifacts`,
:func:`read_artifact`), the pointer and the records go through the functions below, and
``store`` is the storage adapter underneath, which neither side calls itself.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import math
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, TypeVar

import msgspec

from milkprice import store
from milkprice.errors import (
    Conflict,
    Contended,
    ContractError,
    DataError,
    LoadError,
    MilkPriceError,
    NotFound,
    NotReady,
)
from milkprice.settings import Settings

SCHEMA = 1  # raise when a change would not decode in the previous release's reader
Outcome = Literal["running", "promoted", "not_promoted", "skipped", "failed"]
POINTER = store.POINTER  # models/current.json
HISTORY = "models/history.json"
LEDGER = "ledger/forecasts.json"
SWAP_TRIES = 8  # compare-and-swap attempts of an append before it gives up
READ_TRIES = 3  # reads of a raw object replaced while being read
T = TypeVar("T")
JSON = "application/json"
log = logging.getLogger("milkprice.train")
S = TypeVar("S", bound=msgspec.Struct)


def now() -> str:
    """A UTC timestamp as every record writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def instant(stamp: str) -> datetime:
    """An RFC 3339 timestamp (a record's, or a store's) as an aware datetime."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


class Metrics(msgspec.Struct, frozen=True):
    """Backtest figures of one forecast: errors in CLP per litre, MAPE in percent."""

    rmse: float
    mae: float
    mape: float


class LongMetrics(msgspec.Struct, frozen=True):
    """The same figures on the second, longer view of the backtest."""

    rmse: float
    mae: float
    mape: float
    scored: int
    months: list[str]
    rmse_to_naive: float


class Interval(msgspec.Struct, frozen=True):
    """The forecast's prediction interval, as ratios of the point forecast."""

    level: float
    lower_ratio: float
    upper_ratio: float
    coverage: float
    scored_months: int
    calibration_months: int
    method: str


class ModelEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    """One served model: its artifacts, features and figures."""

    candidate: str
    description: str
    features: list[str]
    onnx: str
    skops: str
    training_rows: int
    training_months: list[str]
    backtest: Metrics
    naive: Metrics
    export_gap: float
    sha256: dict[str, str] = {}
    interval: Interval | None = None
    backtest_long: LongMetrics | None = None


class NextRow(msgspec.Struct, frozen=True):
    """The feature row of the month after the data: what ``/forecast`` scores."""

    month: str
    features: dict[str, float]


class BacktestInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    months: list[str]
    method: str
    table: str = ""  # the file names of the table and chart, when the run made them
    chart: str = ""
    long_months: list[str] = []


class CandidateFigures(msgspec.Struct, frozen=True, omit_defaults=True):
    """One candidate of the backtest; a candidate left out has a ``note`` and no figures."""

    name: str
    description: str
    features: int
    pools: list[str] = []
    rmse: float | None = None
    mae: float | None = None
    mape: float | None = None
    seconds: float | None = None
    long: LongMetrics | None = None
    not_eligible: str | None = None
    note: str | None = None


class HorizonMetrics(msgspec.Struct, frozen=True, omit_defaults=True):
    """One forecast's figures at one horizon; ``coverage`` for the chosen path only, with
    ``coverage_band``: the lowest and highest coverage (both inclusive) an exact 80%
    interval shows on that many months by chance, the central 90% of Binomial(n, 0.8) over
    n (None in manifests written before it)."""

    rmse: float
    mae: float
    mape: float
    rmse_to_naive: float
    coverage: float | None = None
    coverage_band: tuple[float, float] | None = None


class HorizonFigures(msgspec.Struct, frozen=True):
    """One horizon on one view: the chosen path, the naive forecast and every path model,
    each scored on the same ``scored`` target months."""

    horizon: int
    scored: int
    path: HorizonMetrics
    naive: HorizonMetrics
    models: dict[str, HorizonMetrics]


class HorizonView(msgspec.Struct, frozen=True):
    months: list[str]  # the first and last target month
    horizons: list[HorizonFigures]


class PathMonth(msgspec.Struct, frozen=True):
    """One month of the forecast path: its price and its interval."""

    month: str
    horizon: int
    price: float
    lower: float
    upper: float


class ForecastPath(msgspec.Struct, frozen=True, omit_defaults=True):
    """The forecast a year ahead: the path from the month after the data, and its backtest
    per horizon (``short``: the months the one-step models are chosen on; ``long``)."""

    level: float
    method: str
    models: dict[str, str]  # name -> what it is
    months: list[PathMonth]
    short: HorizonView
    long: HorizonView | None = None
    history: dict[str, float] = {}  # the last known prices, month -> price (for the chart)
    table: str = ""
    seconds: float = 0.0


class InputObject(msgspec.Struct, frozen=True, omit_defaults=True):
    """One raw object a run read: its version token, digest, archived copy and when the store
    took that version (``uploaded``, by the store's clock; empty in the first release's)."""

    sha256: str
    token: str = ""
    archive: str = ""
    generation: int | None = None  # written by the first release; ``token`` since
    uploaded: str = ""

    def __post_init__(self) -> None:
        if not self.token and self.generation is not None:
            msgspec.structs.force_setattr(self, "token", str(self.generation))


class Manifest(msgspec.Struct, frozen=True, omit_defaults=True):
    version: str
    created: str
    run_id: str
    target: str
    unit: str
    models: dict[str, ModelEntry]
    next: NextRow
    backtest: BacktestInfo
    files: dict[str, str]
    candidates: list[CandidateFigures] = []
    inputs: dict[str, InputObject] = {}
    cleaning: dict[str, dict[str, int]] = {}
    libraries: dict[str, str] = {}
    path: ForecastPath | None = None  # written since the forecast path; older ones have none
    schema: int = SCHEMA


class Pointer(msgspec.Struct, frozen=True, omit_defaults=True):
    """The serving version. ``write_id`` makes every write's bytes unique: a store whose
    version token is a digest of the content must not see two writers' pointers as one."""

    version: str
    run_id: str
    promoted: str
    write_id: str = ""
    schema: int = SCHEMA


class History(msgspec.Struct, omit_defaults=True):
    """Every pointer the bucket held, oldest first: appended at each promotion and rollback,
    so which version was served when can be read after the pointer has moved on."""

    events: list[Pointer] = []
    schema: int = SCHEMA


class ScoredForecast(msgspec.Struct, frozen=True, omit_defaults=True):
    """One served forecast against the price that arrived: ``horizon`` months ahead of the
    serving version's data; ``error`` is forecast minus actual (positive: too high);
    ``naive`` the last price the version knew (month minus horizon), as the scoring run read
    it. ``actual`` is the price first read for the month; a later change is a Revision."""

    month: str
    horizon: int
    version: str
    promoted: str  # when the counted promotion of the version began
    source: Literal["path", "model"]
    price: float
    actual: float
    naive: float
    error: float
    lower: float | None = None
    upper: float | None = None
    level: float | None = None
    inside: bool | None = None  # None: the forecast had no interval
    scored: str = ""
    run_id: str = ""


class Revision(msgspec.Struct, frozen=True, omit_defaults=True):
    """A price of an already scored month that changed in the raw file: the scored entries
    keep the price first read; every change is kept here, in order."""

    month: str
    previous: float
    actual: float
    seen: str
    run_id: str = ""
    token: str = ""  # of the raw precio_leche.csv that had the new price


class Served(msgspec.Struct, frozen=True, omit_defaults=True):
    """One promotion (or rollback) as the ledger knows it: from ``promoted`` on, ``version``
    served until the next one. ``source``: the pointer's history or a run record."""

    version: str
    run_id: str
    promoted: str
    source: Literal["pointer", "run"] = "pointer"


class Span(msgspec.Struct, frozen=True):
    """A version's forecasts in short: the last month of its prices and how many months
    ahead it forecast (0: none that can be scored)."""

    end: str
    horizons: int


class ErrorFigures(msgspec.Struct, frozen=True):
    rmse: float
    mae: float
    bias: float  # mean of forecast minus actual


class LiveHorizon(msgspec.Struct, frozen=True, omit_defaults=True):
    """Live figures at one horizon, the naive forecast's on the same months, and the
    interval's coverage with the central 90% band of a binomial at the interval's level
    for this count (coverage below it: the interval holds less often than promised)."""

    horizon: int
    count: int
    forecast: ErrorFigures
    naive: ErrorFigures
    rmse_to_naive: float | None = None
    intervals: int = 0  # how many of the forecasts had an interval
    inside: int = 0
    coverage: float | None = None
    coverage_band: list[float] = []  # [low, high], fractions of ``intervals``
    backtest_rmse: float | None = None  # what the newest served path's backtest promised
    backtest_coverage: float | None = None


class DriftSignal(msgspec.Struct, frozen=True):
    horizon: int
    kind: Literal["coverage", "misses"]
    message: str


class Drift(msgspec.Struct, frozen=True, omit_defaults=True):
    """``none``: nothing scored yet; ``ok``; ``drift``: live errors left what the backtest
    promised (``signals`` say where)."""

    state: Literal["none", "ok", "drift"] = "none"
    signals: list[DriftSignal] = []


class Ledger(msgspec.Struct, omit_defaults=True):
    """``ledger/forecasts.json``: append-only in effect, written by compare-and-swap."""

    forecasts: list[ScoredForecast] = []
    revisions: list[Revision] = []
    horizons: list[LiveHorizon] = []
    drift: Drift = Drift()
    served: list[Served] = []  # the promotions the ledger has read, in time order
    spans: dict[str, Span] = {}  # version -> what it forecast (read once from its manifest)
    updated: str = ""
    run_id: str = ""
    write_id: str = ""
    schema: int = SCHEMA


class LedgerStep(msgspec.Struct, omit_defaults=True):
    """What one run's ledger step did: entries and revisions added, the drift state after;
    ``error`` when it failed (the run goes on: the next run scores what this one missed)."""

    scored: int = 0
    revised: int = 0
    drift: Drift | None = None
    error: str = ""


class RunModel(msgspec.Struct, frozen=True):
    candidate: str
    rmse: float
    mae: float
    mape: float


class RunError(msgspec.Struct, frozen=True, omit_defaults=True):
    """Why a run failed: ``data`` when the raw data was at fault, ``retryable`` when the same
    run made again may succeed (storage away) and an event delivery should be retried."""

    error: str
    details: list[dict[str, Any]] = []
    data: bool = False
    retryable: bool | None = None  # None: written before this field; see __post_init__
    status: int = 0  # the HTTP status of the error (0: written before this field)
    retry_after: int = 0  # seconds worth waiting before the retry, when known

    def __post_init__(self) -> None:
        if self.retryable is None:  # the first release retried whatever was not the data's
            msgspec.structs.force_setattr(self, "retryable", not self.data)
        if not self.status:
            msgspec.structs.force_setattr(self, "status", 422 if self.data else 500)


class RunRecord(msgspec.Struct, omit_defaults=True):
    """What one training run did. Mutable: the run fills it in as it goes."""

    run_id: str
    trigger: str
    started: str
    outcome: Outcome = "running"
    stage: str | None = None
    event: dict[str, Any] | None = None
    inputs: dict[str, InputObject] = {}
    cleaning: dict[str, dict[str, int]] = {}
    version: str | None = None
    models: dict[str, RunModel] = {}
    naive: Metrics | None = None
    reason: str = ""
    error: RunError | None = None
    earlier: dict[str, Any] | None = None  # the run that holds (or held) these inputs' claim
    ledger: LedgerStep | None = None  # what the run scored of earlier forecasts; the drift
    timings: dict[str, float] = {}
    seconds: float | None = None
    finished: str | None = None
    schema: int = SCHEMA
    trace_id: str | None = None  # the trace of the request or event that started the run

    @property
    def path(self) -> str:
        return run_path(self.run_id)


# ---------------------------------------------------------------- encoding


def encode(doc: msgspec.Struct) -> bytes:
    """JSON as the bucket holds it: indented, so a person can read an object in a console."""
    return msgspec.json.format(msgspec.json.encode(doc), indent=2)


def decode(data: bytes, kind: type[T], name: str) -> T:
    """Bytes of ``name`` as ``kind``; a mismatch says which object and which field."""
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise ContractError(f"{name} does not match the {kind.__name__} schema: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ContractError(f"{name} is not valid JSON: {exc}") from None


def convert(doc: Any, kind: type[T], name: str) -> T:
    """Parsed JSON (an HTTP answer, say) as ``kind``; a mismatch is a ContractError."""
    try:
        return msgspec.convert(doc, kind)
    except msgspec.ValidationError as exc:
        raise ContractError(f"{name} does not match the {kind.__name__} schema: {exc}") from None


def to_builtins(doc: msgspec.Struct) -> Any:
    """Plain JSON-ready values (for an HTTP answer or a printed table)."""
    return msgspec.to_builtins(doc)


# ---------------------------------------------------------------- paths


def manifest_path(version: str) -> str:
    return store.model_path(version, "manifest.json")


def raw_path(name: str) -> str:
    """Where the raw file ``name`` is uploaded; also its key in a record's ``inputs``."""
    return store.RAW_PREFIX + name


def run_path(run_id: str) -> str:
    return f"{store.RUNS_PREFIX}{run_id}.json"


def claim_path(key: str) -> str:
    return f"{store.CLAIMS_PREFIX}{key}.json"


def clock_path(key: str) -> str:
    """The object a taker writes beside a claim to read the store's clock (see _silence)."""
    return f"{store.CLAIMS_PREFIX}{key}.clock"


# ---------------------------------------------------------------- operations


def read_pointer(settings: Settings) -> tuple[Pointer, str] | None:
    """The pointer and its version token (what a compare-and-swap expects), or None."""
    blob = store.read(settings, store.POINTER)
    return None if blob is None else (decode(blob.data, Pointer, store.POINTER), blob.token)


def read_manifest(settings: Settings, version: str) -> Manifest:
    """The manifest of ``version``; a 404 naming the version when there is none."""
    name = manifest_path(version)
    blob = store.read(settings, name)
    if blob is None:
        raise NotFound(f"no model version {version} in the bucket ({name} is missing)")
    return decode(blob.data, Manifest, name)


def serving(settings: Settings) -> tuple[Pointer, Manifest] | None:
    """The pointer and the manifest it names, or None before the first promotion."""
    found = read_pointer(settings)
    return None if found is None else (found[0], read_manifest(settings, found[0].version))


def write_manifest(settings: Settings, manifest: Manifest) -> None:
    store.write(settings, manifest_path(manifest.version), encode(manifest), "application/json")


def write_run(settings: Settings, record: RunRecord) -> None:
    store.write(settings, record.path, encode(record), "application/json")


def read_run(settings: Settings, run_id: str) -> RunRecord | None:
    blob = store.read(settings, run_path(run_id))
    return None if blob is None else decode(blob.data, RunRecord, run_path(run_id))


def run_ids(settings: Settings) -> list[str]:
    """Every run's id, oldest first (ids start with their UTC start time)."""
    names = [n for n, _ in store.list_names(settings, store.RUNS_PREFIX) if n.count("/") == 1]
    return sorted(n.removeprefix(store.RUNS_PREFIX).removesuffix(".json") for n in names)


def list_runs(settings: Settings, last: int | None = None) -> list[RunRecord]:
    """The last ``last`` run records (all without it), oldest first."""
    ids = run_ids(settings)
    found = (read_run(settings, i) for i in (ids[-last:] if last else ids))
    return [r for r in found if r is not None]


def versions(settings: Settings) -> list[str]:
    """Every version with a manifest in the bucket, oldest first."""
    names = store.list_names(settings, store.MODELS_PREFIX)
    return sorted(
        n.removeprefix(store.MODELS_PREFIX).removesuffix("/manifest.json")
        for n, _ in names
        if n.endswith("/manifest.json")
    )


def promote(settings: Settings, version: str, run_id: str, seen: str | None) -> str | None:
    """Move the pointer to ``version`` if it still has the token ``seen`` (None: no pointer).

    Returns None on success, else the version another writer promoted meanwhile.
    """
    pointer = Pointer(version, run_id, now(), write_id=uuid.uuid4().hex)
    try:
        store.swap(settings, store.POINTER, encode(pointer), "application/json", seen)
    except Conflict:
        current = read_pointer(settings)
        return current[0].version if current else "?"
    remember(settings, pointer)
    return None


def remember(settings: Settings, pointer: Pointer) -> None:
    """Append ``pointer`` to the history. Best effort: the pointer has moved already, and the
    ledger also reads the run records and the pointer itself."""

    def add(history: History) -> History | None:
        if any(e.write_id == pointer.write_id for e in history.events):
            return None
        return History([*history.events, pointer])

    with contextlib.suppress(MilkPriceError):
        update(settings, HISTORY, History, add)


def read_history(settings: Settings) -> History:
    """Every pointer move recorded so far (none before the history was kept)."""
    blob = store.read(settings, HISTORY)
    return History() if blob is None else decode(blob.data, History, HISTORY)


def read_ledger(settings: Settings) -> tuple[Ledger, str | None]:
    """The forecast ledger and its token; an empty ledger and None before the first one."""
    blob = store.read(settings, LEDGER)
    return (Ledger(), None) if blob is None else (decode(blob.data, Ledger, LEDGER), blob.token)


def update(
    settings: Settings,
    name: str,
    kind: type[S],
    change: Callable[[S], S | None],
    tries: int = SWAP_TRIES,
) -> S | None:
    """Read ``name``, apply ``change`` and write the result by compare-and-swap on the token
    read; when another writer got there first, read again and apply ``change`` to what it
    wrote, up to ``tries`` times. ``change`` returns None when there is nothing to write.
    Returns what was written (None: nothing was)."""
    for _ in range(tries):
        blob = store.read(settings, name)
        doc = kind() if blob is None else decode(blob.data, kind, name)
        new = change(doc)
        if new is None:
            return None
        seen = None if blob is None else blob.token
        try:
            store.swap(settings, name, encode(new), "application/json", seen)
        except Conflict:
            continue
        return new
    raise Conflict(f"{name} kept changing under {tries} attempts to update it; try again")


def rollback(settings: Settings, version: str) -> Pointer:
    """Serve an earlier version whose manifest exists; a lost race is a Conflict."""
    read_manifest(settings, version)  # a 404 naming the version when there is none
    seen = read_pointer(settings)
    other = promote(settings, version, f"rollback-{version}", seen[1] if seen else None)
    if other is not None:
        raise Conflict(f"another run promoted version {other} meanwhile; try again")
    found = read_pointer(settings)
    assert found is not None
    return found[0]


# ---------------------------------------------------------------- raw files and artifacts


Blob = store.Blob  # an object's bytes with the token of exactly those bytes


def pointer_token(settings: Settings, timeout: float = store.TIMEOUT) -> str | None:
    """The pointer's live version token (None: no pointer), without reading its bytes: what
    a reader compares with the token of the pointer it loaded."""
    return store.token(settings, store.POINTER, timeout)


def ledger_token(settings: Settings, timeout: float = store.TIMEOUT) -> str | None:
    """The forecast ledger's live version token (None: no ledger yet), without its bytes."""
    return store.token(settings, LEDGER, timeout)


def read_raw(settings: Settings, name: str) -> tuple[Blob, str]:
    """The raw file ``name`` and when the store took that very version (by its clock), each
    checked against the size limit (``settings.max_raw_bytes``) before it is downloaded. The
    metadata and the bytes come from two calls, so they must name the same token."""
    path = raw_path(name)
    for _ in range(READ_TRIES):
        found = store.metadata(settings, path)
        if found is None:
            raise DataError(name, f"not found at {settings.bucket}/{path}")
        _check_size(settings, name, found.size)
        blob = store.read(settings, path)
        if blob is None:
            raise DataError(name, f"{settings.bucket}/{path} was deleted while being read")
        _check_size(settings, name, len(blob.data))  # replaced by a larger one meanwhile
        if blob.token == found.token:
            return blob, found.uploaded
    raise Contended(f"{path} was replaced while being read, {READ_TRIES} times in a row")


def _check_size(settings: Settings, name: str, size: int) -> None:
    if size > settings.max_raw_bytes:
        raise DataError(
            name,
            f"is {size / 1e6:.1f} MB, more than the {settings.max_raw_bytes / 1e6:.1f} MB "
            "a raw file may have (MILKPRICE_MAX_RAW_BYTES)",
        )


def archive_raw(settings: Settings, name: str, token: str) -> str:
    """Copy the ``token`` version of the raw file ``name`` into the archive, keyed by its
    token (so stores need no versioning of their own); returns the copy's name."""
    path = raw_path(name)
    target = store.archive_path(path, token)
    store.copy(settings, path, token, target)
    return target


def read_archived(settings: Settings, archive: str) -> bytes | None:
    """An archived raw object's bytes, by the name a record's input gives; None if gone."""
    blob = store.read(settings, archive)
    return None if blob is None else blob.data


def write_artifacts(settings: Settings, version: str, files: Mapping[str, bytes]) -> dict[str, str]:
    """Write every file of ``version`` and read each back; return their sha256 once all are
    verified, so a manifest never names a file that did not land intact."""
    digests = {}
    for name, payload in files.items():
        kind = {"png": "image/png", "csv": "text/csv"}.get(name.rsplit(".", 1)[-1])
        store.write(
            settings, store.model_path(version, name), payload, kind or "application/octet-stream"
        )
        digests[name] = hashlib.sha256(payload).hexdigest()
    for name, digest in digests.items():
        back = read_artifact(settings, version, name)
        if back is None or hashlib.sha256(back).hexdigest() != digest:
            raise MilkPriceError(f"artifact {name} of {version} did not read back intact")
    return digests


def read_artifact(settings: Settings, version: str, name: str) -> bytes | None:
    """A file of ``version`` as the bucket holds it (None if missing); checking it against
    the manifest's sha256 is the reader's part."""
    blob = store.read(settings, store.model_path(version, name))
    return None if blob is None else blob.data


def served_artifact(
    settings: Settings, role: str, kind: Literal["onnx", "skops"]
) -> tuple[Manifest, ModelEntry, bytes]:
    """The served version's ``role`` model as one kind of file, with its manifest and entry;
    NotReady before the first promotion, LoadError when the manifest names a file not there."""
    found = serving(settings)
    if found is None:
        raise NotReady(f"no model promoted in {settings.bucket}")
    manifest = found[1]
    entry = manifest.models[role]
    name = entry.onnx if kind == "onnx" else entry.skops
    data = read_artifact(settings, manifest.version, name)
    if data is None:
        raise LoadError(f"{manifest.version} names {name}, which is not in the bucket")
    return manifest, entry, data


# ---------------------------------------------------------------- which inputs are newer


def newer_input(serving: Mapping[str, InputObject], mine: Mapping[str, InputObject]) -> str:
    """The raw object ``serving`` has a newer version of than ``mine``, described for a run
    record; empty when it has none.

    Version tokens are opaque (a generation, an ETag), so two versions of one name are ordered
    by when the store took them, by the store's own clock, never a function's; the same token
    is the same version. An input with no such time (the first release recorded none) is
    never newer, so such a model is replaced as it always was.
    """
    for name in sorted(serving):
        theirs, ours = serving[name], mine.get(name)
        if ours is None or ours.token == theirs.token or not (theirs.uploaded and ours.uploaded):
            continue
        if instant(theirs.uploaded) > instant(ours.uploaded):
            return f"{name} (uploaded {theirs.uploaded}; this run read the one of {ours.uploaded})"
    return ""


def dated(inputs: Mapping[str, InputObject]) -> bool:
    """Whether every input says when it was uploaded (not so in the first release's)."""
    return bool(inputs) and all(entry.uploaded for entry in inputs.values())


def same_inputs(a: Mapping[str, InputObject], b: Mapping[str, InputObject]) -> bool:
    """Whether two runs read exactly the same raw versions."""
    return {n: e.token for n, e in a.items()} == {n: e.token for n, e in b.items()}


# ---------------------------------------------------------------- claims: the protocol


class Claim(msgspec.Struct, frozen=True, omit_defaults=True):
    """Which run took one set of raw object versions (event-triggered runs are idempotent).

    Its owner rewrites it while it runs (:class:`Heartbeat`); ``heartbeat`` and ``beats`` are
    for people reading the bucket, and make every rewrite's bytes unique. Whether the owner is
    alive is judged by when the store last wrote the object (see :func:`take_claim`).
    """

    run_id: str
    started: str
    inputs: dict[str, str | int]
    heartbeat: str = ""  # the owner's clock at its last rewrite
    beats: int = 0


@dataclass(frozen=True)
class Owned:
    """The claim is this run's: its token (what the heartbeat swaps on) and, when it was
    taken over, the record of the run that had it."""

    token: str
    earlier: RunRecord | None = None


@dataclass(frozen=True)
class Held:
    """Another run has the claim. ``finished``: that run is done with these inputs for good
    (promoted, not promoted, or failed in a way a retry cannot help). Otherwise it is alive,
    or not yet silent for the claim's timeout: the claim may be free in ``retry_after`` s."""

    holder: RunRecord
    finished: bool
    retry_after: int = 0


def take_claim(settings: Settings, key: str, mine: Claim) -> Owned | Held:
    """Claim a set of raw versions for ``mine``'s run.

    The claim is created, or taken over from a run that failed in a way a retry can help or
    that has not rewritten it for ``settings.claim_timeout`` seconds (its process died, or
    was cut off by its platform's timeout). Taking over is a compare-and-swap on the claim's
    token: of two takers one wins, and the other is told the claim is held.
    """
    name, data = claim_path(key), encode(mine)
    for _ in range(3):  # claims are never deleted, but one an operator removed is free again
        try:
            return Owned(store.create(settings, name, data, JSON))
        except Conflict:
            pass
        meta, blob = store.metadata(settings, name), store.read(settings, name)
        if meta is not None and blob is not None:
            break
    else:
        raise Contended(f"{name} was created and removed three times meanwhile")
    claim = decode(blob.data, Claim, name)
    holder = read_run(settings, claim.run_id) or RunRecord(claim.run_id, "upload", claim.started)
    timeout = settings.claim_timeout
    if holder.outcome == "failed" and holder.error is not None and holder.error.retryable:
        pass  # a retry can help: take it over now
    elif holder.outcome != "running":
        return Held(holder, finished=True)
    elif meta.token != blob.token:  # rewritten between the two reads: its owner is alive
        return Held(holder, False, math.ceil(timeout))
    else:
        silent = _silence(settings, key, meta, mine.run_id)
        if silent < timeout:
            return Held(holder, False, max(1, math.ceil(timeout - silent)))
    try:
        return Owned(store.swap(settings, name, data, JSON, blob.token), holder)
    except Conflict:  # another taker won, or the owner beat just now: alive either way
        return Held(holder, False, max(1, math.ceil(timeout / 3)))


def _silence(settings: Settings, key: str, claim: store.Meta, run_id: str) -> float:
    """Seconds since the store last wrote the claim, read off the store's clock alone.

    The owner's clock wrote its ``heartbeat`` and this process runs on a third clock: the
    clocks of two function instances may disagree by more than a heartbeat, and judging one by
    the other could take a live run's claim, or wait long on a dead one. So the taker writes
    a probe beside the claim and reads the store's stamp of it: both stamps then come from
    the store (at its precision, a second on S3 and Azure: well under a timeout).
    """
    probe = clock_path(key)
    store.write(settings, probe, run_id.encode(), "text/plain")
    now = store.metadata(settings, probe)
    if now is None:  # removed between the two calls: say the claim was just written
        return 0.0
    return (instant(now.updated) - instant(claim.updated)).total_seconds()


class Heartbeat:
    """The owner's side of a claim: a daemon thread rewrites it every ``interval`` seconds by
    compare-and-swap on its token, so takers see the run is alive, until the ``with`` block
    ends. A swap lost to a taker (who judged the run dead) stops it, and sets ``lost``."""

    def __init__(self, settings: Settings, key: str, claim: Claim, token: str) -> None:
        self.settings, self.name, self.claim, self.token = settings, claim_path(key), claim, token
        self.interval = settings.claim_timeout / 3
        self.lost = False
        self._stop = threading.Event()
        # the run's context goes along: the thread's log lines carry the run's trace
        beats = contextvars.copy_context()
        self._thread = threading.Thread(
            target=beats.run, args=(self._run,), name="claim-heartbeat", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                if not self.beat():
                    return
        except Exception:  # a bug here must not pass unseen: the claim will lapse
            log.exception("the heartbeat of %s stopped", self.name)

    def beat(self) -> bool:
        """One rewrite; False once the claim is someone else's."""
        beat = msgspec.structs.replace(self.claim, heartbeat=now(), beats=self.claim.beats + 1)
        try:
            try:
                self.token = store.swap(self.settings, self.name, encode(beat), JSON, self.token)
            except Conflict:
                return self._still_mine()
        except MilkPriceError as exc:  # the store away: the next beat tries again
            log.warning("heartbeat of %s: %s", self.name, exc.message)
            return True
        self.claim = beat
        return True

    def _still_mine(self) -> bool:
        """After a lost swap: a write that took although its answer was lost leaves the claim
        ours under a token we did not see; anything else is a takeover."""
        blob = store.read(self.settings, self.name)
        if blob is not None and decode(blob.data, Claim, self.name).run_id == self.claim.run_id:
            self.token = blob.token
            return True
        self.lost = True
        log.warning("%s was taken over: run %s beats no more", self.name, self.claim.run_id)
        return False
