"""Model versions other than the served one: listed from the bucket, loaded on first use.

The unversioned routes serve what the pointer names (``cache``). A route that names a version
gets that version's snapshot from here: read and sha256-verified like the served one
(:func:`~milkprice.predict.snapshot.load_version`) the first time it is asked for, then kept
among at most :data:`KEPT` others, the least recently used dropped first, so old versions
cannot fill the memory. A version that cannot be loaded is remembered (as few) with why.
The list of versions is read from the bucket at most once per ``reload_seconds``, so a request
for an unknown version costs no more than a known one; a version promoted since the last
listing may answer 404 for that long, as the pointer's own check may lag.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from milkprice import contract
from milkprice import settings as settings_module
from milkprice.errors import LoadError, MilkPriceError, NotFound, NotReady
from milkprice.predict.snapshot import Loaded, load_version

log = logging.getLogger("milkprice.predict")

KEPT = 3  # versions other than the served one kept loaded at once
NAMED = 10  # versions a 404 for an unknown one names


class Versions:
    """The bucket's versions, and the snapshots of those asked for by name."""

    def __init__(self, settings: settings_module.Settings) -> None:
        self.settings = settings
        self.interval = max(0.0, float(settings.reload_seconds))
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self._failed: OrderedDict[str, str] = OrderedDict()
        self._names: tuple[str, ...] = ()
        self._listed = -float("inf")
        self._lock = threading.Lock()

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

    def _relist(self, retry_after: int) -> None:
        try:
            self._list()
        except MilkPriceError as exc:
            self._listed = time.monotonic()
            failed = f"listing the model versions failed: {exc.message}"
            raise NotReady(failed, retry_after) from None

    def get(self, version: str, served: Loaded, retry_after: int) -> Loaded:
        """The snapshot of ``version``; 404 naming the known ones if the bucket has none,
        503 if it cannot be loaded as it is in the bucket."""
        if version == served.version:
            return served
        with self._lock:
            found = self._loaded.get(version)
            if found is not None:
                self._loaded.move_to_end(version)
                return found
            if version not in self._names and time.monotonic() - self._listed >= self.interval:
                self._relist(retry_after)  # a version promoted since the last listing
            if version not in self._names:
                raise self._unknown(version, served.version)
            if version in self._failed:
                raise NotReady(f"model version {version} {self._failed[version]}", retry_after)
            return self._load(version, retry_after)

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

    def _load(self, version: str, retry_after: int) -> Loaded:
        """Load ``version`` (the lock held), keep it, and drop the least recently used."""
        try:
            loaded = load_version(self.settings, version)
        except LoadError as exc:
            reason = f"cannot be loaded: {exc.message}"
            self._remember_failure(version, reason)
            raise NotReady(f"model version {version} {reason}", retry_after) from None
        except MilkPriceError as exc:  # storage: not remembered, the next request tries again
            failed = f"model version {version} could not be read: {exc.message}"
            raise NotReady(failed, retry_after) from None
        self._loaded[version] = loaded
        while len(self._loaded) > KEPT:
            dropped, _ = self._loaded.popitem(last=False)
            log.info("dropped model version %s from memory", dropped, extra={"version": dropped})
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
