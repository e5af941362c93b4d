"""Model versions other than the served one: listed from the bucket, loaded on first use.

The unversioned routes serve what the pointer names (``cache``). A route that names a version
gets that version's snapshot from here: read and sha256-verified like the served one
(:func:`~milkprice.predict.snapshot.load_version`) the first time it is asked for, then kept
among at most :data:`KEPT` others, the least recently used dropped first, so old versions
cannot fill the memory. A version that cannot be loaded is remembered (as few) with why.
The list of versions is read from the bucket at most once per ``reload_seconds``, so a request
for an unknown version costs no more than a known one; a version promoted since the last
listing may answer 404 for that long, as the pointer's own check may lag.

Loading takes seconds of storage and CPU, so it is bounded for anonymous clients:

- A load runs outside the lock: requests for loaded versions never wait for one. Requests for
  a version being loaded wait for that one load (never two loads of a version at once).
- At most :data:`LOADS` loads start in any :data:`WINDOW` seconds. A request that needs one
  beyond that answers 503 with Retry-After (when the oldest load leaves the window), and the
  versions kept go on answering. Clients cycling through more versions than are kept cost at
  most that many loads a minute, not one a request.
- A storage failure is logged with its version; the client hears only that the version could
  not be read and to try again (the storage SDK's own words stay in the log).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque

from milkprice import contract
from milkprice import settings as settings_module
from milkprice.errors import LoadError, MilkPriceError, NotFound, NotReady
from milkprice.predict import metrics
from milkprice.predict.snapshot import Loaded, load_version

log = logging.getLogger("milkprice.predict")

KEPT = 3  # versions other than the served one kept loaded at once
NAMED = 10  # versions a 404 for an unknown one names
LOADS = 2 * KEPT  # loads that may start in any WINDOW seconds: each kept one, replaced once
WINDOW = 60.0


class _Load:
    """One load under way; requests for the same version wait for its outcome."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.loaded: Loaded | None = None
        self.error: MilkPriceError | None = None


class Versions:
    """The bucket's versions, and the snapshots of those asked for by name."""

    def __init__(self, settings: settings_module.Settings) -> None:
        self.settings = settings
        self.interval = max(0.0, float(settings.reload_seconds))
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self._failed: OrderedDict[str, str] = OrderedDict()
        self._loading: dict[str, _Load] = {}
        self._starts: deque[float] = deque()  # when the loads in the window started
        self._names: tuple[str, ...] = ()
        self._listed = -float("inf")
        self._lock = threading.Lock()  # held only to look and to record, never over storage
        self._listing = threading.Lock()  # one listing at a time
        self.loads = 0  # loads started, for the operator and the tests

    def names(self, served: str) -> list[str]:
        """Every version that can be asked for: ``served`` first, then the newest first."""
        if time.monotonic() - self._listed >= self.interval:
            try:
                self._list()
            except MilkPriceError as exc:  # keep the last list: the served one still answers
                self._listed = time.monotonic()
                log.warning("listing the model versions failed: %s", exc.message)
        return self._ordered(served)

    def _ordered(self, served: str) -> list[str]:
        return [served, *(v for v in reversed(self._names) if v != served)]

    def _list(self) -> None:
        self._names = tuple(contract.versions(self.settings))
        self._listed = time.monotonic()

    def _relist(self, version: str, retry_after: int) -> None:
        """List again if ``version`` is not known and the last listing is old enough."""
        with self._listing:
            if version in self._names or time.monotonic() - self._listed < self.interval:
                return  # another request listed meanwhile
            try:
                self._list()
            except MilkPriceError as exc:
                self._listed = time.monotonic()
                log.warning("listing the model versions failed: %s", exc.message)
                raise NotReady(
                    "the model versions could not be listed from storage; try again", retry_after
                ) from None

    def get(self, version: str, served: Loaded, retry_after: int) -> Loaded:
        """The snapshot of ``version``; 404 naming the known ones if the bucket has none,
        503 if it cannot be loaded as it is in the bucket, or not now."""
        if version == served.version:
            return served
        with self._lock:
            found = self._loaded.get(version)
            if found is not None:
                self._loaded.move_to_end(version)
                return found
        if version not in self._names:
            self._relist(version, retry_after)  # a version promoted since the last listing
            if version not in self._names:
                raise self._unknown(version, served.version)
        return self._load_once(version, retry_after)

    def _unknown(self, version: str, served: str) -> NotFound:
        """404 naming the known versions (the newest few of them, when there are many)."""
        known = self._ordered(served)
        shown = ", ".join(known[:NAMED])
        if len(known) > NAMED:
            shown += f" and {len(known) - NAMED} older (GET /v2/models/{{name}} lists them all)"
        return NotFound(
            f"no model version {version!r}; the versions are {shown}",
            [{"field": "version", "problem": "unknown version"}],
        )

    def _load_once(self, version: str, retry_after: int) -> Loaded:
        """``version`` loaded by this request, or by the one already loading it."""
        with self._lock:
            found = self._loaded.get(version)
            if found is not None:
                return found
            if version in self._failed:
                raise NotReady(f"model version {version} {self._failed[version]}", retry_after)
            load = self._loading.get(version)
            leader = load is None
            if load is None:
                self._admit(version)
                load = self._loading[version] = _Load()
        if not leader:
            load.done.wait()
        else:
            try:
                load.loaded = self._load(version, retry_after)
            except MilkPriceError as exc:
                load.error = exc
            finally:
                with self._lock:
                    del self._loading[version]
                load.done.set()
        if load.error is not None:
            raise load.error
        if load.loaded is None:  # the load failed unexpectedly: its request answered 500
            raise NotReady(f"model version {version} could not be loaded; try again", retry_after)
        return load.loaded

    def _admit(self, version: str) -> None:
        """Count a load starting now (the lock held); 503 if the window has no room."""
        now = time.monotonic()
        while self._starts and now - self._starts[0] >= WINDOW:
            self._starts.popleft()
        if len(self._starts) >= LOADS:
            wait = max(1, math.ceil(self._starts[0] + WINDOW - now))
            log.warning(
                "not loading model version %s: %d loads in the last %.0f s",
                version,
                len(self._starts),
                WINDOW,
                extra={"version": version},
            )
            raise NotReady(
                f"model version {version} is not loaded, and {LOADS} versions were loaded in "
                f"the last {WINDOW:.0f} s; try again in {wait} s",
                wait,
            )
        self._starts.append(now)
        self.loads += 1

    def _load(self, version: str, retry_after: int) -> Loaded:
        """Load ``version`` (the lock not held), keep it, and drop the least recently used."""
        counted = metrics.get()
        try:
            loaded = load_version(self.settings, version)
        except LoadError as exc:
            counted.version_loads.labels("failed").inc()
            reason = f"cannot be loaded: {exc.message}"
            with self._lock:
                self._remember_failure(version, reason)
            raise NotReady(f"model version {version} {reason}", retry_after) from None
        except MilkPriceError as exc:  # storage: not remembered, the next request tries again
            counted.version_loads.labels("failed").inc()
            counted.storage_errors.labels("version").inc()
            log.warning(
                "model version %s could not be read: %s",
                version,
                exc.message,
                extra={"version": version},
            )
            raise NotReady(
                f"model version {version} could not be read from storage; try again", retry_after
            ) from None
        with self._lock:
            self._loaded[version] = loaded
            while len(self._loaded) > KEPT:
                dropped, _ = self._loaded.popitem(last=False)
                log.info(
                    "dropped model version %s from memory", dropped, extra={"version": dropped}
                )
            counted.versions_kept.set(len(self._loaded))
        counted.version_loads.labels("loaded").inc()
        log.info("loaded model version %s by name", version, extra={"version": version})
        return loaded

    def _remember_failure(self, version: str, reason: str) -> None:
        self._failed[version] = reason
        while len(self._failed) > 4 * KEPT:
            self._failed.popitem(last=False)

    def state(self, version: str, served: str) -> tuple[str, str]:
        """The repository index's state of a version, and the reason when it is not READY."""
        if version == served:
            return "READY", ""
        if version in self._loaded:
            return "READY", ""
        if version in self._failed:
            return "UNAVAILABLE", f"it {self._failed[version]}"
        return "UNAVAILABLE", "not loaded: a request that names this version loads it"
